"""The learner's inner optimizer: AdamW, computed without ``torch.optim``.

Why not ``torch.optim.AdamW``: constructing it and taking its first step import
``torch._dynamo`` (and with it ``torch._inductor``), which cost 2.5 s on an idle core
and 4-5 s when four learners share two cores -- measured as the largest part of a
restarted learner's rejoin time, i.e. goodput lost on every kill. The learner never
compiles anything, so it pays that import for nothing.

The update is AdamW as ``torch.optim.AdamW`` computes it on the CPU with its defaults
(single-tensor path, decoupled weight decay, bias correction, no amsgrad, no maximize),
operation for operation, and ``tests/test_inner_opt.py`` checks it step for step against
``torch.optim.AdamW`` to the bit.
"""
from __future__ import annotations

from typing import Iterable

import torch


class AdamW:
    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, *, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"bad AdamW hyper-parameters: lr={lr} betas={betas} eps={eps} wd={weight_decay}")
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1 ** self.steps)
        bias_correction2_sqrt = (1 - beta2 ** self.steps) ** 0.5
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            g = p.grad
            p.mul_(1 - self.lr * self.weight_decay)
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(self.eps)
            p.addcdiv_(m, denom, value=-step_size)


