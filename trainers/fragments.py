"""Parameter fragments (Streaming DiLoCo) and the staggered synchronisation schedule.

The model's parameter tensors are split into P fragments of similar size by greedy
bin-packing: tensors largest first (ties by name, so the split is the same in every
process), each into the currently lightest fragment (ties by the lowest fragment
index). A tensor is never split, so P is capped at the number of tensors: asking for
more fragments than tensors gives one tensor per fragment (``FragmentMap.P`` says how
many there really are). Within a fragment tensors keep the model's parameter order.

Fragment p is due for synchronisation at inner step ``step`` when
``(step - offset_p) % H == 0`` with ``offset_p = p*H // P``: every fragment is synced
once every H steps, and the P fragments are spread evenly over those H steps, so about
one fragment is in flight per step when P ≈ H (the paper's P=24, H=24). Steps start at
1 (the first step is step 1), so a fragment's first sync comes after it has trained.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn


@dataclasses.dataclass(frozen=True)
class FragmentMap:
    """Which parameter tensors belong to each fragment, and their sizes."""

    names: tuple[tuple[str, ...], ...]   # names[p]: parameter names in fragment p
    shapes: tuple[tuple[torch.Size, ...], ...]
    numel: tuple[int, ...]               # numel[p]: total elements of fragment p

    @classmethod
    def from_model(cls, model: nn.Module, P: int) -> "FragmentMap":
        if P < 1:
            raise ValueError(f"fragments must be at least 1, got {P}")
        params = list(model.named_parameters())  # tied weights appear once
        order = {name: i for i, (name, _) in enumerate(params)}
        P = min(P, len(params))
        bins: list[list[str]] = [[] for _ in range(P)]
        loads = [0] * P
        for name, p in sorted(params, key=lambda np_: (-np_[1].numel(), np_[0])):
            lightest = min(range(P), key=lambda b: (loads[b], b))
            bins[lightest].append(name)
            loads[lightest] += p.numel()
        shapes_by_name = {name: p.shape for name, p in params}
        names = tuple(tuple(sorted(b, key=order.__getitem__)) for b in bins)
        return cls(names=names,
                   shapes=tuple(tuple(shapes_by_name[n] for n in b) for b in names),
                   numel=tuple(loads))

    @property
    def P(self) -> int:
        return len(self.names)

    @property
    def total_numel(self) -> int:
        return sum(self.numel)

    def fraction(self, p: int) -> float:
        return self.numel[p] / self.total_numel

    def flatten(self, model: nn.Module, p: int) -> torch.Tensor:
        """Fragment p of ``model`` as a new 1-D float32 tensor (a copy)."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            return torch.cat([params[n].detach().reshape(-1).float() for n in self.names[p]])

    def assign(self, model: nn.Module, p: int, flat: torch.Tensor) -> None:
        """Writes a flat fragment (as made by ``flatten``) into ``model`` in place."""
        if flat.dim() != 1 or flat.numel() != self.numel[p]:
            raise ValueError(f"fragment {p} has {self.numel[p]} elements, got shape {tuple(flat.shape)}")
        params = dict(model.named_parameters())
        offset = 0
        with torch.no_grad():
            for n in self.names[p]:
                dst = params[n]
                k = dst.numel()
                dst.copy_(flat[offset:offset + k].view(dst.shape).to(dst.dtype))
                offset += k

    def describe(self) -> list[dict[str, object]]:
        """JSON-able summary (for logs): names and sizes per fragment."""
        return [{"fragment": p, "numel": self.numel[p], "names": list(self.names[p])}
                for p in range(self.P)]


def fragment_offset(p: int, P: int, H: int) -> int:
    return p * H // P


def due_fragments(step: int, P: int, H: int) -> list[int]:
    """Fragments due for synchronisation at inner step ``step`` (steps count from 1)."""
    if P < 1 or H < 1:
        raise ValueError(f"P and H must be at least 1, got P={P}, H={H}")
    return [p for p in range(P) if (step - fragment_offset(p, P, H)) % H == 0]
