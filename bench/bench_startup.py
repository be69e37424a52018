"""``llamabot chat``: from process start to the first prompt, without the model load.

Runs the real CLI in subprocesses on a bot.toml whose backend is the embedded model:

- timed start: a small driver process imports ``llamabot.cli``, puts stopwatches on the
  phases of a start (imports, migration, model load, plugins, scheduler) and on the moment
  the console adapter starts reading input (where a terminal shows the first prompt), then
  runs ``llamabot.cli.main(["chat", ...])`` with stdin at end of input. The clock starts in
  the parent just before the process is spawned, so interpreter start-up counts.
- plain CLI: the ``llamabot`` console script with empty stdin, process start -> exit (a
  whole lifespan: migrate, load, shut down), as a cross-check.
- imports: ``python -X importtime`` over the same chat start, the biggest imports listed.

The first start migrates an empty database; the others find it at head.

    PYTHONPATH=. python bench/bench_startup.py [--runs 5]

Prints one table and writes bench/bench_startup.json. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import measure

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable

TOML = """
[bot]
name = "Bench"
[llm]
backend = "embedded"
[storage]
url = "sqlite+aiosqlite:///bench.db"
[plugins]
dirs = []
"""

# Runs inside the measured process. It only wraps functions with stopwatches; the start
# itself is llamabot.cli.main, unchanged.
DRIVER = r"""
import json, os, sys, time
marks = {"driver": time.monotonic()}
phases = {}

def timed(owner, name, label):
    original = getattr(owner, name)
    async def wrapper(*args, **kwargs):
        started = time.monotonic()
        try:
            return await original(*args, **kwargs)
        finally:
            phases[label] = phases.get(label, 0.0) + time.monotonic() - started
    setattr(owner, name, wrapper)

import llamabot.cli
marks["cli_imported"] = time.monotonic()
import llamabot.app, llamabot.adapters.console, llamabot.llm.llamacpp
marks["app_imported"] = time.monotonic()

timed(llamabot.app, "upgrade", "migrate")
if hasattr(llamabot.app.Bot, "_start_scheduler"):
    timed(llamabot.app.Bot, "_start_scheduler", "scheduler")

EmbeddedModel = llamabot.llm.llamacpp.EmbeddedModel
original_load = EmbeddedModel.load.__func__
async def load(cls, *args, **kwargs):
    started = time.monotonic()
    import llama_cpp  # what load() imports first; timed apart from the worker start
    imported = time.monotonic()
    try:
        return await original_load(cls, *args, **kwargs)
    finally:
        phases["import llama_cpp"] = imported - started
        phases["build Llama()"] = time.monotonic() - imported
EmbeddedModel.load = classmethod(load)

Console = llamabot.adapters.console.ConsoleAdapter
original_chat = Console.chat
async def chat(self, *args, **kwargs):
    marks["ready"] = time.monotonic()
    return await original_chat(self, *args, **kwargs)
Console.chat = chat

def report():
    marks["exit"] = time.monotonic()
    with open(os.environ["LLAMABOT_BENCH_OUT"], "w") as out:
        json.dump({"marks": marks, "phases": phases}, out)

code = llamabot.cli.main(["chat", "--config", sys.argv[1]])
report()
sys.exit(code)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


