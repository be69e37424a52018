"""The admin's bot.toml as validated pydantic models; loading and persona resolution.

Defaults live here, once. Every error names the file, line and key, and says what to do.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from llamabot.events import ChannelRef
from llamabot.llm.base import GenerationOptions
from llamabot.tomlpos import locate_key
from llamabot.tomlsyntax import describe_syntax_error


def _as_text(value: object) -> object:
    # Discord and Telegram ids are numbers; admins write them either way.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Id = Annotated[str, BeforeValidator(_as_text)]
Platform = Literal["console", "discord", "telegram"]


class Section(BaseModel):
    """A table of bot.toml: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BotSection(Section):
    name: str = "Llama"
    default_persona: str = "assistant"
    command_prefix: str = Field(default="/", min_length=1)
    admins: list[Id] = Field(default_factory=list)
    timezone: str = "UTC"
    max_message_chars: int = Field(default=16_000, gt=0)
    # At stop, how long replies already being written may take before they are cut.
    stop_grace_s: float = Field(default=10.0, ge=0)


class OllamaSection(Section):
    host: str = "http://127.0.0.1:11434"
    hosts: list[str] = Field(default_factory=list)
    keep_alive: str = "5m"
    retry_after_s: float = Field(default=15.0, ge=0)
    max_num_ctx: int = Field(default=8192, gt=0)

    @property
    def all_hosts(self) -> list[str]:
        """``hosts`` when given, else the single ``host``."""
        return list(self.hosts) or [self.host]


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(
            f"{value!r} is not an http:// or https:// URL; write the server's address, "
            'e.g. "http://127.0.0.1:8080/v1"'
        )
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class OpenAISection(Section):
    """``[llm.openai]``: servers speaking the OpenAI chat API (llama-server, vLLM, ...)."""

    base_url: HttpUrl | None = None
    base_urls: list[HttpUrl] = Field(default_factory=list)
    # Empty by default so a key exported for another service never reaches these servers;
    # servers started without authentication need none.
    api_key_env: str = ""
    retry_after_s: float = Field(default=15.0, ge=0)

    @property
    def all_base_urls(self) -> list[str]:
        """``base_urls`` when given, else the single ``base_url`` (empty when neither)."""
        if self.base_urls:
            return list(self.base_urls)
        return [self.base_url] if self.base_url else []


class EmbeddedSection(Section):
    model_path: str = ""
    # "auto": plain weights on CPUs with AMX, whose llama.cpp kernels crash (weight_buffers.py).
    weight_buffers: Literal["auto", "extra", "plain"] = "auto"
    n_ctx: int = Field(default=4096, gt=0)
    threads: int = Field(default=0, ge=0)
    instances: int = Field(default=1, ge=1)
    max_tokens: int = Field(default=512, gt=0)


class LlmSection(Section):
    backend: Literal["auto", "ollama", "embedded", "openai"] = "auto"
    max_concurrency: int = Field(default=2, ge=1)
    first_token_timeout: float = Field(default=120.0, gt=0)
    idle_timeout: float = Field(default=60.0, gt=0)
    # Pictures are shrunk to fit this many pixels a side before a vision model sees them
    # (Llama 3.2 Vision works on tiles of 560: two a side).
    image_max_side: int = Field(default=1120, ge=64)
    # Fetching one picture from the platform may take this long.
    image_fetch_timeout_s: float = Field(default=20.0, gt=0)
    ollama: OllamaSection = Field(default_factory=OllamaSection)
    embedded: EmbeddedSection = Field(default_factory=EmbeddedSection)
    openai: OpenAISection = Field(default_factory=OpenAISection)

    @model_validator(mode="after")
    def _openai_has_a_server(self) -> LlmSection:
        if self.backend == "openai" and not self.openai.all_base_urls:
            raise ValueError(
                '[llm] backend = "openai" needs a server: add [llm.openai] with '
                'base_url = "http://HOST:PORT/v1" (or base_urls = [...] for several)'
            )
        return self


class StorageSection(Section):
    url: str = "sqlite+aiosqlite:///llamabot.db"


class HistorySection(Section):
    max_messages: int = Field(default=40, ge=1)
    max_tokens: int = Field(default=3000, ge=1)
    keep_days: int = Field(default=0, ge=0)
    # Pictures: those of the newest this many turns reach a vision model (older ones, as
    # a note); with store_images the bot keeps the (shrunk) pictures itself instead of
    # fetching them from the platform again.
    image_turns: int = Field(default=1, ge=1)
    store_images: bool = False


