"""Images people send the bot: downloading one within a size cap, and preparing it for
the model (decoded, first frame only, downscaled, re-encoded) with Pillow.

Every way an image can fail becomes :class:`ImageRejected`, whose ``user_message`` says
what to do; nothing about an image is ever a crash.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

# Pillow refuses bigger images as "decompression bombs"; so does llamabot, earlier.
MAX_PIXELS = 40_000_000
# One read or connect of a download; the whole download is bounded by the caller.
HTTP_TIMEOUT_S = 30.0


class ImageRejected(Exception):
    """An image that cannot go to the model; ``user_message`` is for the person."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """An image ready for the model: encoded bytes and the hash of what was received."""

    data: bytes
    mime: str
    sha256: str


def too_large(max_bytes: int) -> ImageRejected:
    return ImageRejected(
        f"That image is larger than {max_bytes / 1_000_000:g} MB, the most I take; "
        "please send a smaller one."
    )


async def download(url: str, *, max_bytes: int) -> bytes:
    """The bytes at ``url``; the size cap holds while streaming, not after. (The caller
    bounds the time it may take.)"""
    import httpx  # only when someone sends a picture: the terminal chat starts without it

    try:
        async with (
            httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise ImageRejected(
                    "I could not fetch that image (the platform answered "
                    f"{response.status_code}); please send it again."
                )
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise too_large(max_bytes)
            received = bytearray()
            async for chunk in response.aiter_bytes():
                received += chunk
                if len(received) > max_bytes:
                    raise too_large(max_bytes)
    except httpx.HTTPError as exc:
        raise ImageRejected(
            f"I could not fetch that image ({exc}); please send it again."
        ) from None
    return bytes(received)


def prepare(data: bytes, max_side: int) -> PreparedImage:
    """Decode ``data`` (the first frame of an animation), shrink it to fit ``max_side``
    pixels, and encode it as PNG (with transparency) or JPEG. CPU-bound: run it in a
    thread."""
    from PIL import Image, UnidentifiedImageError

    digest = hashlib.sha256(data).hexdigest()
    unreadable = ImageRejected(
        "I cannot read that file as an image; send a PNG, JPEG, WebP or GIF picture."
    )
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageRejected(
                    f"That image is {image.width}×{image.height} pixels, more than I take; "
                    "please send a smaller one."
                )
            image.seek(0)
            frame = image.copy()
    except ImageRejected:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise unreadable from None
    if max(frame.size) > max_side:
        frame.thumbnail((max_side, max_side))
    out = io.BytesIO()
    if frame.mode in ("RGBA", "LA", "P"):
        frame.convert("RGBA").save(out, format="PNG", optimize=False)
        mime = "image/png"
    else:
        frame.convert("RGB").save(out, format="JPEG", quality=90)
        mime = "image/jpeg"
    return PreparedImage(out.getvalue(), mime, digest)
