"""``[llm.embedded] weight_buffers``: plain weights where llama.cpp's AMX kernels crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamabot.config import ConfigError, parse_config
from llamabot.llm.weight_buffers import choose_weight_buffers, cpu_features

# As llama_print_system_info() reports a Sapphire Rapids CPU, and an older one.
AMX_CPU = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
    "AVX512 = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | OPENMP = 1 | REPACK = 1 | "
)
AVX2_CPU = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | OPENMP = 1 | REPACK = 1 | "


def test_the_features_llama_cpp_sees_are_listed() -> None:
    assert cpu_features(AVX2_CPU) == ["SSE3", "AVX", "AVX2", "F16C", "FMA"]
    assert "AMX_INT8" in cpu_features(AMX_CPU)
    assert "AMX_INT8" not in cpu_features(AMX_CPU.replace("AMX_INT8 = 1", "AMX_INT8 = 0"))


def test_auto_loads_plain_weights_on_amx_and_says_why() -> None:
    choice = choose_weight_buffers("auto", AMX_CPU)
    assert not choice.extra and "AMX" in choice.reason


def test_auto_keeps_extra_buffers_elsewhere() -> None:
    assert choose_weight_buffers("auto", AVX2_CPU).extra


@pytest.mark.parametrize(("setting", "extra"), [("extra", True), ("plain", False)])
def test_an_explicit_setting_wins_on_any_cpu(setting: str, extra: bool) -> None:
    for cpu in (AMX_CPU, AVX2_CPU):
        assert choose_weight_buffers(setting, cpu).extra is extra  # type: ignore[arg-type]


def test_a_misspelt_value_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    text = '[llm.embedded]\nn_ctx = 2048\nweight_buffers = "plian"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "bot.toml")
    [problem] = caught.value.problems
    assert problem.startswith(f"{tmp_path / 'bot.toml'}:3:")
    assert "did you mean 'plain'?" in problem