def _duration(value: str) -> str:
    from llamabot.durations import is_duration

    if not is_duration(value):
        raise ValueError(f"{value!r} is not a duration like 30m, 1h or 2h30m")
    return value


class PersonaMemory(Section):
    """``[personas.NAME.memory]``: what the bot keeps beyond the window, for this persona."""

    # Rolling summaries of the turns that leave the window, placed after the persona
    # prompt; unset: on when the model's context is under 16k tokens.
    summaries: bool | None = None
    summary_model: str | None = None  # the model that writes them (default: the persona's)
    # Short facts about each person ("is called Sam"), kept per person and persona:
    # added by the model's `remember` tool, or taken from a conversation idle for
    # `idle_after`. Shown with `/memory`, erased with `/memory forget`.
    facts: bool = False
    idle_after: Annotated[str, AfterValidator(_duration)] = "1h"
    max_facts: int = Field(default=50, ge=1, le=1000)
    # Facts learned in a DM are used in groups too (off: they stay in DMs).
    share_dm_memory: bool = False


class Persona(Section):
    prompt: str
    model: str = "llama3.2"
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    num_ctx: int | None = Field(default=None, gt=0)
    num_predict: int | None = None
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    keep_alive: str | None = None
    # The tools the model may call when answering as this persona: a plugin's tool by
    # name, "mcp:SERVER" (every tool of an MCP server) or "mcp:SERVER/TOOL"; none by
    # default. A model without tool support is offered none.
    tools: list[str] = Field(default_factory=list)
    # A LoRA adapter (GGUF) for this persona, relative to bot.toml; on the embedded
    # backend it is applied to the one loaded base model for this persona's replies.
    adapter: str | None = None
    adapter_scale: float = Field(default=1.0, ge=0)
    memory: PersonaMemory = Field(default_factory=PersonaMemory)

    def options(self) -> GenerationOptions:
        """The persona's sampling options for the model backend."""
        return GenerationOptions(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repeat_penalty=self.repeat_penalty,
            num_ctx=self.num_ctx,
            num_predict=self.num_predict,
            seed=self.seed,
            stop=tuple(self.stop),
            keep_alive=self.keep_alive,
            adapter=self.adapter,
            adapter_scale=self.adapter_scale,
        )


Permission = Literal["everyone", "moderator", "admin"]


class LimitsSection(Section):
    """``[limits]``: flood control, so one person cannot take the bot from everyone else.

    Admins are exempt. A binding may override any of these in its own ``limits`` table.
    """

    # A token bucket per person: ``burst`` messages at once, then one every
    # 60 / messages_per_minute seconds.
    messages_per_minute: float = Field(default=10.0, gt=0)
    burst: int = Field(default=5, ge=1)
    # Messages of one person waiting in one conversation, the one being answered included.
    max_queued_per_person: int = Field(default=3, ge=1)
    max_queued_per_conversation: int = Field(default=30, ge=1)
    # Conversations in which one person has messages waiting at the same time (threads,
    # topics, DMs): one person cannot fill every model slot.
    max_conversations_per_person: int = Field(default=2, ge=1)
    # The least time between two runs of one command by one person (a command may ask
    # for more with its own cooldown_s); 0: only the message rate above applies.
    command_cooldown_s: float = Field(default=0.0, ge=0)
    # Pictures sent to the bot: the largest file taken, and how many in one message.
    max_image_bytes: int = Field(default=10_000_000, ge=1)
    max_images_per_message: int = Field(default=4, ge=0)


class AccessSection(Section):
    """``[access]``: who may talk to the bot, and where. Admins always may.

    Users are ``platform:id``, ``platform:@username``, or an id / ``@username`` on any
    platform. Channels are chat/channel ids (``platform:id`` also works). Empty allow
    lists allow everyone (everywhere).
    """

    allowed_users: list[Id] = Field(default_factory=list)
    blocked_users: list[Id] = Field(default_factory=list)
    # Discord role ids or names; a member needs one of them (in servers; DMs have no roles).
    allowed_roles: list[Id] = Field(default_factory=list)
    allowed_channels: list[Id] = Field(default_factory=list)
    blocked_channels: list[Id] = Field(default_factory=list)
    dms: bool = True
    # Who may run a command, overriding what its plugin declares: reset = "everyone".
    commands: dict[str, Permission] = Field(default_factory=dict)


