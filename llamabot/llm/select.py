"""``[llm] backend``: which model backend the bot uses, chosen once at start."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from llamabot.config import LlmSection
from llamabot.llm.base import ChatModel

log = logging.getLogger(__name__)


async def select_model(
    section: LlmSection, *, config_dir: Path | None = None, adapters: Sequence[str] = ()
) -> ChatModel:
    """Ollama when asked for, or (``auto``) when it answers within a second; else llama.cpp.

    ``openai`` is never guessed: the servers it names are used as configured.
    ``adapters`` are the personas' LoRA adapters, which the embedded model loads.
    """
    if section.backend == "openai":
        from llamabot.llm.openai_compat import OpenAICompatModel

        model = OpenAICompatModel(
            section.openai,
            first_token_timeout=section.first_token_timeout,
            idle_timeout=section.idle_timeout,
        )
        log.info(
            'using the OpenAI-compatible server(s) at %s ([llm] backend = "openai")',
            ", ".join(model.base_urls),
        )
        return model
    if section.backend in ("ollama", "auto"):
        from llamabot.llm.ollama import OllamaModel, ollama_answers

        hosts = section.ollama.all_hosts
        if section.backend == "ollama":
            log.info('using Ollama at %s ([llm] backend = "ollama")', ", ".join(hosts))
            return OllamaModel(
                section.ollama,
                first_token_timeout=section.first_token_timeout,
                idle_timeout=section.idle_timeout,
            )
        for host in hosts:
            if await ollama_answers(host, timeout=1.0):
                log.info('using Ollama at %s: it answered ([llm] backend = "auto")', host)
                return OllamaModel(
                    section.ollama,
                    first_token_timeout=section.first_token_timeout,
                    idle_timeout=section.idle_timeout,
                )
        log.info(
            "using embedded llama.cpp: no Ollama answered at %s within 1 s "
            '([llm] backend = "auto")',
            ", ".join(hosts),
        )
    from llamabot.llm.llamacpp import EmbeddedModel

    return await EmbeddedModel.load(
        section.embedded,
        config_dir=config_dir,
        first_token_timeout=section.first_token_timeout,
        idle_timeout=section.idle_timeout,
        adapters=adapters,
    )
