"""What makes the admin page safe to put on a server: who may in, and what a request
must carry to change anything.

- Sessions are signed cookies (HMAC-SHA256 with a key made at start): HttpOnly,
  SameSite=Strict, Secure over TLS, expiring after ``[web] session_hours``.
- A login is the printed one-time link, or a ``[web.users]`` name and argon2 password;
  wrong passwords are limited per address (the sixth in a minute is refused with 429).
- A request that changes anything needs the session's CSRF token in the form and an
  ``Origin`` that is the page's own; a viewer may change nothing.
- Every response carries a strict Content-Security-Policy (no inline script, nothing
  from elsewhere), ``X-Frame-Options: DENY`` and, but for the static files, no caching.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer Chromium sends "Origin: null" on the
    # page's own form posts, which the origin check must then refuse.
    "Referrer-Policy": "same-origin",
}
COOKIE = "llamabot_session"
# Wrong passwords allowed per address per minute; the next is refused with 429.
LOGIN_ATTEMPTS = 5
LOGIN_WINDOW_S = 60.0


@dataclass(frozen=True)
class Session:
    """Who is logged in, as what, until when, and the token their forms carry."""

    user: str
    role: str  # admin | viewer
    csrf: str
    expires: float

    @property
    def may_change(self) -> bool:
        return self.role == "admin"


class Sessions:
    """Makes and reads the signed session cookies."""

    def __init__(self, hours: float, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)
        self._seconds = hours * 3600

    def make(self, user: str, role: str) -> tuple[str, Session]:
        session = Session(user, role, secrets.token_urlsafe(24), time.time() + self._seconds)
        body = base64.urlsafe_b64encode(json.dumps(session.__dict__).encode()).decode()
        return f"{body}.{self._sign(body)}", session

    def read(self, cookie: str | None) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        body, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        try:
            session = Session(**json.loads(base64.urlsafe_b64decode(body.encode())))
        except (ValueError, TypeError):
            return None
        return session if session.expires > time.time() else None

    @property
    def max_age(self) -> int:
        return int(self._seconds)

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()


class LoginToken:
    """The one-time login token of the printed link; a new one each start."""

    def __init__(self) -> None:
        self._token: str | None = secrets.token_urlsafe(32)

    @property
    def value(self) -> str | None:
        return self._token

    def redeem(self, offered: str) -> bool:
        """True once, for the right token; it is spent then."""
        token = self._token
        if token is None or not hmac.compare_digest(offered.encode(), token.encode()):
            return False
        self._token = None
        return True


class LoginLimiter:
    """Wrong passwords per address within the last minute."""

    def __init__(self) -> None:
        self._failures: defaultdict[str, deque[float]] = defaultdict(deque)

    def blocked(self, address: str) -> bool:
        failures = self._failures[address]
        now = time.monotonic()
        while failures and now - failures[0] > LOGIN_WINDOW_S:
            failures.popleft()
        return len(failures) >= LOGIN_ATTEMPTS

    def failed(self, address: str) -> None:
        self._failures[address].append(time.monotonic())


def hash_password(password: str) -> str:
    """An argon2 hash for ``[web.users.NAME] password_hash``."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def check_password(password_hash: str, password: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return PasswordHasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# -- TOTP (RFC 6238): the optional second factor of [web.users.NAME] totp_secret --------

TOTP_STEP_S = 30
TOTP_DIGITS = 6


def new_totp_secret() -> str:
    """A random base32 secret, as authenticator apps take it."""
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")


def totp_code(secret: str, at: float | None = None) -> str:
    """The code an authenticator app shows for ``secret`` at ``at`` (now)."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // TOTP_STEP_S)
    digest = hmac.new(key, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(number % 10**TOTP_DIGITS).zfill(TOTP_DIGITS)


def check_totp(secret: str, code: str, at: float | None = None) -> bool:
    """Whether ``code`` is the current code, or the one before or after (clock drift)."""
    now = time.time() if at is None else at
    code = code.strip().replace(" ", "")
    return any(
        hmac.compare_digest(totp_code(secret, now + drift * TOTP_STEP_S), code)
        for drift in (-1, 0, 1)
    )


def totp_uri(name: str, secret: str) -> str:
    """The otpauth:// address an authenticator app scans (or takes typed)."""
    return f"otpauth://totp/llamabot:{name}?secret={secret}&issuer=llamabot&digits=6&period=30"


# Argon2 on a hash that does not exist, so a wrong user name takes as long as a wrong
# password (no telling which names exist).
_DUMMY_HASH: str | None = None


def waste_time(password: str) -> None:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(12))
    check_password(_DUMMY_HASH, password)
