"""``llamabot doctor``: one line per check of what the bot needs, and what to do if not."""

from __future__ import annotations

import asyncio
import getpass
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llamabot.config import Config, ConfigError, load_config, resolve_storage_url
from llamabot.errors import StartupError
from llamabot.llm.base import ChatMessage, ChatModel, GenerationOptions
from llamabot.llm.errors import ModelError, ReplyCut

if TYPE_CHECKING:
    from llamabot.tools import ToolRegistry

# A doctor's generation: a few tokens, so a backend that loads but cannot answer shows.
PROBE_TOKENS = 8
PROBE_TIMEOUT_S = 60.0


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
    from llamabot.plugin_loader import load_plugins

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
        registry: ToolRegistry | None = None  # the plugins' tools, loaded once if needed
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
                        f"{model.install_hint(persona.model)}",
                    )
                )
            else:
                served = model.served_model(persona.model)
                also = f" (answered by {served})" if served != persona.model else ""
                checks.append(
                    Check(f"persona {persona_name}", True, f"model {persona.model}{also}")
                )
            if persona.tools and health.ok and not lacking:
                if registry is None:
                    registry = load_plugins(config, path.parent).tools
                checks.append(
                    await _tools(model, persona_name, persona.model, persona.tools, registry)
                )
        if health.ok:
            checks.append(await _generation(model, config))
        return checks
    finally:
        await model.aclose()


async def _generation(model: ChatModel, config: Config) -> Check:
    """Ask the default persona's model for a few tokens, within a time limit."""
    persona = config.personas[config.bot.default_persona]
    served = model.served_model(persona.model)
    messages = [ChatMessage("system", persona.prompt), ChatMessage("user", "Say hello.")]
    options = GenerationOptions(num_predict=PROBE_TOKENS, temperature=0.0, seed=1)
    started = time.monotonic()
    pieces: list[str] = []
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            async for delta in model.stream_chat(persona.model, messages, options):
                if isinstance(delta, str):
                    pieces.append(delta)
    except ReplyCut:
        pass  # the probe asks for a few tokens only
    except TimeoutError:
        return Check(
            "generation",
            False,
            f"{served} gave no answer within {PROBE_TIMEOUT_S:g} s; check the model server "
            "or, embedded, [llm.embedded] n_ctx and threads",
        )
    except ModelError as exc:
        return Check("generation", False, f"{served} could not answer: {exc}")
    if not "".join(pieces).strip():
        return Check("generation", False, f"{served} answered with nothing; try another model")
    elapsed = time.monotonic() - started
    return Check("generation", True, f"{served} answered {len(pieces)} piece(s) in {elapsed:.1f} s")


async def _tools(
    model: ChatModel, persona: str, model_name: str, wanted: list[str], registry: ToolRegistry
) -> Check:
    """Whether the persona's tools exist and its model can call them."""
    name = f"persona {persona} tools"
    unknown = registry.missing(wanted)
    if unknown:
        return Check(
            name,
            False,
            f"no loaded plugin offers {', '.join(unknown)}; the tools on offer: "
            f"{', '.join(registry.names()) or 'none'}",
        )
    if not await model.supports_tools(model_name):
        return Check(
            name,
            False,
            f"model {model_name} cannot call tools, so none are offered; choose a model "
            "whose capabilities list tools (`ollama show MODEL`)",
        )
    return Check(name, True, ", ".join(wanted))


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


def _admins(config: Config) -> Check:
    """Who may use admin commands; how to become one when nobody may."""
    if config.bot.admins:
        return Check("admins", True, ", ".join(config.bot.admins))
    return Check(
        "admins",
        True,
        "none, so nobody may use admin commands; to be one in `llamabot chat`, add "
        f'"console:{getpass.getuser()}" to [bot] admins',
    )


async def run_checks(path: Path) -> list[Check]:
    """Every check, in the order the bot starts its parts."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        return [Check("config", False, "; ".join(exc.problems))]
    checks = [Check("config", True, f"{path} is valid"), _admins(config)]
    checks.append(await _database(config, path))
    checks += await _backend(config, path)
    checks += _tokens(config)
    checks += await _mcp(config, path)
    return checks


async def _mcp(config: Config, path: Path) -> list[Check]:
    """Connect to each enabled MCP server once: its state, protocol and tools."""
    if not any(server.enabled for server in config.mcp.servers.values()):
        return []
    from llamabot.mcp_servers import probe

    checks = [
        Check(f"mcp server {name}", True, "disabled (enabled = false)")
        for name, server in sorted(config.mcp.servers.items())
        if not server.enabled
    ]
    for status in await probe(config.mcp, path.parent):
        if status.state == "up":
            detail = (
                f"up over {status.transport}, protocol {status.protocol}"
                f"{', ' + status.server if status.server else ''}; tools: "
                f"{', '.join(status.tools) or 'none'}"
            )
            checks.append(Check(f"mcp server {status.name}", True, detail))
        else:
            checks.append(
                Check(
                    f"mcp server {status.name}",
                    False,
                    f"{status.state}: {status.detail or 'no answer yet'}",
                )
            )
    return sorted(checks, key=lambda check: check.name)
