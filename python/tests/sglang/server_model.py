"""Tiny Llama models made locally (no hub) for the SGLang server tests,
the demo and the TTFT benchmark.

A model is a ``transformers`` LlamaConfig, random weights from a fixed seed
(saved as safetensors) and a byte-level BPE tokenizer trained with
``tokenizers`` on a few sentences, all written to a cache folder named after
the spec, so the second use costs nothing. The weights are random: the
answers are gibberish, but greedy decoding of the same prompt is
deterministic, which is what the tests compare.

    python server_model.py tiny        # prints the model folder
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
from typing import Dict

CACHE = os.environ.get(
    "MORI_GO_MODEL_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "mori-go", "models")
)

# Training text of the tokenizer (its content only shapes the vocabulary).
_CORPUS = [
    "Prefill computes the KV cache of a prompt; decode reads it to generate tokens.",
    "mori-go moves KV cache pages from the prefill server into the decode server.",
    "The quick brown fox jumps over the lazy dog while the router forwards requests.",
    "Disaggregated serving splits prompt processing from token generation.",
    "Pages of sixty-four tokens, layers of keys and values, written one-sided over TCP.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?-'\"()",
]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Shape of a generated Llama. KV bytes per token =
    layers x 2 x kv_heads x head_dim x 4 (float32)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int = 1024
    max_positions: int = 16384
    # Random weights drawn wider than the usual 0.02 so that greedy argmax
    # has clear margins (no near-ties that batch shapes could flip).
    init_std: float = 0.2
    seed: int = 1234

    @property
    def kv_bytes_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * 4

    def digest(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True) + _VERSION
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


_VERSION = "v1"  # bump when the way a model is made changes

SPECS: Dict[str, ModelSpec] = {
    # Tests and the demo: 1 KiB of KV per token, prefill of 4096 tokens in
    # well under a second on 2 cores.
    "tiny": ModelSpec("tiny", layers=2, hidden=128, heads=4, kv_heads=2, head_dim=32, intermediate=256),
    # TTFT benchmark: 16 KiB of KV per token (4 layers x 8 KV heads x 64 x
    # K and V x float32), so that an 8192-token prompt moves 128 MiB.
    "kv16k": ModelSpec("kv16k", layers=4, hidden=256, heads=8, kv_heads=8, head_dim=64, intermediate=512),
}


def model_dir(spec: ModelSpec) -> str:
    return os.path.join(CACHE, f"llama-{spec.name}-{spec.digest()}")


def ensure_model(name: str) -> str:
    """The folder of model ``name`` (see SPECS), made on first use."""
    spec = SPECS[name]
    out = model_dir(spec)
    if os.path.exists(os.path.join(out, ".complete")):
        return out
    os.makedirs(CACHE, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{spec.name}-", dir=CACHE)
    _write_model(spec, tmp)
    open(os.path.join(tmp, ".complete"), "w").close()
    try:
        os.rename(tmp, out)
    except OSError:  # another process made it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_model(spec: ModelSpec, out: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _train_tokenizer(spec.vocab)
    tok.save_pretrained(out)
    cfg = LlamaConfig(
        vocab_size=len(tok),  # what the small corpus gave, <= spec.vocab
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_positions,
        initializer_range=spec.init_std,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)


def _train_tokenizer(vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.BPE(unk_token=None))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    t.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=t, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=1 << 20
    )


if __name__ == "__main__":
    print(ensure_model(sys.argv[1] if len(sys.argv) > 1 else "tiny"))
