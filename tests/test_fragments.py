"""Fragments: greedy bin-packing with exact assignments, the cap at the tensor count,
flatten/assign round trips on the real model, and the staggered schedule."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from trainers.fragments import FragmentMap, due_fragments, fragment_offset
from trainers.model import build_model


class Sized(nn.Module):
    """A module whose parameters have the given sizes, named in registration order."""

    def __init__(self, sizes: dict[str, int]) -> None:
        super().__init__()
        for name, n in sizes.items():
            self.register_parameter(name, nn.Parameter(torch.arange(n, dtype=torch.float32)))


def test_greedy_bin_packing_exact_assignment():
    # Largest first into the lightest bin: a10->0, b7->1, c5->1 (7<10), d4->0 (10<12),
    # e3->1 (12<14), f1->0 (14<15): bins {a,d,f}=15 and {b,c,e}=15.
    fmap = FragmentMap.from_model(Sized({"f": 1, "a": 10, "e": 3, "b": 7, "d": 4, "c": 5}), 2)
    assert fmap.names == (("f", "a", "d"), ("e", "b", "c"))  # model order within a fragment
    assert fmap.numel == (15, 15)
    assert fmap.total_numel == 30
    assert fmap.fraction(0) == 0.5


def test_ties_break_by_name_then_lowest_bin():
    fmap = FragmentMap.from_model(Sized({"y": 4, "x": 4, "z": 4}), 3)
    assert fmap.names == (("x",), ("y",), ("z",))


def test_fragment_count_capped_at_tensor_count():
    fmap = FragmentMap.from_model(Sized({"a": 3, "b": 2}), 24)
    assert fmap.P == 2
    with pytest.raises(ValueError):
        FragmentMap.from_model(Sized({"a": 3}), 0)


@pytest.mark.parametrize("P", [1, 4, 24])
def test_every_parameter_in_exactly_one_fragment(P):
    model = build_model("small", 64, seed=0)
    fmap = FragmentMap.from_model(model, P)
    placed = [n for names in fmap.names for n in names]
    assert sorted(placed) == sorted(n for n, _ in model.named_parameters())
    assert fmap.total_numel == model.num_params()


def test_fragments_of_similar_size_when_tensors_allow():
    fmap = FragmentMap.from_model(build_model("medium", 64, seed=0), 4)
    assert max(fmap.numel) / min(fmap.numel) < 1.1


def test_split_is_the_same_for_every_process_building_the_model():
    a = FragmentMap.from_model(build_model("small", 64, seed=1), 8)
    b = FragmentMap.from_model(build_model("small", 64, seed=2), 8)
    assert a == b  # depends on shapes and names only


def test_flatten_is_a_copy_and_assign_round_trips():
    model = build_model("tiny", 64, seed=0)
    fmap = FragmentMap.from_model(model, 4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flat = fmap.flatten(model, 2)
    assert flat.dtype == torch.float32 and flat.shape == (fmap.numel[2],)
    flat.add_(1.0)  # a copy: the model is unchanged
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    fmap.assign(model, 2, flat)
    for n, p in model.named_parameters():
        expected = before[n] + 1.0 if n in fmap.names[2] else before[n]
        assert torch.equal(p.detach(), expected), n
    assert torch.equal(fmap.flatten(model, 2), flat)


def test_assign_refuses_the_wrong_length():
    model = build_model("tiny", 64, seed=0)
    fmap = FragmentMap.from_model(model, 4)
    with pytest.raises(ValueError, match="fragment 1"):
        fmap.assign(model, 1, torch.zeros(fmap.numel[1] + 1))


def test_schedule_offsets_and_one_fragment_per_step_when_p_equals_h():
    assert [fragment_offset(p, 4, 24) for p in range(4)] == [0, 6, 12, 18]
    for step in range(1, 100):
        assert len(due_fragments(step, 24, 24)) == 1
    assert due_fragments(24, 24, 24) == [0] and due_fragments(25, 24, 24) == [1]
    assert due_fragments(6, 4, 24) == [1] and due_fragments(7, 4, 24) == []


@pytest.mark.parametrize("P, H", [(1, 1), (1, 5), (4, 24), (24, 24), (7, 3), (5, 12)])
def test_each_fragment_due_exactly_every_h_steps(P, H):
    due_at: dict[int, list[int]] = {p: [] for p in range(P)}
    for step in range(1, 5 * H + 1):
        for p in due_fragments(step, P, H):
            due_at[p].append(step)
    for p, steps in due_at.items():
        assert len(steps) == 5
        assert all(b - a == H for a, b in zip(steps, steps[1:]))
    with pytest.raises(ValueError):
        due_fragments(1, 0, 24)