def run_in(
    config: Path, argv: list[str], env: dict[str, str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the folder of ``config``, stdin at end of input, output kept.

    With ``check``, a failed start ends the benchmark with the process's stderr.
    """
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=config.parent,
        check=False,
    )
    if check and done.returncode != 0:
        raise SystemExit(f"llamabot chat failed ({done.returncode}):\n{done.stderr}")
    return done


def timed_start(config: Path) -> dict[str, Any]:
    """One driver run: seconds from spawn to each mark, and the phase durations."""
    out = config.parent / "marks.json"
    env = _env() | {"LLAMABOT_BENCH_OUT": str(out)}
    spawned = time.monotonic()
    run_in(config, [PYTHON, "-c", DRIVER, str(config)], env)
    ended = time.monotonic()
    data = json.loads(out.read_text())
    marks = {name: at - spawned for name, at in data["marks"].items()}
    marks["process_exit"] = ended - spawned
    return {"marks": marks, "phases": data["phases"]}


def plain_cli(config: Path) -> float:
    """The ``llamabot`` console script with empty stdin: spawn -> exit, in seconds."""
    script = shutil.which("llamabot", path=str(Path(PYTHON).parent)) or "llamabot"
    started = time.monotonic()
    run_in(config, [script, "chat", "--config", str(config)], _env())
    return time.monotonic() - started


def bare_python() -> float:
    """Interpreter start-up alone (``python -c pass``), for scale."""
    started = time.monotonic()
    subprocess.run([PYTHON, "-c", "pass"], check=True, env=_env())
    return time.monotonic() - started


def parse_importtime(stderr: str) -> list[tuple[str, int, int, int]]:
    """(module, self us, cumulative us, depth) for each line of ``-X importtime``."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        # "import time:       123 |        456 |   pkg.mod" (two spaces of indent a level)
        first, cumulative, name = line.split("|", 2)
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append((name.strip(), int(first.split(":")[1]), int(cumulative), depth))
    return rows


def import_profile(config: Path, statement: str | None) -> dict[str, Any]:
    """``-X importtime`` over the chat start (or a statement); the biggest imports."""
    argv = [PYTHON, "-X", "importtime"]
    env = _env()
    if statement is None:
        argv += ["-c", DRIVER, str(config)]
        env["LLAMABOT_BENCH_OUT"] = str(config.parent / "marks-importtime.json")
    else:
        argv += ["-c", statement]
    rows = parse_importtime(run_in(config, argv, env, check=False).stderr)
    by_package: dict[str, int] = {}
    for name, self_us, _, _ in rows:
        top = name.split(".")[0]
        by_package[top] = by_package.get(top, 0) + self_us
    # Third-party packages as first imported (cumulative: their submodules and their
    # own dependencies, so nested entries overlap). llamabot's own total covers it all.
    packages = [
        (name, cumulative)
        for name, _, cumulative, _ in rows
        if "." not in name and name != "llamabot"
    ]
    packages.sort(key=lambda item: -item[1])
    llamabot_modules = [
        (name, cumulative) for name, _, cumulative, _ in rows if name.startswith("llamabot.")
    ]
    llamabot_modules.sort(key=lambda item: -item[1])
    return {
        "total_ms": sum(self_us for _, self_us, _, _ in rows) / 1000,
        "modules": len(rows),
        "top_cumulative_ms": [(name, us / 1000) for name, us in packages[:10]],
        "llamabot_modules_cumulative_ms": [(name, us / 1000) for name, us in llamabot_modules[:10]],
        "top_self_by_package_ms": [
            (name, us / 1000) for name, us in sorted(by_package.items(), key=lambda i: -i[1])[:10]
        ],
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def time_starts(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="llamabot-bench-") as folder:
        config = Path(folder) / "bot.toml"
        config.write_text(TOML)
        first = timed_start(config)  # empty database: migrates to head
        starts = [timed_start(config) for _ in range(runs)]
        plain = [plain_cli(config) for _ in range(runs)]
        python = [bare_python() for _ in range(3)]
        chat_imports = import_profile(config, None)
        cli_imports = import_profile(config, "import llamabot.cli")

    def m(key: str, where: str = "marks") -> float:
        return median([run[where].get(key, 0.0) for run in starts])

    load = [run["phases"]["import llama_cpp"] + run["phases"]["build Llama()"] for run in starts]
    ready = [run["marks"]["ready"] for run in starts]
    return {
        "runs": runs,
        "python_startup_s": median(python),
        "first_start_empty_db": first,
        "median": {
            "to_driver_s": m("driver"),
            "to_cli_imported_s": m("cli_imported"),
            "to_app_imported_s": m("app_imported"),
            "to_ready_s": median(ready),
            "to_exit_s": m("process_exit"),
            "migrate_s": m("migrate", "phases"),
            "scheduler_s": m("scheduler", "phases"),
            "import_llama_cpp_s": m("import llama_cpp", "phases"),
            "build_llama_s": m("build Llama()", "phases"),
            "model_load_s": median(load),
            "ready_minus_model_load_s": median([r - x for r, x in zip(ready, load, strict=True)]),
            "ready_minus_build_only_s": median(
                [r["marks"]["ready"] - r["phases"]["build Llama()"] for r in starts]
            ),
            "plain_cli_start_to_exit_s": median(plain),
        },
        "starts": starts,
        "plain_cli_s": plain,
        "imports_chat": chat_imports,
        "imports_cli": cli_imports,
    }


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    med = r["median"]
    load = f"load avg {m['load_average_at_start'][0]:.2f}"
    what = "llamabot chat start-up, embedded backend"
    print(f"{measure.headline(what, m, load)}; medians of {r['runs']} starts")
    print()
    header = f"{'from process start (s)':<52}{'at':>8}{'phase':>8}"
    print(header)
    print("-" * len(header))
    rows = [
        ("interpreter up (python -c pass alone)", None, r["python_startup_s"]),
        ("driver running (interpreter start-up)", med["to_driver_s"], med["to_driver_s"]),
        (
            "import llamabot.cli",
            med["to_cli_imported_s"],
            med["to_cli_imported_s"] - med["to_driver_s"],
        ),
        (
            "import llamabot.app, adapters.console, llm.llamacpp",
            med["to_app_imported_s"],
            med["to_app_imported_s"] - med["to_cli_imported_s"],
        ),
        ("  migrate (database at head)", None, med["migrate_s"]),
        ("  import llama_cpp (model load, part 1)", None, med["import_llama_cpp_s"]),
        ("  start worker + load vocabulary (model load, part 2)", None, med["build_llama_s"]),
        ("  scheduler start", None, med["scheduler_s"]),
        ("ready for input (first prompt)", med["to_ready_s"], None),
        ("process exit at end of input", med["to_exit_s"], med["to_exit_s"] - med["to_ready_s"]),
        (
            "plain `llamabot chat` < /dev/null, start -> exit",
            med["plain_cli_start_to_exit_s"],
            None,
        ),
    ]
    for label, at, phase in rows:
        at_s = f"{at:8.3f}" if at is not None else " " * 8
        phase_s = f"{phase:8.3f}" if phase is not None else ""
        print(f"{label:<52}{at_s}{phase_s}")
    first = r["first_start_empty_db"]
    print(
        f"first start on an empty database: ready at {first['marks']['ready']:.3f} s, "
        f"migration {first['phases'].get('migrate', 0):.3f} s"
    )
    print()
    print(
        f"start to first prompt minus model load (import llama_cpp + build): "
        f"{med['ready_minus_model_load_s']:.3f} s; minus the build only: "
        f"{med['ready_minus_build_only_s']:.3f} s — target < 1.5 s: "
        f"{'met' if med['ready_minus_model_load_s'] < 1.5 else 'MISSED'}"
    )
    chat = r["imports_chat"]
    print()
    print(
        f"-X importtime of the chat start: {chat['modules']} modules, "
        f"{chat['total_ms']:.0f} ms (`import llamabot.cli` alone: "
        f"{r['imports_cli']['total_ms']:.0f} ms, {r['imports_cli']['modules']} modules)"
    )
    print(f"{'biggest packages (cumulative ms)':<40}{'self time by package (ms)':<32}")
    for (name, ms), (package, own) in zip(
        chat["top_cumulative_ms"], chat["top_self_by_package_ms"], strict=False
    ):
        print(f"  {name:<28}{ms:>8.0f}    {package:<22}{own:>8.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    info = measure.machine()
    results = time_starts(args.runs)
    results["machine"] = info
    results["targets"] = {"ready_minus_model_load_s": 1.5}
    print_table(results)
    measure.save(results, HERE / "bench_startup.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
