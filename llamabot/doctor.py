"""``llamabot doctor``: one line per check of what the bot needs, and what to do if not."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from llamabot.config import Config, ConfigError, load_config, resolve_storage_url
from llamabot.errors import StartupError


@dataclass(frozen=True)
class Check:
    """One check: what was checked, whether it passed, and the detail or the fix."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


async def _database(config: Config, path: Path) -> Check:
    from llamabot.storage.engine import create_engine, current_revision, head_revision

    url = resolve_storage_url(config.storage.url, path)
    engine = create_engine(url)
    try:
        current = await current_revision(engine)
    except Exception as exc:
        return Check("database", False, f"cannot open {url}: {exc}; check [storage] url")
    finally:
        await engine.dispose()
    head = head_revision()
    if current == head:
        return Check("database", True, f"{url} at revision {current}")
    return Check(
        "database",
        True,
        f"{url} at revision {current or 'none'}; `llamabot run` upgrades it to {head}",
    )


async def _backend(config: Config, path: Path) -> list[Check]:
    from llamabot.llm.select import select_model

    try:
        model = await select_model(config.llm, config_dir=path.parent)
    except StartupError as exc:
        return [Check("model backend", False, str(exc))]
    try:
        checks = [
            Check("model backend", True, f"{model.name} ([llm] backend = {config.llm.backend})")
        ]
        health = await model.health()
        for name, ok, detail in health.checks or ((model.name, health.ok, health.detail),):
            checks.append(Check(name, ok, detail))
        personas = sorted(config.personas.items())
        missing = await model.missing_models(sorted({p.model for _, p in personas}))
        for persona_name, persona in personas:
            lacking = missing.get(persona.model)
            if not health.ok:
                checks.append(
                    Check(
                        f"persona {persona_name}",
                        False,
                        f"model {persona.model} not checked: no model server answered",
                    )
                )
            elif lacking:
                checks.append(
                    Check(
                        f"persona {persona_name}",
                        False,
                        f"model {persona.model} missing on {', '.join(lacking)}; "
                        f"run: ollama pull {persona.model}",
                    )
                )
            else:
                checks.append(Check(f"persona {persona_name}", True, f"model {persona.model}"))
        return checks
    finally:
        await model.aclose()


def _tokens(config: Config) -> list[Check]:
    checks = []
    for platform, section in (("discord", config.discord), ("telegram", config.telegram)):
        if not section.enabled:
            checks.append(Check(f"{platform} token", True, "platform disabled"))
        elif os.environ.get(section.token_env):
            checks.append(Check(f"{platform} token", True, f"${section.token_env} is set"))
        else:
            checks.append(
                Check(
                    f"{platform} token",
                    False,
                    f"${section.token_env} is not set; export it before `llamabot run`",
                )
            )
    return checks


async def run_checks(path: Path) -> list[Check]:
    """Every check, in the order the bot starts its parts."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        return [Check("config", False, "; ".join(exc.problems))]
    checks = [Check("config", True, f"{path} is valid")]
    checks.append(await _database(config, path))
    checks += await _backend(config, path)
    checks += _tokens(config)
    return checks
