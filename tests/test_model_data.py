"""The byte-level GPT and the corpus: sizes, deterministic init, real training on real
text, disjoint shards, exact resume at any cursor, the held-out split, bad data folders."""
from __future__ import annotations

import hashlib
import math
import subprocess
import sys

import pytest
import torch

from harness.errors import ConfigError
from trainers.data import MIN_EVAL_BYTES, Shard, eval_batches, load_corpus
from trainers.model import build_model


def _param_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("preset, low, high", [("tiny", 50_000, 150_000),
                                                ("small", 700_000, 1_500_000),
                                                ("medium", 5_000_000, 10_000_000)])
def test_preset_sizes(preset, low, high):
    assert low <= build_model(preset, 64, seed=0).num_params() <= high


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="preset"):
        build_model("huge", 64, seed=0)


def test_same_seed_same_parameters_and_global_rng_untouched():
    rng_before = torch.get_rng_state()
    a, b = build_model("tiny", 64, seed=7), build_model("tiny", 64, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert _param_digest(a) == _param_digest(b)
    assert _param_digest(a) != _param_digest(build_model("tiny", 64, seed=8))


def test_same_seed_same_parameters_in_another_process():
    code = ("import hashlib,torch;from trainers.model import build_model;h=hashlib.sha256()\n"
            "for n,p in build_model('tiny',64,seed=7).named_parameters():\n"
            " h.update(n.encode());h.update(p.detach().numpy().tobytes())\n"
            "print(h.hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == _param_digest(build_model("tiny", 64, seed=7))


def test_forward_shapes_and_initial_loss_near_uniform():
    model = build_model("tiny", 32, seed=0)
    gen = torch.Generator().manual_seed(0)
    x, targets = torch.randint(0, 256, (2, 3, 32), generator=gen)
    logits, loss = model(x, targets)
    assert logits.shape == (3, 32, 256)
    assert abs(float(loss.detach()) - math.log(256)) < 0.1  # small init: close to a uniform guess
    assert model(x)[1] is None
    with pytest.raises(ValueError):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_tied_embedding_is_one_parameter():
    model = build_model("tiny", 64, seed=0)
    names = [n for n, _ in model.named_parameters()]
    assert "wte.weight" in names and "head.weight" not in names
    assert model.head.weight is model.wte.weight


def test_real_training_on_stdlib_lowers_loss():
    torch.set_num_threads(1)
    model = build_model("tiny", 64, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    corpus = load_corpus()
    shard = Shard(corpus, 0, 2)
    held_out = eval_batches(corpus, 2, 8, 64, seed=0)

    def eval_loss() -> float:
        with torch.no_grad():
            return sum(float(model(x, y)[1]) for x, y in held_out) / len(held_out)

    before = eval_loss()
    for step in range(60):
        x, y = shard.batch_at(step * 8 * 64, 8, 64)
        loss = model(x, y)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < before - 1.0, (before, after)  # ~5.5 -> ~3.5 on Python source


# --- corpus ---------------------------------------------------------------------

def test_stdlib_corpus_is_large_split_and_cached():
    corpus = load_corpus()
    assert len(corpus) > 10_000_000
    assert corpus.files > 500
    assert corpus.source.startswith("stdlib:")
    eval_len = len(corpus) - corpus.train_end
    assert eval_len == max(len(corpus) // 100, MIN_EVAL_BYTES)
    assert load_corpus() is corpus  # read once per process
    assert b"def " in bytes(corpus.data[:200_000].numpy())


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)


def test_data_folder_read_sorted_hidden_skipped(tmp_path):
    _write(tmp_path / "b.txt", b"B" * 10)
    _write(tmp_path / "a" / "z.txt", b"Z" * 5)
    _write(tmp_path / ".hidden", b"H" * 5)
    _write(tmp_path / ".git" / "x", b"G" * 5)
    _write(tmp_path / "c.md", b"C" * 20)
    corpus = load_corpus(str(tmp_path))
    assert bytes(corpus.data.numpy()) == b"Z" * 5 + b"B" * 10 + b"C" * 20
    assert corpus.files == 3
    assert corpus.train_end == len(corpus) - len(corpus) // 2  # tiny corpus: eval capped at half


def test_max_bytes_caps_the_corpus(tmp_path):
    _write(tmp_path / "a.txt", b"a" * 100)
    _write(tmp_path / "b.txt", b"b" * 100)
    assert bytes(load_corpus(str(tmp_path), max_bytes=150).data.numpy()) == b"a" * 100 + b"b" * 50


def test_single_file_is_a_corpus(tmp_path):
    _write(tmp_path / "one.txt", b"hello world")
    assert bytes(load_corpus(str(tmp_path / "one.txt")).data.numpy()) == b"hello world"


def test_missing_data_folder_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data: data folder does not exist.*nope"):
        load_corpus(str(tmp_path / "nope"))


def test_empty_data_folder_names_the_key(tmp_path):
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty" / "zero.txt", b"")
    with pytest.raises(ConfigError, match="data: data folder holds no text"):
        load_corpus(str(tmp_path / "empty"))


# --- shards ---------------------------------------------------------------------

def test_shards_partition_the_training_split():
    corpus = load_corpus()
    shards = [Shard(corpus, m, 3) for m in range(3)]
    assert shards[0].start == 0 and shards[-1].end == corpus.train_end
    for a, b in zip(shards, shards[1:]):
        assert a.end == b.start
    with pytest.raises(ValueError):
        Shard(corpus, 3, 3)


def _small_corpus(tmp_path, n_bytes=20_000):
    # Distinct byte pattern so every window's origin can be located exactly.
    data = bytes((i * 7 + i // 256) % 251 for i in range(n_bytes))
    _write(tmp_path / "text.txt", data)
    return load_corpus(str(tmp_path))


def test_batch_rows_are_shard_windows_and_y_is_shifted(tmp_path):
    corpus = _small_corpus(tmp_path)
    shard = Shard(corpus, 1, 2, seed=3)
    T = 16
    x, y = shard.batch_at(5 * T, 4, T)
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (4, T)
    ids = shard.window_ids(5 * T, 4, T)
    for row, w in enumerate(ids):
        window = shard.bytes[w * T: w * T + T + 1].long()
        assert torch.equal(x[row], window[:-1]) and torch.equal(y[row], window[1:])
        assert shard.start + w * T + T + 1 <= shard.end  # never reads into the next shard


def test_every_window_once_per_epoch_and_epochs_differ(tmp_path):
    corpus = _small_corpus(tmp_path)
    shard = Shard(corpus, 0, 2, seed=1)
    T = 32
    W = shard.windows(T)
    epoch0 = shard.window_ids(0, W, T)
    epoch1 = shard.window_ids(W * T, W, T)
    assert sorted(epoch0) == sorted(epoch1) == list(range(W))
    assert epoch0 != epoch1
    # wrap-around inside a batch: the cursor keeps increasing, the position wraps
    assert shard.window_ids((W - 1) * T, 2, T) == [epoch0[-1], epoch1[0]]


def test_resume_at_any_cursor_gives_the_same_stream(tmp_path):
    corpus = _small_corpus(tmp_path)
    B, T = 4, 16
    run = Shard(corpus, 0, 1, seed=5)
    straight = [run.batch_at(step * B * T, B, T)[0] for step in range(40)]
    resumed = Shard(corpus, 0, 1, seed=5)  # a restarted learner: fresh object, cursor 23 steps in
    again = [resumed.batch_at(step * B * T, B, T)[0] for step in range(23, 40)]
    assert all(torch.equal(a, b) for a, b in zip(straight[23:], again))


def test_learners_get_different_streams_and_cursor_must_be_aligned(tmp_path):
    corpus = _small_corpus(tmp_path)
    a, b = Shard(corpus, 0, 2), Shard(corpus, 1, 2)
    assert not torch.equal(a.batch_at(0, 2, 16)[0], b.batch_at(0, 2, 16)[0])
    with pytest.raises(ValueError, match="multiple of seq_len"):
        a.batch_at(5, 2, 16)


def test_shard_too_small_is_a_config_error(tmp_path):
    _write(tmp_path / "t.txt", b"x" * 40)
    corpus = load_corpus(str(tmp_path))
    with pytest.raises(ConfigError, match="data"):
        Shard(corpus, 0, 4).batch_at(0, 1, 16)


def test_eval_batches_deterministic_and_from_the_held_out_split(tmp_path):
    _write(tmp_path / "a.txt", b"a" * 50_000)
    _write(tmp_path / "b.txt", b"b" * 5_000)  # eval = last 4096 bytes: inside b.txt
    corpus = load_corpus(str(tmp_path))
    first = eval_batches(corpus, 3, 4, 32, seed=9)
    second = eval_batches(corpus, 3, 4, 32, seed=9)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(first, second))
    for x, y in first:
        assert x.shape == (4, 32)
        assert bool((x == ord("b")).all()) and bool((y == ord("b")).all())
    other = eval_batches(load_corpus(), 1, 4, 32, seed=10)[0][0]
    assert not torch.equal(eval_batches(load_corpus(), 1, 4, 32, seed=9)[0][0], other)
