"""A real, tiny LoRA adapter for the bundled SmolLM2, written with the ``gguf`` package.

Random low-rank A and B matrices for the attention query and value weights of the first
blocks, with the metadata llama.cpp's ``convert_lora_to_gguf.py`` writes. ``width``
other than the model's makes an adapter that does not fit (for the start-up error).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

# SmolLM2-135M: 576 wide; keys and values have 3 heads of 64 (192 wide).
EMBEDDING = 576
VALUE = 192


def make_lora(
    path: Path,
    *,
    seed: int,
    rank: int = 8,
    blocks: int = 30,
    magnitude: float = 0.05,
    width: int = EMBEDDING,
) -> Path:
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    for block in range(blocks):
        for name, out in (("attn_q", EMBEDDING), ("attn_v", VALUE)):
            # numpy shapes are ggml's reversed: A is [in, rank], B is [rank, out] in ggml.
            a = (rng.standard_normal((rank, width)) * magnitude).astype(np.float32)
            b = (rng.standard_normal((out, rank)) * magnitude).astype(np.float32)
            writer.add_tensor(f"blk.{block}.{name}.weight.lora_a", a)
            writer.add_tensor(f"blk.{block}.{name}.weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