class Binding(Section):
    platform: Platform
    channel: Id = "*"
    guild: Id | None = None
    persona: str
    respond: Literal["always", "mention"] = "mention"
    # Only the keys given here replace the top-level [limits] / [access] ones.
    limits: LimitsSection | None = None
    access: AccessSection | None = None
    # false: no summaries and no facts about people in this chat, whatever the persona.
    memory: bool = True


class DiscordSection(Section):
    enabled: bool = False
    token_env: str = "DISCORD_TOKEN"
    api_base: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg/"
    proxy: str = ""
    allow_dms: bool = True
    ignore_bots: bool = True
    edit_interval: float = Field(default=1.0, gt=0)
    # "is typing" only when the model has not started answering after this long.
    typing_after_s: float = Field(default=0.5, ge=0)
    # How long a reply that cannot reach Discord is retried before it is given up.
    delivery_retry_s: float = Field(default=60.0, ge=0)
    # Sharding: this process runs shards `shard_ids` of `shard_count` (all when unset);
    # Discord routes a guild's events to shard (guild_id >> 22) % shard_count, DMs to 0.
    shard_count: int | None = Field(default=None, ge=1)
    shard_ids: list[int] | None = None
    # Commands as Discord slash commands, as text commands (/help typed in a message),
    # or both. Slash commands are registered at start when they changed.
    commands: Literal["slash", "prefix", "both"] = "both"

    @model_validator(mode="after")
    def _shards_fit(self) -> DiscordSection:
        if self.shard_ids is not None:
            if self.shard_count is None:
                raise ValueError("[discord] shard_ids needs shard_count (how many in all)")
            wrong = [n for n in self.shard_ids if not 0 <= n < self.shard_count]
            if wrong or not self.shard_ids or len(set(self.shard_ids)) != len(self.shard_ids):
                raise ValueError(
                    f"[discord] shard_ids must be distinct numbers from 0 to "
                    f"{self.shard_count - 1} (shard_count = {self.shard_count})"
                )
        return self


class TelegramSection(Section):
    enabled: bool = False
    token_env: str = "TELEGRAM_TOKEN"
    base_url: str = "https://api.telegram.org/bot"
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str = ""
    listen: str = "127.0.0.1"
    port: int = Field(default=8443, gt=0, lt=65536)
    secret_token_env: str = "TELEGRAM_WEBHOOK_SECRET"
    allowed_users: list[Id] = Field(default_factory=list)
    edit_interval: float = Field(default=1.0, gt=0)
    # "typing…" only when the model has not started answering after this long.
    typing_after_s: float = Field(default=0.5, ge=0)
    # How long a reply that cannot reach Telegram is retried before it is given up.
    delivery_retry_s: float = Field(default=60.0, ge=0)
    # Messages and edits sent per second at most, all chats together (Telegram allows
    # about 30); 0 sends without waiting (a Bot API server without limits).
    max_messages_per_s: float = Field(default=30.0, ge=0)


class MetricsSection(Section):
    # host:port for Prometheus to scrape /metrics; "" serves none.
    listen: str = ""


class ToolsSection(Section):
    """``[tools]``: how the model's tool calls run (which tools: ``[personas.NAME] tools``)."""

    # Rounds of tool calls in one reply; after the last, the model must answer in words.
    max_rounds: int = Field(default=4, ge=1, le=32)
    # One call running longer is cancelled; the model is told it timed out.
    timeout_s: float = Field(default=15.0, gt=0)
    # The line shown while a tool runs ("🔧 time()"): removed once the answer comes
    # ("while_running"), left in the reply ("keep"), or never shown ("never").
    show_calls: Literal["while_running", "keep", "never"] = "while_running"


_MCP_NAME = re.compile(r"[a-zA-Z0-9_-]{1,32}")


def _mcp_name(name: str) -> str:
    if not _MCP_NAME.fullmatch(name):
        raise ValueError(
            f"an MCP server's name is 1-32 letters, digits, _ and - (not {name!r}); "
            "it prefixes the names of its tools"
        )
    return name


