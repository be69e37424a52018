"""The admin page's HTTP side: the aiohttp application, its guards, and its pages.

Another front door, not another core: every page reads through the bot's own storage and
every change goes through the checked bot.toml editor (comments kept, validated,
atomic, refused over an edit made on disk meanwhile) or the same services the admin
commands use. Pages are server-rendered Jinja2 with autoescape; the one script file
streams the live log and counts a prompt's tokens as you type. Nothing is loaded from
another origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from aiohttp import web

from llamabot.audit import AuditLog
from llamabot.config import Config, ConfigError, WebSection
from llamabot.config_editor import ConfigChanged, ConfigEditor, read_for_edit
from llamabot.llm.base import Health
from llamabot.web import queries
from llamabot.web.logs import LogTail
from llamabot.web.security import (
    COOKIE,
    SECURITY_HEADERS,
    LoginLimiter,
    LoginToken,
    Session,
    Sessions,
    check_password,
    check_totp,
    waste_time,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from tomlkit.toml_document import TOMLDocument

    from llamabot.app import Bot
    from llamabot.memory.store import MemoryStore
    from llamabot.storage.history import HistoryStore

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC = ("/login", "/static/")
SESSION = web.RequestKey("session", Session)
# A persona's fields on its page: text, then the sampling options (empty: the model's own).
PERSONA_FIELDS = ["prompt", "model", "adapter", "tools"]
PERSONA_NUMBERS: dict[str, type[float] | type[int]] = {
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "repeat_penalty": float,
    "num_ctx": int,
    "num_predict": int,
    "seed": int,
}
NAV = [
    ("/", "Overview"),
    ("/personas", "Personas"),
    ("/bindings", "Bindings"),
    ("/conversations", "Conversations"),
    ("/plugins", "Plugins"),
    ("/logs", "Logs"),
    ("/audit", "Audit"),
]


@dataclass
class AdminParts:
    """What the page works with: the bot's (``llamabot run``) or a database and bot.toml
    alone (``llamabot web``, with ``bot`` None)."""

    config_path: Path
    config: Callable[[], Config]
    apply: Callable[[Config], None]
    store: HistoryStore
    memory: MemoryStore | None
    audit: AuditLog
    logs: LogTail
    bot: Bot | None = None

    @classmethod
    def alone(cls, config_path: Path, config: Config, engine: AsyncEngine) -> AdminParts:
        """The page without a running bot (``llamabot web``): bot.toml and the database."""
        from llamabot.memory.store import MemoryStore
        from llamabot.storage.history import HistoryStore

        current = [config]
        return cls(
            config_path=config_path,
            config=lambda: current[0],
            apply=lambda new: current.__setitem__(0, new),
            store=HistoryStore(engine),
            memory=MemoryStore(engine),
            audit=AuditLog(engine),
            logs=LogTail(),
        )

    @classmethod
    def of(cls, bot: Bot, logs: LogTail) -> AdminParts:
        assert bot.config_path is not None and bot.audit is not None
        return cls(
            config_path=bot.config_path,
            config=lambda: bot.config,
            apply=bot.apply_config,
            store=bot.store,
            memory=bot.memory.store if bot.memory is not None else None,
            audit=bot.audit,
            logs=logs,
            bot=bot,
        )


class AdminPage:
    """The admin page on ``[web] listen``."""

    def __init__(self, parts: AdminParts, section: WebSection) -> None:
        self.parts = parts
        self.section = section
        self.sessions = Sessions(section.session_hours)
        self.token = LoginToken()
        self.limiter = LoginLimiter()
        self._runner: web.AppRunner | None = None
        self._streams: set[web.StreamResponse] = set()
        self.url = ""
        self._templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
        )
        self.app = self._application()

    # -- lifespan ----------------------------------------------------------------------

    def _application(self) -> web.Application:
        app = web.Application(middlewares=[self._headers, self._guard], client_max_size=2**20)
        get, post = app.router.add_get, app.router.add_post
        get("/login", self.login_page)
        post("/login", self.login)
        post("/logout", self.logout)
        get("/", self.overview)
        get("/personas", self.personas)
        post("/personas", self.persona_create)
        get("/personas/{name}", self.persona)
        post("/personas/{name}", self.persona_save)
        post("/personas/{name}/delete", self.persona_delete)
        post("/personas/{name}/try", self.persona_try)
        get("/bindings", self.bindings)
        post("/bindings", self.binding_add)
        post("/bindings/{index}", self.binding_save)
        post("/bindings/{index}/delete", self.binding_delete)
        get("/conversations", self.conversations)
        get("/conversations/{id}", self.transcript)
        get("/conversations/{id}/export", self.export)
        post("/people/forget", self.forget_person)
        get("/plugins", self.plugins)
        post("/jobs/cancel", self.cancel_job)
        get("/logs", self.logs)
        get("/logs/stream", self.log_stream)
        get("/audit", self.audit)
        app.router.add_static("/static/", HERE / "static")
        return app

    async def start(self) -> str:
        """Serve the page; returns the one-time login link."""
        host, port = self.section.host_port
        context = None
        if self.section.tls_cert:
            base = self.parts.config_path.parent
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(base / self.section.tls_cert, base / self.section.tls_key)
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=context)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            from llamabot.errors import StartupError

            raise StartupError(
                f"[web] cannot listen on {self.section.listen} ({exc.strerror or exc}); "
                'choose another port in [web] listen, or listen = "" for no admin page'
            ) from None
        self._runner = runner
        self.parts.logs.attach()
        sockets = getattr(site._server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        scheme = "https" if context else "http"
        shown = host if ":" not in host else f"[{host}]"
        self.url = f"{scheme}://{shown}:{bound}"
        return f"{self.url}/login?token={self.token.value}"

    async def stop(self) -> None:
        self.parts.logs.detach()
        for stream in list(self._streams):
            with contextlib.suppress(Exception):
                await stream.write_eof()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- guards ------------------------------------------------------------------------

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self._secure(request, exc)
            raise
        self._secure(request, response)
        return response

    def _secure(self, request: web.Request, response: web.StreamResponse) -> None:
        if response.prepared:
            return
        response.headers.update(SECURITY_HEADERS)
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        changes = request.method not in ("GET", "HEAD", "OPTIONS")
        if changes and not self._same_origin(request):
            raise web.HTTPForbidden(text="refused: the request did not come from this page")
        if request.path.startswith(PUBLIC):
            return await handler(request)
        session = self.sessions.read(request.cookies.get(COOKIE))
        if session is None:
            if request.method == "GET" and not request.path.endswith("/stream"):
                raise web.HTTPFound("/login")
            raise web.HTTPUnauthorized(text="log in first")
        if changes:
            form = await request.post()
            offered = str(form.get("csrf", "")) or request.headers.get("X-CSRF-Token", "")
            if offered != session.csrf:
                raise web.HTTPForbidden(text="refused: the form's token is missing or stale")
            if not session.may_change:
                raise web.HTTPForbidden(text="refused: a viewer cannot change anything")
        request[SESSION] = session
        return await handler(request)

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return False
        return origin == f"{self._scheme(request)}://{self._host(request)}"

    def _scheme(self, request: web.Request) -> str:
        if self.section.trust_proxy and "X-Forwarded-Proto" in request.headers:
            return request.headers["X-Forwarded-Proto"].split(",")[0].strip()
        return request.scheme

    def _host(self, request: web.Request) -> str:
        if self.section.trust_proxy and "X-Forwarded-Host" in request.headers:
            return request.headers["X-Forwarded-Host"].split(",")[0].strip()
        return request.host

    def _address(self, request: web.Request) -> str:
        if self.section.trust_proxy and "X-Forwarded-For" in request.headers:
            return request.headers["X-Forwarded-For"].split(",")[0].strip()
        return request.remote or "?"

    # -- rendering ---------------------------------------------------------------------

    def _page(
        self, request: web.Request, template: str, status: int = 200, **values: Any
    ) -> web.Response:
        session: Session | None = request.get(SESSION)
        html = self._templates.get_template(template).render(
            session=session,
            csrf=session.csrf if session else "",
            nav=NAV,
            path=request.path,
            llamabot_version=_version(),
            config_path=str(self.parts.config_path),
            **values,
        )
        return web.Response(text=html, content_type="text/html", status=status)

    def _login(self, request: web.Request, user: str, role: str) -> web.HTTPFound:
        cookie, _ = self.sessions.make(user, role)
        response = web.HTTPFound("/")
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=self.sessions.max_age,
            httponly=True,
            samesite="Strict",
            secure=self._scheme(request) == "https",
            path="/",
        )
        return response

    # -- login -------------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        offered = request.query.get("token")
        if offered is not None:
            if self.token.redeem(offered):
                self.parts.audit.record_soon(
                    f"owner@{self._address(request)}", "logged in with the link"
                )
                raise self._login(request, "owner", "admin")
            return self._page(
                request,
                "login.html",
                403,
                error="That link was used already or is wrong; log in, or restart for a new link.",
                users=bool(self.section.users),
            )
        return self._page(request, "login.html", error="", users=bool(self.section.users))

    async def login(self, request: web.Request) -> web.StreamResponse:
        address = self._address(request)
        if self.limiter.blocked(address):
            raise web.HTTPTooManyRequests(text="too many wrong passwords; wait a minute")
        form = await request.post()
        name, password = str(form.get("user", "")), str(form.get("password", ""))
        user = self.section.users.get(name)
        if user is None:
            waste_time(password)
        elif check_password(user.password_hash, password) and (
            not user.totp_secret or check_totp(user.totp_secret, str(form.get("code", "")))
        ):
            await self.parts.audit.record(f"{name}@{address}", "logged in")
            raise self._login(request, name, user.role)
        self.limiter.failed(address)
        log.warning("admin page: a wrong password for %r from %s", name, address)
        return self._page(
            request, "login.html", 403, error="Wrong name, password or code.", users=True
        )

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = web.HTTPFound("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # -- overview ----------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.StreamResponse:
        bot = self.parts.bot
        platforms = [adapter.platform for adapter in bot.adapters] if bot else []
        health: Health | None = None
        if bot is not None:
            try:
                async with asyncio.timeout(3):
                    health = await bot.model.health()
            except Exception as exc:  # a model server down is what the page should show
                health = Health(ok=False, detail=str(exc) or "no answer within 3 s")
        errors = sum(
            1
            for line in self.parts.logs.lines
            if line.level in ("ERROR", "CRITICAL") and line.at > time.time() - 3600
        )
        return self._page(
            request,
            "overview.html",
            running=bot is not None,
            platforms=platforms,
            backend=bot.model.name if bot else "",
            health=health,
            activity=await queries.activity(self.parts.store.engine),
            errors=errors,
        )

    # -- personas ----------------------------------------------------------------------

    async def personas(self, request: web.Request, **extra: Any) -> web.Response:
        config = self.parts.config()
        _, version = read_for_edit(self.parts.config_path)
        return self._page(
            request,
            "personas.html",
            status=extra.pop("status", 200),
            personas=sorted(config.personas.items()),
            default=config.bot.default_persona,
            bound=_bound(config),
            version=version,
            error=extra.pop("error", ""),
            diff=extra.pop("diff", ""),
        )

    async def persona(self, request: web.Request, **extra: Any) -> web.Response:
        name = request.match_info["name"]
        config = self.parts.config()
        persona = config.personas.get(name)
        if persona is None:
            raise web.HTTPNotFound(text=f"no persona {name!r}")
        _, version = read_for_edit(self.parts.config_path)
        shown: dict[str, str] = {
            "prompt": persona.prompt,
            "model": persona.model,
            "adapter": persona.adapter or "",
            "tools": ", ".join(persona.tools),
        }
        for field in PERSONA_NUMBERS:
            value = getattr(persona, field)
            shown[field] = "" if value is None else str(value)
        form = shown | extra.pop("form", {})
        context = await self._context_of(persona.model, persona.num_ctx)
        return self._page(
            request,
            "persona.html",
            status=extra.pop("status", 200),
            name=name,
            form=form,
            tokens=self._count(form["prompt"]),
            context=context,
            tools_on_offer=self._tool_names(),
            numbers=list(PERSONA_NUMBERS),
            version=extra.pop("version", version),
            errors=extra.pop("errors", {}),
            diff=extra.pop("diff", ""),
            saved=request.query.get("saved") == "1",
            running=self.parts.bot is not None,
        )

    async def persona_save(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self.parts.config().personas:
            raise web.HTTPNotFound(text=f"no persona {name!r}")
        form = {k: str(v) for k, v in (await request.post()).items()}
        errors: dict[str, str] = {}
        numbers: dict[str, float | int | None] = {}
        for field, number_type in PERSONA_NUMBERS.items():
            typed = form.get(field, "").strip()
            if not typed:
                numbers[field] = None
                continue
            try:
                numbers[field] = number_type(typed)
            except ValueError:
                example = "0.7" if number_type is float else "4096"
                errors[field] = f"{typed!r} is not a number, e.g. {example}"
        tools = [t.strip() for t in form.get("tools", "").split(",") if t.strip()]

        def change(document: TOMLDocument) -> None:
            table: Any = document["personas"][name]
            # Only what the form sent: a client that leaves a field out keeps its value.
            for field in ("prompt", "model", "adapter"):
                if field in form:
                    value = form[field] if field == "prompt" else form[field].strip()
                    if value or field != "adapter":
                        table[field] = value
                    else:
                        table.pop(field, None)
            for field, number in numbers.items():
                if field not in form:
                    continue
                if number is None:
                    table.pop(field, None)
                else:
                    table[field] = number
            if "tools" in form and (tools or "tools" in table):
                table["tools"] = tools

        if not errors:
            problem = await self._edit(
                request, change, f"persona {name} edited", form.get("version", "")
            )
            if problem is None:
                raise web.HTTPFound(f"/personas/{name}?saved=1")
            kind, text = problem
            if kind == "changed":
                return await self.persona(request, form=form, status=409, diff=text)
            errors = _errors_by_field(text, [*PERSONA_FIELDS, *PERSONA_NUMBERS])
        return await self.persona(
            request, form=form, status=400, errors=errors, version=form.get("version", "")
        )

    async def persona_create(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        name = str(form.get("name", "")).strip()
        prompt = str(form.get("prompt", "")).strip() or "You are a helpful assistant."
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            return await self.personas(
                request, status=400, error="A persona's name is letters, digits, _ and -."
            )
        if name in self.parts.config().personas:
            return await self.personas(
                request, status=400, error=f"There is a persona {name} already."
            )

        def change(document: TOMLDocument) -> None:
            import tomlkit

            personas: Any = document.setdefault("personas", tomlkit.table(is_super_table=True))
            table = tomlkit.table()
            table.add("prompt", prompt)
            personas.add(name, table)

        problem = await self._edit(
            request, change, f"persona {name} created", str(form.get("version", ""))
        )
        if problem is not None:
            return await self.personas(request, **_refusal(problem))
        raise web.HTTPFound(f"/personas/{name}")

    async def persona_delete(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        config = self.parts.config()
        users = _bound(config).get(name, [])
        if users:
            return await self.personas(
                request,
                status=400,
                error=f"The persona {name} is in use: {'; '.join(users)}. "
                "Bind those elsewhere first.",
            )
        form = await request.post()

        def change(document: TOMLDocument) -> None:
            del document["personas"][name]

        problem = await self._edit(
            request, change, f"persona {name} deleted", str(form.get("version", ""))
        )
        if problem is not None:
            return await self.personas(request, **_refusal(problem))
        raise web.HTTPFound("/personas")

    async def persona_try(self, request: web.Request) -> web.StreamResponse:
        """The persona's answer to one message, streamed as it is written: the model and
        prompt in force, no platform, and nothing stored in any conversation."""
        name = request.match_info["name"]
        bot = self.parts.bot
        if bot is None:
            raise web.HTTPConflict(text="the bot is not running; start it to try a persona")
        if name not in self.parts.config().personas:
            raise web.HTTPNotFound(text=f"no persona {name!r}")
        text = str((await request.post()).get("text", "")).strip()
        if not text:
            raise web.HTTPBadRequest(text="say something to the persona first")
        from llamabot.llm.errors import ModelError
        from llamabot.services import ModelAccess

        model = ModelAccess(bot.model, self.parts.config, bot.contexts.limiter, name)
        response = web.StreamResponse(
            headers={"Content-Type": "text/plain; charset=utf-8", **SECURITY_HEADERS}
        )
        response.headers["Cache-Control"] = "no-store"
        await response.prepare(request)
        try:
            async for delta in model.stream(text):
                await response.write(delta.encode())
        except ModelError as exc:
            await response.write(f"\n[{exc.user_message}]".encode())
        except ConnectionResetError:
            pass  # the admin closed the page
        await response.write_eof()
        return response

    # -- bindings ----------------------------------------------------------------------

    async def bindings(self, request: web.Request, **extra: Any) -> web.Response:
        config = self.parts.config()
        seen = await queries.conversations(self.parts.store.engine, limit=200)
        _, version = read_for_edit(self.parts.config_path)
        return self._page(
            request,
            "bindings.html",
            status=extra.pop("status", 200),
            bindings=list(enumerate(config.bindings)),
            personas=sorted(config.personas),
            default=config.bot.default_persona,
            version=version,
            error=extra.pop("error", ""),
            diff=extra.pop("diff", ""),
            seen=seen,
            titles={c.key: c.title for c in seen if c.title},
        )

    async def binding_save(self, request: web.Request) -> web.StreamResponse:
        index = int(request.match_info["index"])
        form = await request.post()
        persona, respond = str(form.get("persona", "")), str(form.get("respond", ""))

        def change(document: TOMLDocument) -> None:
            entry: Any = document["bindings"][index]
            entry["persona"] = persona
            entry["respond"] = respond

        return await self._binding_edit(
            request, change, f"binding {index} now {persona} ({respond})", form
        )

    async def binding_add(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        values = {
            k: str(form.get(k, "")).strip()
            for k in ("platform", "channel", "guild", "persona", "respond")
        }

        def change(document: TOMLDocument) -> None:
            import tomlkit

            entry = tomlkit.table()
            entry.add("platform", values["platform"])
            entry.add("channel", values["channel"] or "*")
            if values["guild"]:
                entry.add("guild", values["guild"])
            entry.add("persona", values["persona"])
            entry.add("respond", values["respond"] or "mention")
            bindings: Any = document.get("bindings")
            if bindings is None:
                bindings = tomlkit.aot()
                document.append("bindings", bindings)
            bindings.append(entry)

        what = (
            f"binding added: {values['platform']}:{values['channel'] or '*'} -> {values['persona']}"
        )
        return await self._binding_edit(request, change, what, form)

    async def binding_delete(self, request: web.Request) -> web.StreamResponse:
        index = int(request.match_info["index"])
        form = await request.post()

        def change(document: TOMLDocument) -> None:
            bindings: Any = document["bindings"]
            del bindings[index]

        return await self._binding_edit(request, change, f"binding {index} deleted", form)

    async def _binding_edit(
        self, request: web.Request, change: Callable[[TOMLDocument], None], what: str, form: Any
    ) -> web.StreamResponse:
        problem = await self._edit(request, change, what, str(form.get("version", "")))
        if problem is None:
            raise web.HTTPFound("/bindings")
        return await self.bindings(request, **_refusal(problem))

    # -- conversations -----------------------------------------------------------------

    async def conversations(self, request: web.Request) -> web.StreamResponse:
        platform = request.query.get("platform", "")
        before = _int(request.query.get("before"))
        found = await queries.conversations(
            self.parts.store.engine, platform=platform, before=before
        )
        return self._page(
            request,
            "conversations.html",
            conversations=found,
            platform=platform,
            older=found[-1].id if len(found) == queries.PAGE else None,
        )

    async def transcript(self, request: web.Request) -> web.StreamResponse:
        session: Session = request[SESSION]
        if session.role == "viewer" and not self.section.viewers_see_transcripts:
            raise web.HTTPForbidden(
                text="viewers do not see transcripts here ([web] viewers_see_transcripts)"
            )
        conversation_id = int(request.match_info["id"])
        engine = self.parts.store.engine
        found = await queries.conversation(engine, conversation_id)
        if found is None:
            raise web.HTTPNotFound(text="no such conversation")
        person = request.query.get("person", "")
        query = request.query.get("q", "").strip()
        if query:
            hits = await self.parts.store.search(conversation_id, query, 50, newest_first=True)
            lines: list[Any] = []
        else:
            hits = []
            lines = await queries.transcript(
                engine,
                conversation_id,
                before=_int(request.query.get("before")),
                person=person,
                until=_day_after(request.query.get("date", "")),
            )
        people = sorted(
            {(line.author_id, line.author_name or "") for line in lines if line.author_id}
        )
        memory = self.parts.memory
        summary = (await memory.summary(conversation_id)).text if memory is not None else ""
        return self._page(
            request,
            "transcript.html",
            conversation=found,
            summary=summary,
            lines=lines,
            hits=hits,
            query=query,
            person=person,
            date=request.query.get("date", ""),
            people=people,
            older=lines[-1].id if len(lines) == queries.PAGE else None,
        )

    async def export(self, request: web.Request) -> web.StreamResponse:
        from llamabot.export import ExportFilter, Pseudonyms, export

        found = await queries.conversation(self.parts.store.engine, int(request.match_info["id"]))
        if found is None:
            raise web.HTTPNotFound(text="no such conversation")
        fmt = request.query.get("format", "chatml")
        if fmt not in ("chatml", "sharegpt", "alpaca"):
            raise web.HTTPBadRequest(text="format is chatml, sharegpt or alpaca")
        out = io.StringIO()
        await export(
            self.parts.store.engine,
            self.parts.config(),
            out,
            fmt=fmt,  # type: ignore[arg-type]
            where=ExportFilter(conversation=found.key),
            pseudonym=Pseudonyms.beside(self.parts.config_path),
        )
        filename = f"{found.key.replace(':', '-')}.{fmt}.jsonl"
        return web.Response(
            text=out.getvalue(),
            content_type="application/jsonl",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def forget_person(self, request: web.Request) -> web.StreamResponse:
        from llamabot.services import forget_person

        form = await request.post()
        person = str(form.get("person", ""))
        back = str(form.get("back", "/conversations"))
        if not person:
            raise web.HTTPBadRequest(text="say whom to forget")
        removed = await forget_person(self.parts.store, self.parts.memory, person)
        if self.parts.bot is not None and self.parts.bot.scheduler is not None:
            await self.parts.bot.scheduler.forget_author(person)
        await self.parts.audit.record(
            _who(request), f"forgot {person}: {removed} message(s), their facts and summaries"
        )
        raise web.HTTPFound(
            back if back.startswith("/") and not back.startswith("//") else "/conversations"
        )

    # -- plugins -----------------------------------------------------------------------

    async def plugins(self, request: web.Request) -> web.StreamResponse:
        bot = self.parts.bot
        config = self.parts.config()
        commands: list[Any] = []
        tools: list[tuple[Any, list[str]]] = []
        jobs: list[Any] = []
        if bot is not None:
            commands = sorted(bot.plugins.commands(), key=lambda c: c.name)
            for name in bot.plugins.tools.names():
                tool = bot.plugins.tools.get(name)
                users = [
                    p
                    for p, persona in sorted(config.personas.items())
                    if name in persona.tools or (tool is not None and tool.plugin in persona.tools)
                ]
                tools.append((tool, users))
            if bot.scheduler is not None:
                jobs = await bot.scheduler.everything_pending()
        return self._page(
            request,
            "plugins.html",
            running=bot is not None,
            commands=commands,
            tools=tools,
            jobs=jobs,
        )

    async def cancel_job(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        job = str(form.get("job", ""))
        bot = self.parts.bot
        if bot is None or bot.scheduler is None:
            raise web.HTTPConflict(text="the bot is not running; start it to manage its jobs")
        if await bot.scheduler.cancel_by_id(job):
            await self.parts.audit.record(_who(request), f"cancelled the scheduled call {job}")
        raise web.HTTPFound("/plugins")

    # -- logs and audit ----------------------------------------------------------------

    async def logs(self, request: web.Request) -> web.StreamResponse:
        return self._page(request, "logs.html")

    async def log_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                **SECURITY_HEADERS,
            }
        )
        await response.prepare(request)
        self._streams.add(response)
        stream = self.parts.logs.subscribe()
        try:
            for line in list(self.parts.logs.lines)[-200:]:
                await response.write(_event(line))
            while True:
                line = await stream.get()
                await response.write(_event(line))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.parts.logs.unsubscribe(stream)
            self._streams.discard(response)
        return response

    async def audit(self, request: web.Request) -> web.StreamResponse:
        before = _int(request.query.get("before"))
        entries = await self.parts.audit.recent(50, before)
        return self._page(
            request,
            "audit.html",
            entries=entries,
            older=entries[-1].id if len(entries) == 50 else None,
        )

    # -- helpers -----------------------------------------------------------------------

    async def _edit(
        self, request: web.Request, change: Callable[[TOMLDocument], None], what: str, version: str
    ) -> tuple[str, str] | None:
        """Write a change to bot.toml; None when done, else ("invalid" | "changed", text).

        The same checked editor as the admin commands: validated, atomic, in force for
        the next message, and in the audit log with its diff (written before the page
        that shows it is served)."""
        who = _who(request)
        editor = ConfigEditor(
            self.parts.config_path,
            self.parts.apply,
            allowed=True,  # the guard let only an admin's session through
            audit=lambda done, diff: self.parts.audit.record_soon(who, done, diff),
        )
        try:
            editor.edit(change, what=what, based_on=version or None)
        except ConfigChanged as exc:
            return "changed", exc.diff
        except ConfigError as exc:
            return "invalid", "; ".join(exc.problems)
        except (KeyError, IndexError) as exc:
            return "invalid", f"not found in bot.toml: {exc}"
        await self.parts.audit.settle()
        return None

    def _count(self, text: str) -> int:
        if self.parts.bot is not None:
            return self.parts.bot.model.count_tokens(text)
        from llamabot.llm.base import estimate_tokens

        return estimate_tokens(text)

    async def _context_of(self, model: str, num_ctx: int | None) -> int | None:
        if num_ctx or self.parts.bot is None:
            return num_ctx
        try:
            async with asyncio.timeout(2):
                return await self.parts.bot.model.context_length(model)
        except Exception:
            return None

    def _tool_names(self) -> list[str]:
        return self.parts.bot.plugins.tools.names() if self.parts.bot is not None else []


def _refusal(problem: tuple[str, str]) -> dict[str, Any]:
    """How a page shows a refused save: a changed file's diff (409), or what is wrong."""
    kind, text = problem
    if kind == "changed":
        return {"status": 409, "diff": text, "error": ""}
    return {"status": 400, "error": text, "diff": ""}


