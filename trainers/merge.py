"""The synchronizer's merge maths on flat fragments: pure functions, no I/O.

For one fragment p with global parameters Θ_p and the contributions θ_{m,p} of the
learners that made this round (SPEC §1):

- weights ``w_m = tokens_m · (tokens_m / steps_m)`` (more data, and larger batches per
  step, count more), normalised to sum to 1. A contribution with no tokens weighs 0;
  if every weight is 0 the learners count equally (nothing better is known).
- outer gradient ``Δ_p = Σ w_m (Θ_p − θ_{m,p}) / Σ w_m``, always against the
  synchronizer's *current* Θ_p (a learner that started from an older version simply
  contributes a longer delta; staleness is bounded by the caller).
- ``MergeRule.RADIAL``: radial-directional averaging. With d_m = Θ_p − θ_{m,p}:
  ``Δ = (Σ w_m ‖d_m‖) · u / ‖u‖`` where ``u = Σ w_m d_m/‖d_m‖``. Plain averaging of
  nearly orthogonal deltas shrinks the norm by about 1/√M; radial averaging keeps the
  typical step length and only averages the direction. Ranges of the flat vector given
  as ``plain_ranges`` (the embeddings, see ``embedding_ranges``) are averaged plainly,
  as the paper suggests; radial averaging applies to the rest of the fragment as one
  vector. With one contributor both rules give d_1 exactly.
- ``NesterovOuter``: outer SGD with Nesterov momentum, one momentum buffer per
  fragment, step for step the same arithmetic as ``torch.optim.SGD(momentum=m,
  nesterov=True, dampening=0, weight_decay=0)``. Written by hand rather than holding
  P torch optimizers because the synchronizer needs the buffers as plain tensors to
  checkpoint and restore them per fragment, and updates fragments independently.
- ``check_update``: reject a contribution with NaN/Inf or an implausibly large change.

Correctness anchor (tests/test_merge.py): with lr 1, momentum 0 and every learner
contributing, one merge is exactly token-weighted parameter averaging.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Sequence

import torch

from trainers.config import MergeRule

if TYPE_CHECKING:
    from trainers.fragments import FragmentMap

__all__ = ["Contribution", "MergeRule", "merge_weights", "outer_gradient", "NesterovOuter",
           "check_update", "embedding_ranges"]


@dataclasses.dataclass(frozen=True)
class Contribution:
    """One learner's push for one fragment: its local parameters and its counters
    since that fragment was last synchronised."""

    learner: int
    params: torch.Tensor  # 1-D float32, same length as the global fragment
    tokens: int
    steps: int


def merge_weights(contribs: Sequence[Contribution]) -> list[float]:
    """Normalised weights w_m ∝ tokens_m² / steps_m (sum to 1)."""
    if not contribs:
        raise ValueError("no contributions to weigh")
    raw = [c.tokens * (c.tokens / c.steps) if c.steps > 0 and c.tokens > 0 else 0.0 for c in contribs]
    total = sum(raw)
    if total <= 0:
        return [1.0 / len(contribs)] * len(contribs)
    return [r / total for r in raw]


def outer_gradient(global_p: torch.Tensor, contribs: Sequence[Contribution],
                   rule: MergeRule = MergeRule.WEIGHTED, *,
                   plain_ranges: Sequence[tuple[int, int]] = ()) -> torch.Tensor:
    """Δ_p against the current global fragment ``global_p`` (a new float32 tensor)."""
    weights = merge_weights(contribs)
    base = global_p.float()
    deltas = []
    for c in contribs:
        if c.params.shape != base.shape:
            raise ValueError(f"learner {c.learner}: fragment shape {tuple(c.params.shape)}, "
                             f"expected {tuple(base.shape)}")
        deltas.append(base - c.params.float())
    weighted = torch.zeros_like(base)
    for w, d in zip(weights, deltas):
        weighted.add_(d, alpha=w)
    rule = MergeRule(rule)
    if rule is MergeRule.WEIGHTED or len(contribs) == 1:
        return weighted
    radial_mask = torch.ones_like(base, dtype=torch.bool)
    for start, end in plain_ranges:
        radial_mask[start:end] = False
    out = weighted.clone()
    out[radial_mask] = _radial([d[radial_mask] for d in deltas], weights)
    return out


def _radial(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    mean_norm = 0.0
    direction = torch.zeros_like(deltas[0])
    for w, d in zip(weights, deltas):
        n = float(d.norm())
        if n > 0:
            mean_norm += w * n
            direction.add_(d, alpha=w / n)
    dn = float(direction.norm())
    if dn == 0.0:
        return direction  # all deltas zero, or exactly cancelling: no confident direction
    return direction * (mean_norm / dn)


class NesterovOuter:
    """Outer SGD with (Nesterov) momentum; one momentum buffer per fragment."""

    def __init__(self, lr: float, momentum: float, nesterov: bool = True) -> None:
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"need lr > 0 and 0 <= momentum < 1, got lr={lr}, momentum={momentum}")
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.buffers: dict[int, torch.Tensor] = {}

    def step(self, p: int, global_p: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Returns the new global fragment Θ_p − lr·update; keeps the new buffer.
        ``global_p`` is not modified, so a caller can still abandon the merge."""
        buf = self.buffers.get(p)
        if buf is None or self.momentum == 0:
            buf = delta.clone()  # torch initialises the buffer with the first gradient
        else:
            buf = buf * self.momentum + delta
        update = delta + self.momentum * buf if self.nesterov else buf
        self.buffers[p] = buf
        return global_p - self.lr * update

    def momentum_buffer(self, p: int) -> torch.Tensor | None:
        return self.buffers.get(p)

    def set_momentum_buffer(self, p: int, buf: torch.Tensor | None) -> None:
        if buf is None:
            self.buffers.pop(p, None)
        else:
            self.buffers[p] = buf.clone()


def check_update(global_p: torch.Tensor, params: torch.Tensor, max_norm_ratio: float,
                 *, min_rms: float = 0.02) -> str | None:
    """Why a contribution must not be merged, or None if it may.

    ``"nan"`` if it holds NaN/Inf; ``"norm"`` if ‖θ−Θ‖ > ratio·max(‖Θ‖, eps) with
    ``eps = min_rms·√numel``. The floor keeps fragments whose global values are all
    near zero (bias vectors at init) from rejecting every honest update: it is the
    norm a fragment with the init's standard deviation (0.02) would have.
    """
    if params.shape != global_p.shape:
        return "malformed"
    if not bool(torch.isfinite(params).all()):
        return "nan"
    eps = min_rms * math.sqrt(max(global_p.numel(), 1))
    bound = max_norm_ratio * max(float(global_p.float().norm()), eps)
    if float((params.float() - global_p.float()).norm()) > bound:
        return "norm"
    return None


def embedding_ranges(fmap: FragmentMap, p: int,
                     markers: Sequence[str] = ("wte", "wpe")) -> list[tuple[int, int]]:
    """Flat [start, end) ranges of fragment p's embedding tensors (for ``plain_ranges``)."""
    ranges, offset = [], 0
    for name, shape in zip(fmap.names[p], fmap.shapes[p]):
        k = math.prod(shape)
        if any(name.split(".")[0] == m for m in markers):
            ranges.append((offset, offset + k))
        offset += k
    return ranges