class WebUser(Section):
    """``[web.users.NAME]``: a login for the admin page (``llamabot web passwd NAME``)."""

    password_hash: str  # argon2, as `llamabot web passwd` writes it
    # A second factor: the base32 secret of an authenticator app (`passwd --totp`).
    totp_secret: str = ""
    # "viewer": sees the pages, changes nothing (and no transcripts unless allowed).
    role: Literal["admin", "viewer"] = "admin"


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class WebSection(Section):
    """``[web]``: the admin page in the browser."""

    # host:port it listens on ("" serves no page). Off this machine only with TLS, or
    # behind a reverse proxy that terminates it (trust_proxy).
    listen: str = "127.0.0.1:8780"
    tls_cert: str = ""  # PEM files, relative to bot.toml
    tls_key: str = ""
    trust_proxy: bool = False  # a proxy sets X-Forwarded-Proto / -For / -Host
    session_hours: float = Field(default=12.0, gt=0)
    viewers_see_transcripts: bool = False
    users: dict[str, WebUser] = Field(default_factory=dict)

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    @model_validator(mode="after")
    def _safe_to_expose(self) -> WebSection:
        if not self.listen:
            return self
        host, _, port = self.listen.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"listen = {self.listen!r} is not host:port, e.g. 127.0.0.1:8780")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("give both tls_cert and tls_key (PEM files), or neither")
        if not _is_loopback(host) and not self.tls_cert and not self.trust_proxy:
            raise ValueError(
                f"listen = {self.listen!r} reaches other machines: set tls_cert and tls_key, "
                "or trust_proxy = true behind a reverse proxy that terminates TLS, or listen "
                'on "127.0.0.1:8780"'
            )
        return self


class MemorySection(Section):
    """``[memory]``: the ``recall`` tool's search by meaning (per persona: its own
    ``[personas.NAME.memory]``)."""

    # An Ollama embedding model (e.g. "nomic-embed-text"): messages are embedded in the
    # background and `recall` finds them by meaning; "" finds them by words only.
    embed_model: str = ""
    embed_host: str = ""  # the Ollama server that embeds (default: [llm.ollama] host)


class McpServer(Section):
    """``[mcp.servers.NAME]``: one Model Context Protocol server whose tools personas may
    use (``tools = ["mcp:NAME"]``). Either ``command`` (a child process spoken to over
    stdio) or ``url`` (Streamable HTTP, or the older SSE transport)."""

    command: list[str] = Field(default_factory=list)
    # The only environment variables a stdio server gets, by name, taken from the bot's
    # own environment (besides the SDK's minimal PATH, HOME, USER, SHELL, TERM, LOGNAME).
    env: list[str] = Field(default_factory=list)
    cwd: str | None = None
    url: str = ""
    # HTTP header -> the environment variable holding its value (secrets stay out of
    # bot.toml), e.g. { Authorization = "MCP_TOKEN" }.
    headers_env: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True
    # Narrow the server for every persona: only these tools, or all but these.
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    # Offered only on an admin's turn (as is every tool the server marks destructive).
    confirm: list[str] = Field(default_factory=list)
    # Calls of these tools are logged without their arguments.
    sensitive: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if bool(self.command) == bool(self.url):
            raise ValueError(
                'give an MCP server either command = ["program", "arg", ...] (stdio) '
                'or url = "https://host/mcp" (HTTP), not both and not neither'
            )
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url {self.url!r} must start with http:// or https://")
        return self


class McpSection(Section):
    """``[mcp]``: the MCP servers and how their tools are called."""

    servers: dict[Annotated[str, AfterValidator(_mcp_name)], McpServer] = Field(
        default_factory=dict
    )
    # One call running longer is cancelled; the model reads that it timed out.
    call_timeout_s: float = Field(default=30.0, gt=0)
    # A longer result is cut here, with a visible marker saying how much was left out.
    max_result_chars: int = Field(default=8_000, ge=100)
    # A server not ready within this is retried in the background; the bot never waits.
    start_timeout_s: float = Field(default=10.0, gt=0)


