"""The training corpus: bytes of real text, a held-out split, disjoint learner shards.

Default corpus: the Python standard library's own ``*.py`` files (about 30 MB on every
machine with Python, no download), read in sorted relative-path order, skipping
``site-packages`` and ``__pycache__``, so every process on every machine with the same
Python sees the same bytes. ``--data PATH`` takes any folder of text (every regular
file below it, sorted, hidden entries skipped) or a single file.

Layout (all positions in bytes = tokens, the model is byte-level):

- the last ``EVAL_FRACTION`` of the corpus (at least ``MIN_EVAL_BYTES``) is the held-out
  eval split; the rest is the training split;
- learner ``m`` of ``M`` owns the contiguous slice ``[m*L//M, (m+1)*L//M)`` of the
  training split, so shards are disjoint by construction;
- a shard is cut into ``W = (len-1) // seq_len`` windows; a learner's **cursor** is the
  number of tokens it has consumed, always a multiple of ``seq_len``; token window
  ``j = cursor // seq_len`` is window ``perm_e[j mod W]`` of epoch ``e = j // W``, where
  ``perm_e`` is a permutation seeded by (seed, learner, epoch). Batches are then
  well mixed, yet ``batch_at(cursor)`` is a pure function: a learner that restarts at
  any cursor continues exactly where it left off, and a merged data range
  ``[start, end)`` names exactly which windows were trained on.

The corpus is read once per process and kept in memory (``load_corpus`` caches it).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sysconfig
from pathlib import Path

import torch

from harness.errors import ConfigError

EVAL_FRACTION = 0.01
MIN_EVAL_BYTES = 4096
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


@dataclasses.dataclass(frozen=True)
class Corpus:
    """All bytes of a corpus as one uint8 tensor; ``train_end`` splits train/eval."""

    data: torch.Tensor
    train_end: int
    source: str
    files: int

    @property
    def train(self) -> torch.Tensor:
        return self.data[: self.train_end]

    @property
    def eval(self) -> torch.Tensor:
        return self.data[self.train_end:]

    def __len__(self) -> int:
        return int(self.data.numel())


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        found.extend(Path(dirpath, f) for f in filenames if f.endswith(".py"))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _folder_files(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
        found.extend(Path(dirpath, f) for f in filenames if not f.startswith("."))
    return sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def _read_all(files: list[Path], max_bytes: int | None) -> bytearray:
    buf = bytearray()
    for path in files:
        if max_bytes is not None and len(buf) >= max_bytes:
            break
        try:
            buf += path.read_bytes()
        except OSError:
            continue  # a file that vanished or is unreadable is simply not part of the corpus
    if max_bytes is not None:
        del buf[max_bytes:]
    return buf


@functools.lru_cache(maxsize=4)
def load_corpus(path: str | None = None, max_bytes: int | None = None) -> Corpus:
    """Reads the corpus (cached per process). ``path`` None means the standard library.

    Raises ConfigError naming ``data`` for a missing path or one holding no bytes.
    """
    if max_bytes is not None and max_bytes < 1:
        raise ConfigError("must be at least 1", key="max_bytes", value=max_bytes)
    if path is None:
        root = stdlib_dir()
        files = _stdlib_files(root)
        source = f"stdlib:{root}"
    else:
        root = Path(path)
        if not root.exists():
            raise ConfigError("data folder does not exist", key="data", value=str(path))
        files = [root] if root.is_file() else _folder_files(root)
        source = str(root)
    buf = _read_all(files, max_bytes)
    if not buf:
        raise ConfigError("data folder holds no text", key="data", value=str(path or root))
    eval_len = max(int(len(buf) * EVAL_FRACTION), MIN_EVAL_BYTES)
    eval_len = min(eval_len, len(buf) // 2)
    data = torch.frombuffer(buf, dtype=torch.uint8)  # shares buf's memory: no second copy
    return Corpus(data=data, train_end=len(buf) - eval_len, source=source, files=len(files))


class Shard:
    """Learner ``learner``'s disjoint part of the training split, read by cursor."""

    def __init__(self, corpus: Corpus, learner: int, learners: int, seed: int = 0) -> None:
        if not 0 <= learner < learners:
            raise ValueError(f"learner {learner} not in 0..{learners - 1}")
        n = corpus.train_end
        self.learner, self.learners, self.seed = learner, learners, seed
        self.start, self.end = learner * n // learners, (learner + 1) * n // learners
        self.bytes = corpus.data[self.start:self.end]
        self._perm_cache: dict[tuple[int, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return self.end - self.start

    def windows(self, seq_len: int) -> int:
        """Windows of ``seq_len`` tokens per epoch."""
        return (len(self) - 1) // seq_len

    def _perm(self, epoch: int, n_windows: int) -> torch.Tensor:
        key = (epoch, n_windows)
        perm = self._perm_cache.get(key)
        if perm is None:
            # Mixing the ids into one seed keeps epochs and learners independent streams.
            gen = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + self.learner) * 1_000_033 + epoch)
            perm = torch.randperm(n_windows, generator=gen)
            # A learner needs one epoch at a time, two across an epoch boundary.
            if len(self._perm_cache) >= 2:
                self._perm_cache.pop(next(iter(self._perm_cache)))
            self._perm_cache[key] = perm
        return perm

    def window_ids(self, cursor: int, count: int, seq_len: int) -> list[int]:
        """Indices (into this shard's windows) of the ``count`` windows at ``cursor``."""
        if cursor < 0 or cursor % seq_len:
            raise ValueError(f"cursor {cursor} is not a non-negative multiple of seq_len {seq_len}")
        n_windows = self.windows(seq_len)
        if n_windows < 1:
            raise ConfigError(f"learner {self.learner}'s shard has {len(self)} bytes, "
                              f"fewer than seq_len+1; use more data or fewer learners",
                              key="data", value=len(self))
        first = cursor // seq_len
        ids = []
        for j in range(first, first + count):
            epoch, k = divmod(j, n_windows)
            ids.append(int(self._perm(epoch, n_windows)[k]))
        return ids

    def batch_at(self, cursor: int, batch_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch a learner trains on at token ``cursor``: x, y of shape
        (batch_size, seq_len), int64, y shifted by one byte. Advances nothing; the
        caller moves its cursor by ``batch_size * seq_len``."""
        starts = torch.tensor(self.window_ids(cursor, batch_size, seq_len)) * seq_len
        idx = starts[:, None] + torch.arange(seq_len + 1)[None, :]
        rows = self.bytes[idx].long()
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


def eval_batches(corpus: Corpus, n: int, batch_size: int, seq_len: int, seed: int
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` fixed batches from the held-out split: same arguments, same batches."""
    split = corpus.eval
    last_start = split.numel() - seq_len - 1
    if last_start < 0:
        raise ConfigError(f"eval split of {split.numel()} bytes is shorter than seq_len+1",
                          key="data", value=corpus.source)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        starts = torch.randint(0, last_start + 1, (batch_size,), generator=gen)
        rows = split[starts[:, None] + torch.arange(seq_len + 1)[None, :]].long()
        out.append((rows[:, :-1].contiguous(), rows[:, 1:].contiguous()))
    return out
