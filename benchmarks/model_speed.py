"""Parameter counts and inner-step throughput of each model preset.

One learner's inner loop as the trainer runs it: AdamW, one intra-op thread, batches
from a real stdlib shard. Prints one line per preset:

    .venv/bin/python benchmarks/model_speed.py [--steps 20] [--batch-size 8] [--seq-len 64]

Throughput on a shared 2-core machine varies with what else runs; take it as an order
of magnitude (and run it when the machine is quiet).
"""
from __future__ import annotations

import argparse
import time

import torch

from trainers.data import Shard, load_corpus
from trainers.model import PRESETS, build_model


def measure(preset: str, steps: int, batch_size: int, seq_len: int, warmup: int = 3) -> tuple[int, float, float]:
    model = build_model(preset, seq_len, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    shard = Shard(load_corpus(), 0, 1)
    tokens_per_step = batch_size * seq_len
    cursor, start = 0, 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        x, y = shard.batch_at(cursor, batch_size, seq_len)
        _, loss_t = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss_t.backward()
        opt.step()
        cursor += tokens_per_step
    elapsed = time.perf_counter() - start
    return model.num_params(), steps * tokens_per_step / elapsed, elapsed / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--presets", nargs="*", default=list(PRESETS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, batch {args.batch_size} x seq {args.seq_len}, {args.steps} steps")
    for preset in args.presets:
        params, tok_s, step_s = measure(preset, args.steps, args.batch_size, args.seq_len)
        print(f"{preset:7s} params {params:>10,d}  {tok_s:>9,.0f} tokens/s  {step_s * 1000:7.1f} ms/step")


if __name__ == "__main__":
    main()
