"""Merge maths with exact values: token weights, the outer gradient against the current
global fragment, radial averaging, the Nesterov outer step against torch's SGD, update
checks, and the correctness anchor (lr 1, momentum 0 = parameter averaging)."""
from __future__ import annotations

import math

import pytest
import torch

from trainers.data import Shard, load_corpus
from trainers.fragments import FragmentMap
from trainers.merge import (Contribution, MergeRule, NesterovOuter, check_update, embedding_ranges,
                            merge_weights, outer_gradient)
from trainers.model import build_model


def c(learner, values, tokens=512, steps=1):
    return Contribution(learner, torch.tensor(values, dtype=torch.float32), tokens, steps)


def test_weights_are_tokens_times_tokens_per_step_normalised():
    # raw: 100*100/10 = 1000 and 300*300/10 = 9000
    assert merge_weights([c(0, [0.0], 100, 10), c(1, [0.0], 300, 10)]) == pytest.approx([0.1, 0.9])
    # same tokens, fewer steps (bigger batches) weigh more: 400*400/2 vs 400*400/8
    assert merge_weights([c(0, [0.0], 400, 2), c(1, [0.0], 400, 8)]) == pytest.approx([0.8, 0.2])


def test_no_tokens_weigh_nothing_and_all_empty_count_equally():
    assert merge_weights([c(0, [0.0], 0, 0), c(1, [0.0], 64, 1)]) == [0.0, 1.0]
    assert merge_weights([c(0, [0.0], 0, 0), c(1, [0.0], 0, 0)]) == [0.5, 0.5]
    with pytest.raises(ValueError):
        merge_weights([])


def test_outer_gradient_is_weighted_delta_against_current_global():
    global_p = torch.tensor([1.0, 2.0])
    contribs = [c(0, [0.0, 2.0], 100, 10), c(1, [1.0, 0.0], 300, 10)]
    # deltas (1, 0) and (0, 2); weights 0.1, 0.9
    assert torch.allclose(outer_gradient(global_p, contribs), torch.tensor([0.1, 1.8]))
    # against a newer global (moved since the learners pulled), the deltas are longer
    assert torch.allclose(outer_gradient(global_p + 1, contribs), torch.tensor([1.1, 2.8]))


def test_outer_gradient_refuses_a_wrong_shape():
    with pytest.raises(ValueError, match="learner 3"):
        outer_gradient(torch.zeros(2), [c(3, [0.0, 0.0, 0.0])])


def test_radial_keeps_mean_norm_and_averages_direction():
    global_p = torch.zeros(2)
    contribs = [c(0, [-2.0, 0.0]), c(1, [0.0, -4.0])]  # deltas (2,0) and (0,4), equal weight
    radial = outer_gradient(global_p, contribs, MergeRule.RADIAL)
    expected = 3.0 * torch.tensor([1.0, 1.0]) / math.sqrt(2)  # mean norm 3, direction (1,1)/√2
    assert torch.allclose(radial, expected)
    weighted = outer_gradient(global_p, contribs, MergeRule.WEIGHTED)
    assert torch.allclose(weighted, torch.tensor([1.0, 2.0]))
    assert float(radial.norm()) > float(weighted.norm())  # plain averaging shrinks orthogonal deltas


def test_radial_with_one_learner_is_its_delta_and_cancelling_deltas_give_zero():
    assert torch.equal(outer_gradient(torch.zeros(2), [c(0, [-1.0, 3.0])], MergeRule.RADIAL),
                       torch.tensor([1.0, -3.0]))
    cancel = outer_gradient(torch.zeros(2), [c(0, [1.0, 1.0]), c(1, [-1.0, -1.0])], MergeRule.RADIAL)
    assert torch.equal(cancel, torch.zeros(2))


def test_radial_leaves_plain_ranges_weighted():
    global_p = torch.zeros(4)
    contribs = [c(0, [-2.0, 0.0, -1.0, 0.0]), c(1, [0.0, -4.0, 0.0, -3.0])]
    out = outer_gradient(global_p, contribs, MergeRule.RADIAL, plain_ranges=[(2, 4)])
    assert torch.allclose(out[2:], torch.tensor([0.5, 1.5]))  # plain weighted mean
    assert torch.allclose(out[:2], 3.0 * torch.tensor([1.0, 1.0]) / math.sqrt(2))


