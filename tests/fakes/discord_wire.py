"""The fake Discord's HTTP plumbing shared by its parts: recorded requests and Discord's
JSON answers and error shapes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Json = dict[str, Any]


@dataclass
class RecordedRequest:
    """One REST request as it crossed the wire (``path`` without the /api/v10 prefix)."""

    method: str
    path: str
    json: Any
    at: float
    headers: dict[str, str]
    status: int = 0


_RECORD = web.RequestKey("record", RecordedRequest)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses a body as JSON only when Content-Type is exactly application/json.
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _body(request: web.Request) -> Json:
    recorded = request[_RECORD]
    return recorded.json if isinstance(recorded.json, dict) else {}


def _body_list(request: web.Request) -> list[Json]:
    recorded = request[_RECORD]
    return recorded.json if isinstance(recorded.json, list) else []


def _form_error(field_name: str, code: str, message: str) -> web.Response:
    return _json(
        {
            "message": "Invalid Form Body",
            "code": 50035,
            "errors": {field_name: {"_errors": [{"code": code, "message": message}]}},
        },
        400,
    )


def _check_content(content: str, body: Json) -> web.Response | None:
    if len(content) > 2000:
        return _form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    if not content.strip() and not body.get("embeds"):
        return _json({"message": "Cannot send an empty message", "code": 50006}, 400)
    return None
