"""Chat platforms. Each adapter module is the only place that knows its platform."""

from __future__ import annotations

from llamabot.adapters.base import (
    Adapter,
    BotHandle,
    CommandSpec,
    DeliveryError,
    PlatformLimits,
)

__all__ = ["Adapter", "BotHandle", "CommandSpec", "DeliveryError", "PlatformLimits"]
