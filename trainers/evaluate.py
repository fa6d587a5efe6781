"""Held-out evaluation of a model: mean cross-entropy over fixed eval batches.

The synchronizer evaluates the global model (every ``eval_every_s`` in a worker
thread, on its own copy of the model so serving never waits); the batches come from
``trainers.data.eval_batches`` with the run's seed, so every evaluation of a run, and
the same run repeated, scores the same bytes.
"""
from __future__ import annotations

from typing import Sequence

import torch


@torch.no_grad()
def eval_loss(model: torch.nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    if not batches:
        raise ValueError("no eval batches")
    was_training = model.training
    model.eval()
    try:
        total = 0.0
        for x, y in batches:
            _, loss = model(x, y)
            total += float(loss)
        return total / len(batches)
    finally:
        model.train(was_training)