def _bound(config: Config) -> dict[str, list[str]]:
    """Persona -> where it is in use (bindings, the default)."""
    users: dict[str, list[str]] = {}
    users.setdefault(config.bot.default_persona, []).append("[bot] default_persona")
    for binding in config.bindings:
        guild = f"guild {binding.guild} " if binding.guild else ""
        users.setdefault(binding.persona, []).append(
            f"{binding.platform} {guild}channel {binding.channel}"
        )
    return users


def _errors_by_field(text: str, fields: list[str]) -> dict[str, str]:
    """Problems from ``llamabot check``'s messages, next to the field they name."""
    errors: dict[str, str] = {}
    for problem in text.split("; "):
        field = next((f for f in fields if f in problem), "")
        errors[field] = (errors.get(field, "") + " " + problem).strip()
    return errors


def _event(line: Any) -> bytes:
    data = json.dumps(
        {
            "n": line.number,
            "at": time.strftime("%H:%M:%S", time.localtime(line.at)),
            "level": line.level,
            "logger": line.logger,
            "text": line.text,
        }
    )
    return f"data: {data}\n\n".encode()


def _who(request: web.Request) -> str:
    session: Session = request[SESSION]
    return f"{session.user}@{request.remote or '?'}"


def _day_after(value: str) -> datetime | None:
    """``YYYY-MM-DD`` as the moment its day ends (UTC), for "go to this date"."""
    try:
        return datetime.strptime(value, "%Y-%m-%d") + timedelta(days=1) if value else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _version() -> str:
    try:
        return metadata.version("llamabot")
    except metadata.PackageNotFoundError:
        return "unknown"
