"""A byte-level GPT, nanoGPT-style: the model every learner trains.

Vocabulary is the 256 byte values, so the corpus needs no tokenizer and every process
agrees on the encoding. The architecture is the usual pre-norm decoder (causal
self-attention + MLP, tied input/output embeddings). Three presets size the model:

- ``tiny``   (~100k parameters) for unit tests and quick clusters,
- ``small``  (~1M) for harness runs,
- ``medium`` (5-10M) for longer experiments.

``build_model(preset, seq_len, seed)`` initialises from a private ``torch.Generator``
seeded with ``seed``, so the synchronizer and every learner build bit-identical
parameters without sending them, and the global RNG state of the caller is untouched.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from harness.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 256
    seq_len: int = 64
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 48

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ConfigError("n_embd must be a multiple of n_head", key="n_embd", value=self.n_embd)
        for name in ("vocab_size", "seq_len", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ConfigError("must be at least 1", key=name, value=getattr(self, name))


# Layer/width choices giving the advertised sizes (with seq_len 64..256; position
# embeddings add seq_len * n_embd). Counts are printed by benchmarks/model_speed.py.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=56),     # ~90k
    "small": dict(n_layer=4, n_head=4, n_embd=144),   # ~1.0M
    "medium": dict(n_layer=6, n_head=6, n_embd=336),  # ~8.2M
}


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        # Output head shares the token embedding (weight tying, as in GPT-2/nanoGPT):
        # it is one tensor, so it lives in exactly one fragment.
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        """GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2*n_layer)."""
        resid_std = 0.02 / math.sqrt(2 * self.cfg.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif name.startswith("ln") or ".ln" in name:
                p.fill_(1.0)
            elif name.endswith("proj.weight"):
                p.copy_(torch.randn(p.shape, generator=generator) * resid_std)
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) int64 bytes. Returns logits (B, T, vocab) and the mean
        cross-entropy against ``targets`` (B, T) when given, else None."""
        B, T = idx.shape
        if T > self.cfg.seq_len:
            raise ValueError(f"sequence of {T} longer than the model's seq_len {self.cfg.seq_len}")
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


def model_config(preset: str, seq_len: int) -> ModelConfig:
    if preset not in PRESETS:
        raise ConfigError(f"must be one of {', '.join(PRESETS)}", key="preset", value=preset)
    return ModelConfig(seq_len=seq_len, **PRESETS[preset])


def build_model(preset: str, seq_len: int, seed: int) -> GPT:
    """The model of a run: same (preset, seq_len, seed) gives the same parameters in
    every process, independent of the global torch RNG."""
    # Module constructors draw their default init from the global RNG; fork it so that
    # building a model leaves the caller's random stream exactly as it was.
    with torch.random.fork_rng(devices=[]):
        model = GPT(model_config(preset, seq_len))
    gen = torch.Generator().manual_seed(seed)
    model.init_weights(gen)
    return model