@pytest.mark.parametrize("nesterov", [True, False])
def test_outer_step_matches_torch_sgd(nesterov):
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(6, generator=gen)
    deltas = [torch.randn(6, generator=gen) for _ in range(5)]
    ref = torch.nn.Parameter(start.clone())
    sgd = torch.optim.SGD([ref], lr=0.7, momentum=0.9, nesterov=nesterov)
    outer = NesterovOuter(lr=0.7, momentum=0.9, nesterov=nesterov)
    mine = start.clone()
    for d in deltas:
        ref.grad = d.clone()
        sgd.step()
        mine = outer.step(0, mine, d)
        assert torch.allclose(mine, ref.detach(), atol=1e-6)
    assert torch.allclose(outer.momentum_buffer(0), sgd.state[ref]["momentum_buffer"], atol=1e-6)


def test_outer_step_exact_values_and_leaves_input_alone():
    outer = NesterovOuter(lr=0.5, momentum=0.9)
    theta = torch.tensor([1.0])
    new = outer.step(0, theta, torch.tensor([1.0]))
    # buf = 1; update = 1 + 0.9*1 = 1.9; theta = 1 - 0.5*1.9
    assert torch.allclose(new, torch.tensor([0.05]))
    assert torch.equal(theta, torch.tensor([1.0]))
    new = outer.step(0, new, torch.tensor([1.0]))
    # buf = 0.9*1 + 1 = 1.9; update = 1 + 0.9*1.9 = 2.71
    assert torch.allclose(new, torch.tensor([0.05 - 0.5 * 2.71]))


def test_momentum_buffers_are_per_fragment():
    shared = NesterovOuter(lr=0.7, momentum=0.9)
    alone = [NesterovOuter(lr=0.7, momentum=0.9) for _ in range(2)]
    thetas = [torch.zeros(3), torch.ones(3)]
    solo = [t.clone() for t in thetas]
    for i in range(6):
        p = i % 2
        d = torch.full((3,), float(i + 1))
        thetas[p] = shared.step(p, thetas[p], d)
        solo[p] = alone[p].step(0, solo[p], d)
    assert all(torch.allclose(a, b) for a, b in zip(thetas, solo))
    shared.set_momentum_buffer(0, None)
    assert shared.momentum_buffer(0) is None and shared.momentum_buffer(1) is not None


def test_anchor_lr1_momentum0_is_token_weighted_averaging():
    global_p = torch.tensor([0.0, 0.0, 0.0])
    contribs = [c(0, [1.0, 2.0, 3.0], tokens=512, steps=1), c(1, [5.0, 6.0, 7.0], tokens=1536, steps=3)]
    outer = NesterovOuter(lr=1.0, momentum=0.0)
    merged = outer.step(0, global_p, outer_gradient(global_p, contribs))
    # same batch size (512 tokens/step): weights proportional to tokens, 1/4 and 3/4
    assert torch.allclose(merged, 0.25 * contribs[0].params + 0.75 * contribs[1].params)


