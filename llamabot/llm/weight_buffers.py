"""``[llm.embedded] weight_buffers``: whether llama.cpp may repack weights for this CPU.

llama.cpp's "extra buffer types" repack the weights for the CPU's fastest kernels. On
CPUs with AMX (Intel Sapphire Rapids and later) those kernels segfault in
``ggml_backend_amx_mul_mat`` (llama.cpp issue 20824; the same crash in Ollama's CPU
runner, Ollama issue 17205), so ``auto`` loads plain weights there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

WeightBuffers = Literal["auto", "extra", "plain"]

# The features worth showing an admin, in the order llama.cpp prints them.
SHOWN_FEATURES = (
    "SSE3",
    "AVX",
    "AVX2",
    "F16C",
    "FMA",
    "AVX512",
    "AVX512_VNNI",
    "AVX512_BF16",
    "AVX_VNNI",
    "AMX_INT8",
    "NEON",
    "ARM_FMA",
    "SVE",
)


@dataclass(frozen=True, slots=True)
class WeightBufferChoice:
    """What the model is loaded with, and the sentence that says why."""

    extra: bool
    reason: str

    @property
    def label(self) -> str:
        return "extra" if self.extra else "plain"


def cpu_features(system_info: str) -> list[str]:
    """The features llama.cpp reports as present, from ``llama_print_system_info()``."""
    present = {
        name for name, value in re.findall(r"([A-Z0-9_]+) = (\d+)", system_info) if value != "0"
    }
    return [name for name in SHOWN_FEATURES if name in present]


def choose_weight_buffers(setting: WeightBuffers, system_info: str) -> WeightBufferChoice:
    """Decide ``use_extra_bufts`` for the setting on the CPU llama.cpp describes."""
    if setting == "extra":
        return WeightBufferChoice(True, 'extra weight buffers (weight_buffers = "extra")')
    if setting == "plain":
        return WeightBufferChoice(False, 'plain weight buffers (weight_buffers = "plain")')
    if "AMX_INT8" in cpu_features(system_info):
        return WeightBufferChoice(
            False,
            "plain weight buffers: the CPU has AMX, whose llama.cpp kernels crash "
            '(weight_buffers = "auto"; "extra" forces them)',
        )
    return WeightBufferChoice(
        True, 'extra weight buffers: the CPU has no AMX (weight_buffers = "auto")'
    )
