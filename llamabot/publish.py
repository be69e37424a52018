"""``llamabot publish PERSONA``: a persona as an Ollama model of its own.

The persona's base model, LoRA adapter (uploaded as a blob), prompt and sampling options
become one model through Ollama's create API, so that Ollama serves what the embedded
backend applies per reply. What was published is remembered (by a hash, in the bot's
database): publishing an unchanged persona again does nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ollama

from llamabot.config import Config, Persona
from llamabot.errors import StartupError
from llamabot.llm.llamacpp import adapter_file
from llamabot.storage.state import StateStore

_PARAMETERS = ("temperature", "top_p", "top_k", "repeat_penalty", "num_ctx", "num_predict", "seed")


@dataclass(frozen=True)
class Published:
    """Where the persona now lives, and whether this run changed it."""

    name: str
    host: str
    changed: bool


def parameters_of(persona: Persona) -> dict[str, Any]:
    """The persona's sampling options as Ollama model parameters."""
    chosen: dict[str, Any] = {
        key: getattr(persona, key) for key in _PARAMETERS if getattr(persona, key) is not None
    }
    if persona.stop:
        chosen["stop"] = list(persona.stop)
    return chosen


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


async def publish(
    config: Config,
    config_dir: Path,
    persona_name: str,
    state: StateStore,
    *,
    name: str | None = None,
    host: str | None = None,
) -> Published:
    """Create (or leave as it is) the Ollama model for ``persona_name``."""
    persona = config.personas.get(persona_name)
    if persona is None:
        known = ", ".join(sorted(config.personas))
        raise StartupError(f"there is no persona {persona_name!r}; bot.toml defines: {known}")
    host = host or config.llm.ollama.all_hosts[0]
    name = name or f"llamabot-{persona_name}"
    adapter = adapter_file(persona.adapter, config_dir) if persona.adapter else None
    parameters = parameters_of(persona)
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "from": persona.model,
                "adapter": _sha256(adapter) if adapter else None,
                "system": persona.prompt,
                "parameters": parameters,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    key = f"ollama.published:{host}:{name}"
    client = ollama.AsyncClient(host=host)
    try:
        if await state.get(key) == fingerprint and await _exists(client, name):
            return Published(name, host, changed=False)
        adapters = None
        if adapter is not None:
            adapters = {adapter.name: await client.create_blob(adapter)}
        await client.create(
            model=name,
            from_=persona.model,
            adapters=adapters,
            system=persona.prompt,
            parameters=parameters or None,
            stream=False,
        )
    except ollama.ResponseError as exc:
        hint = f"; run `ollama pull {persona.model}` there first" if exc.status_code == 404 else ""
        raise StartupError(f"Ollama at {host} could not create {name}: {exc.error}{hint}") from None
    except (httpx.HTTPError, OSError) as exc:
        raise StartupError(
            f"cannot reach Ollama at {host} ({exc}); start it with `ollama serve`, or pass --host"
        ) from None
    finally:
        await client.close()  # type: ignore[no-untyped-call]
    await state.set(key, fingerprint)
    return Published(name, host, changed=True)


async def _exists(client: ollama.AsyncClient, name: str) -> bool:
    try:
        await client.show(name)
    except ollama.ResponseError:
        return False
    return True