def test_anchor_on_real_models_trained_on_real_shards():
    """Two learners train the real model from the same init; merging every fragment
    with lr 1 and momentum 0 gives exactly the average of their parameters."""
    torch.set_num_threads(1)
    corpus = load_corpus()
    init = build_model("tiny", 32, seed=0)
    fmap = FragmentMap.from_model(init, 4)
    learners = []
    for m in range(2):
        model = build_model("tiny", 32, seed=0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        shard = Shard(corpus, m, 2)
        for step in range(3):
            loss = model(*shard.batch_at(step * 4 * 32, 4, 32))[1]
            opt.zero_grad()
            loss.backward()
            opt.step()
        learners.append(model)
    outer = NesterovOuter(lr=1.0, momentum=0.0)
    merged = build_model("tiny", 32, seed=0)
    for p in range(fmap.P):
        global_p = fmap.flatten(init, p)
        contribs = [Contribution(m, fmap.flatten(model, p), tokens=3 * 128, steps=3)
                    for m, model in enumerate(learners)]
        fmap.assign(merged, p, outer.step(p, global_p, outer_gradient(global_p, contribs)))
    learner_params = [dict(model.named_parameters()) for model in learners]
    moved = 0
    for name, param in merged.named_parameters():
        mean = (learner_params[0][name] + learner_params[1][name]) / 2
        assert torch.allclose(param, mean, atol=1e-6), name
        moved += int(not torch.equal(param, dict(init.named_parameters())[name]))
    assert moved > 0


def test_check_update_nan_inf_norm_and_ok():
    g = torch.ones(100)  # norm 10, bound 10 * 10 = 100
    assert check_update(g, g + 0.1, 10.0) is None
    assert check_update(g, torch.full((100,), float("nan")), 10.0) == "nan"
    bad = g.clone()
    bad[3] = float("inf")
    assert check_update(g, bad, 10.0) == "nan"
    assert check_update(g, g + 9.9, 10.0) is None  # |delta| = 99 <= 100
    assert check_update(g, g + 10.1, 10.0) == "norm"  # |delta| = 101
    assert check_update(g, torch.ones(99), 10.0) == "malformed"


def test_check_update_floor_for_zero_fragments():
    zeros = torch.zeros(100)  # eps = 0.02 * 10 = 0.2, bound 10 * 0.2 = 2
    assert check_update(zeros, torch.full((100,), 0.19), 10.0) is None  # norm 1.9
    assert check_update(zeros, torch.full((100,), 0.21), 10.0) == "norm"  # norm 2.1


def test_embedding_ranges_locate_embeddings_in_the_flat_fragment():
    model = build_model("tiny", 64, seed=0)
    with torch.no_grad():  # distinct values, so a slice can only match its own tensor
        model.wte.weight.copy_(torch.arange(model.wte.weight.numel()).view_as(model.wte.weight))
        model.wpe.weight.fill_(-1.0)
    fmap = FragmentMap.from_model(model, 4)
    wanted = {"wte": model.wte.weight.detach().reshape(-1), "wpe": model.wpe.weight.detach().reshape(-1)}
    found = []
    for p in range(fmap.P):
        flat = fmap.flatten(model, p)
        for start, end in embedding_ranges(fmap, p):
            found.extend(k for k, t in wanted.items() if torch.equal(flat[start:end], t))
    assert sorted(found) == ["wpe", "wte"]


def test_fragment_merges_with_outer_nesterov_train_the_real_model():
    """The building blocks together, in one process: two learners on their own shards,
    P=4 fragments on the staggered schedule (H=8), each due fragment merged with the
    DiLoCo outer optimizer (lr 0.7, Nesterov 0.9) and written back to both learners.
    The global model's held-out loss must fall as a single learner's would."""
    from trainers.data import eval_batches
    from trainers.fragments import due_fragments

    torch.set_num_threads(1)
    corpus = load_corpus()
    B, T, H = 8, 64, 8
    global_model = build_model("tiny", T, seed=0)
    fmap = FragmentMap.from_model(global_model, 4)
    learners = [build_model("tiny", T, seed=0) for _ in range(2)]
    opts = [torch.optim.AdamW(m.parameters(), lr=3e-3) for m in learners]
    shards = [Shard(corpus, m, 2) for m in range(2)]
    outer = NesterovOuter(lr=0.7, momentum=0.9)
    since = [[0] * fmap.P for _ in learners]  # tokens since each fragment's last sync
    held_out = eval_batches(corpus, 2, B, T, seed=0)

    def eval_loss() -> float:
        with torch.no_grad():
            return sum(float(global_model(x, y)[1]) for x, y in held_out) / len(held_out)

    before = eval_loss()
    for step in range(1, 65):
        for m, (model, opt, shard) in enumerate(zip(learners, opts, shards)):
            loss = model(*shard.batch_at((step - 1) * B * T, B, T))[1]
            opt.zero_grad()
            loss.backward()
            opt.step()
            since[m] = [s + B * T for s in since[m]]
        for p in due_fragments(step, fmap.P, H):
            global_p = fmap.flatten(global_model, p)
            contribs = [Contribution(m, fmap.flatten(model, p), since[m][p], since[m][p] // (B * T))
                        for m, model in enumerate(learners)]
            assert all(check_update(global_p, c.params, 10.0) is None for c in contribs)
            merged = outer.step(p, global_p, outer_gradient(global_p, contribs))
            for m, model in enumerate(learners):
                fmap.assign(model, p, merged)
                since[m][p] = 0
            fmap.assign(global_model, p, merged)
    after = eval_loss()
    assert after < before - 1.0, (before, after)
