"""Random-weight models of real models' shapes, for benches on a machine without the weights.

Speed depends on a model's shape, not its weights, so a GPU machine without network can time a
1.5B model from a config alone. The vocabulary is the tokenizer's (SmolLM2's: 49,152 entries),
so every generated id decodes; the 1.5B shape's output projection is therefore a third of
Qwen2.5-1.5B's (151,936 entries), the rest is Qwen2.5-1.5B's dims.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

SHAPES = {
    "tiny": ("llama", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2)),  # CPU smoke runs of the benches
    "135m": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                           num_key_value_heads=3, rope_theta=100000.0, max_position_embeddings=8192,
                           rms_norm_eps=1e-5)),  # SmolLM2-135M
    "1.5b": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                           num_key_value_heads=2, rope_theta=1000000.0, max_position_embeddings=32768,
                           rms_norm_eps=1e-6)),  # Qwen2.5-1.5B
}


def random_model_dir(shape: str, tokenizer_dir: str, dtype: str, out: Path | None = None) -> str:
    """A saved model of `shape` with random weights in `dtype` and the tokenizer of `tokenizer_dir`; made once."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = out or Path(os.environ.get("TMPDIR", "/tmp")) / "s3ft-shapes" / f"{shape}-{dtype}"
    if (out / "config.json").exists():
        return str(out)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    arch, dims = SHAPES[shape]
    cfg = AutoConfig.for_model(arch, vocab_size=len(tok), tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **dims)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # initialising 1.5B on a GPU takes seconds
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)