class PluginsSection(BaseModel):
    """``[plugins]``; any other table under it is a plugin's own config slice."""

    model_config = ConfigDict(extra="allow", frozen=True)

    dirs: list[str] = Field(default_factory=lambda: ["plugins"])
    enabled: list[str] = Field(default_factory=list)
    disabled: list[str] = Field(default_factory=list)
    # A plugin's hook or command running longer than this is cancelled and logged.
    hook_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _slices_are_tables(self) -> PluginsSection:
        for name, value in (self.model_extra or {}).items():
            if not isinstance(value, dict):
                raise ValueError(
                    f"[plugins] {name} must be a table ([plugins.{name}]) holding that "
                    "plugin's settings"
                )
        return self

    def slice(self, plugin: str) -> dict[str, Any]:
        """The ``[plugins.<name>]`` table for one plugin (empty when absent)."""
        value = (self.model_extra or {}).get(plugin, {})
        return dict(value) if isinstance(value, dict) else {}


def _default_personas() -> dict[str, Persona]:
    return {"assistant": Persona(prompt="You are a helpful assistant.")}


@dataclass(frozen=True, slots=True)
class Resolved:
    """The persona chosen for a channel, whether the bot answers unaddressed messages,
    and the flood limits and access rules in force there."""

    name: str
    persona: Persona
    respond: Literal["always", "mention"]
    limits: LimitsSection = field(default_factory=LimitsSection)
    access: AccessSection = field(default_factory=AccessSection)
    memory: bool = True  # the binding allows memory (the persona says which kinds)

    @property
    def keeps_facts(self) -> bool:
        """Whether facts about people are kept here: the persona keeps them and the
        binding allows memory."""
        return self.memory and self.persona.memory.facts


def _overlay(base: Section, override: Section | None) -> Any:
    """``base`` with the keys the admin wrote in ``override`` (not its defaults)."""
    if override is None or not override.model_fields_set:
        return base
    return base.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


