"""Correctness anchor through the real processes: decoupled mode with H=1, one
fragment, K = all learners, outer SGD lr 1 without momentum, and no overlap (tau=0)
is synchronous parameter averaging. The reference is computed here in-process from
the same model, data and AdamW; the synchronizer's durable global model must match."""
from __future__ import annotations

import pytest
import torch

from tests.trainer_procs import Cluster
from trainers.config import TrainerConfig
from trainers.data import Shard, load_corpus
from trainers.fragments import FragmentMap
from trainers.model import build_model
from trainers.store import DurableStore

STEPS = 8


def reference_average(cfg: TrainerConfig, steps: int) -> torch.Tensor:
    torch.set_num_threads(1)
    models = [build_model(cfg.preset, cfg.seq_len, cfg.seed) for _ in range(cfg.learners)]
    opts = [torch.optim.AdamW(m.parameters(), lr=cfg.inner_lr, weight_decay=cfg.weight_decay) for m in models]
    shards = [Shard(load_corpus(cfg.data), i, cfg.learners, cfg.seed) for i in range(cfg.learners)]
    cursor = 0
    for _ in range(steps):
        for m, opt, shard in zip(models, opts, shards):
            x, y = shard.batch_at(cursor, cfg.batch_size, cfg.seq_len)
            _, loss = m(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        cursor += cfg.batch_size * cfg.seq_len
        with torch.no_grad():  # plain parameter averaging, written out on purpose
            for params in zip(*(m.parameters() for m in models)):
                mean = sum(p.detach() for p in params) / len(params)
                for p in params:
                    p.copy_(mean)
    return FragmentMap.from_model(models[0], 1).flatten(models[0], 0)


@pytest.mark.slow
def test_decoupled_h1_k_all_lr1_no_momentum_equals_parameter_averaging(tmp_path):
    cfg = TrainerConfig(learners=2, fragments=1, sync_every=1, quorum=0, outer_lr=1.0, outer_momentum=0.0,
                        nesterov=False, overlap_steps=0, eval_every_s=600.0, batch_size=4)
    c = Cluster(tmp_path / "run", cfg)
    try:
        c.start_syncer()
        procs = [c.start_learner(i, "--max-steps", str(STEPS)) for i in range(cfg.learners)]
        for i, p in enumerate(procs):
            c.wait(lambda e, i=i: e.get("ev") == "learner_stop" and e.get("learner") == i,
                   what=f"learner {i} done")
    finally:
        c.close()
    merges = [e for e in c.events() if e["ev"] == "merge"]
    assert len(merges) == STEPS and all(len(m["contributors"]) == 2 for m in merges)
    state = DurableStore(c.dir).load_fragment(0)
    assert state.version == STEPS
    expected = reference_average(cfg, STEPS)
    initial = FragmentMap.from_model(build_model("tiny", cfg.seq_len, cfg.seed), 1).flatten(
        build_model("tiny", cfg.seq_len, cfg.seed), 0)
    assert (expected - initial).abs().max() > 1e-3, "training did not move the parameters"
    # One AdamW step moves an element by about inner_lr (3e-3); 1e-5 is float noise
    # (summation order of the merge, amplified a little by Adam's normalisation).
    assert torch.allclose(state.params, expected, atol=1e-5, rtol=0), \
        f"max difference {(state.params - expected).abs().max():.3g}"