class Config(Section):
    """The whole of bot.toml."""

    bot: BotSection = Field(default_factory=BotSection)
    llm: LlmSection = Field(default_factory=LlmSection)
    storage: StorageSection = Field(default_factory=StorageSection)
    history: HistorySection = Field(default_factory=HistorySection)
    personas: dict[str, Persona] = Field(default_factory=_default_personas)
    bindings: list[Binding] = Field(default_factory=list)
    discord: DiscordSection = Field(default_factory=DiscordSection)
    telegram: TelegramSection = Field(default_factory=TelegramSection)
    plugins: PluginsSection = Field(default_factory=PluginsSection)
    tools: ToolsSection = Field(default_factory=ToolsSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    access: AccessSection = Field(default_factory=AccessSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    mcp: McpSection = Field(default_factory=McpSection)
    memory: MemorySection = Field(default_factory=MemorySection)
    web: WebSection = Field(default_factory=WebSection)

    @model_validator(mode="after")
    def _mcp_servers_exist(self) -> Config:
        for name, persona in sorted(self.personas.items()):
            for entry in persona.tools:
                if not entry.startswith("mcp:"):
                    continue
                server = entry[4:].partition("/")[0]
                if server not in self.mcp.servers:
                    known = ", ".join(sorted(self.mcp.servers)) or "none is configured"
                    raise ValueError(
                        f"[personas.{name}] tools names {entry!r}, but there is no "
                        f"[mcp.servers.{server}] (the MCP servers: {known})"
                    )
        return self

    @model_validator(mode="after")
    def _personas_exist(self) -> Config:
        names = sorted(self.personas)
        if self.bot.default_persona not in self.personas:
            raise ValueError(
                f"[bot] default_persona {self.bot.default_persona!r} is not defined; "
                f"add [personas.{self.bot.default_persona}] or use one of: {', '.join(names)}"
            )
        for index, binding in enumerate(self.bindings):
            if binding.persona not in self.personas:
                raise PydanticCustomError(
                    "dangling_persona", _dangling_persona(index, binding.persona, names)
                )
        return self

    def persona_for(self, channel: ChannelRef) -> Resolved:
        """Choose the persona: thread -> channel -> guild -> DM default -> bot default."""
        binding = self._binding_for(channel)
        if binding is None:
            name = self.bot.default_persona
            respond: Literal["always", "mention"] = "always" if channel.is_private else "mention"
            return Resolved(name, self.personas[name], respond, self.limits, self.access)
        return Resolved(
            binding.persona,
            self.personas[binding.persona],
            binding.respond,
            _overlay(self.limits, binding.limits),
            _overlay(self.access, binding.access),
            binding.memory,
        )

    def _binding_for(self, channel: ChannelRef) -> Binding | None:
        mine = [b for b in self.bindings if b.platform == channel.platform]
        wanted: list[str] = []
        if channel.thread_id is not None:
            wanted += [channel.thread_id, f"{channel.chat_id}:{channel.thread_id}"]
        wanted.append(channel.chat_id)
        for target in wanted:
            for binding in mine:
                if binding.channel == target:
                    return binding
        if channel.guild_id is not None:
            for binding in mine:
                if binding.guild == channel.guild_id and binding.channel == "*":
                    return binding
        if channel.is_private:
            for binding in mine:
                if binding.channel == "*" and binding.guild is None:
                    return binding
        return None

    def is_admin(self, platform: str, user_id: str) -> bool:
        """Whether ``platform:user_id`` is listed in ``[bot] admins``."""
        return f"{platform}:{user_id}" in self.bot.admins


class ConfigError(Exception):
    """bot.toml could not be used. ``problems`` holds one line per error, each actionable."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed in the table at ``loc``, for "did you mean" hints."""
    model: type[BaseModel] | None = Config
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        if info is None:
            return []
        model = _model_in(info.annotation)
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _describe(error: Any, text: str, path: Path) -> str:
    loc: tuple[int | str, ...] = tuple(error["loc"])
    line = locate_key(text, loc)
    where = f"{path}:{line}" if line else str(path)
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        parent = loc[:-1]
        # personas and bindings hold a model per entry; skip the name/index for the hint.
        allowed = _allowed_keys(parent)
        hint = _suggest(str(loc[-1]), allowed)
        return f"{where}: unknown key {dotted!r}{hint}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "literal_error":
        choices = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        message += _suggest(str(error["input"]), choices)
    if not loc:
        return f"{where}: {message}"
    return f"{where}: {dotted}: {message}"


def _allowed_keys(parent: tuple[int | str, ...]) -> list[str]:
    if parent[:1] == ("personas",) and len(parent) == 2:
        return list(Persona.model_fields)
    if parent[:1] == ("bindings",) and len(parent) == 2:
        return list(Binding.model_fields)
    return _fields_at(parent)


def parse_config(text: str, path: Path) -> Config:
    """Validate bot.toml's text; raise :class:`ConfigError` with every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [describe_syntax_error(exc, text, path)]) from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = [
            _describe(error, text, path)
            for error in exc.errors()
            if error["type"] != "dangling_persona"  # reported below, with its line
        ]
        # Cross-references are checked only once every table is valid; report them too,
        # so one run of `llamabot check` lists everything to fix.
        problems += _dangling_personas(data, text, path)
        raise ConfigError(path, problems) from None


def _dangling_personas(data: dict[str, Any], text: str, path: Path) -> list[str]:
    personas = data.get("personas")
    names = sorted(personas) if isinstance(personas, dict) else list(_default_personas())
    bindings = data.get("bindings")
    found: list[str] = []
    for index, binding in enumerate(bindings if isinstance(bindings, list) else []):
        persona = binding.get("persona") if isinstance(binding, dict) else None
        if isinstance(persona, str) and persona not in names:
            line = locate_key(text, ("bindings", index, "persona"))
            where = f"{path}:{line}" if line else str(path)
            found.append(f"{where}: {_dangling_persona(index, persona, names)}")
    return found


def _dangling_persona(index: int, persona: str, names: list[str]) -> str:
    return (
        f"[[bindings]] #{index + 1} names persona {persona!r}, which is not defined"
        f"{_suggest(persona, names)}; define [personas.{persona}] or use one of: "
        f"{', '.join(names)}"
    )


def load_config(path: Path) -> Config:
    """Read and validate bot.toml from ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            path,
            [f"{path}: no such file; create it (see the example bot.toml) or pass --config PATH"],
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"{path}: cannot read it: {exc}"]) from None
    return parse_config(text, path)


def resolve_storage_url(url: str, config_path: Path) -> str:
    """Make a relative SQLite path relative to bot.toml's folder, not the working directory."""
    for prefix in ("sqlite+aiosqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            rest = url.removeprefix(prefix)
            if rest and not rest.startswith(("/", ":memory:")) and "://" not in rest:
                absolute = (config_path.parent / rest).resolve()
                return f"{prefix}{absolute}"
    return url
