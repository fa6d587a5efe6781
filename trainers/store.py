"""The synchronizer's durable state under ``DIR/state/`` (SPEC §3 invariant 4).

One file per fragment, ``fragment-PPP.safetensors``: tensors ``params`` (the global Θ_p)
and ``momentum`` (the outer optimizer's buffer, absent before the first merge), and in
the safetensors metadata, under the key ``chaosloco``, a JSON object with the
fragment's ``version``, ``data_end`` (per learner: end of the last merged data range of
this fragment, in tokens of its shard), ``merged_keys`` (the idempotency keys already
merged, as the caller keys them, e.g. the last key per learner incarnation: enough to
recognise a retry), ``tokens_merged`` and ``extra`` (anything else JSON-able).
Plus ``meta.json``: learner incarnations and run information, a JSON object.

Every file is written atomically: a temporary file in the same folder, fsync, rename
over the old one, fsync the folder. A crash at any point leaves either the old or the
new file, never a torn one; a leftover temporary file (``.tmp-*``) is ignored by
``load`` and removed by ``discard_partial``. Fragments are independent files because
merges are per fragment: a merge makes exactly one fragment file durable before the
learners are acked. Loading reads safetensors and JSON only (no pickle).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
# The three steps of a save are looked up through this module, not ``os.``, so a test
# can break one of them here without breaking the os module of the whole test process.
from os import fsync, replace, write
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from harness.errors import InfraError

META_KEY = "chaosloco"
_FRAGMENT_FILE = re.compile(r"^fragment-(\d{3,})\.safetensors$")
TMP_PREFIX = ".tmp-"


class StoreCorrupt(InfraError):
    """A state file exists but cannot be read back (not a crash artefact: those are
    prevented by atomic writes; this is a damaged disk or a foreign file)."""


@dataclasses.dataclass
class FragmentState:
    params: torch.Tensor                    # 1-D float32 global fragment
    momentum: torch.Tensor | None = None    # outer momentum buffer, None before first merge
    version: int = 0
    data_end: dict[int, int] = dataclasses.field(default_factory=dict)
    merged_keys: dict[str, str] = dataclasses.field(default_factory=dict)
    tokens_merged: int = 0
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class StoreSnapshot:
    fragments: dict[int, FragmentState]
    meta: dict[str, Any] | None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> int:
    """Writes ``data`` to ``path`` so that a crash leaves the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[write(fd, view):]
            fsync(fd)  # the data is on disk before the rename makes it visible
        finally:
            os.close(fd)
        replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return len(data)


class DurableStore:
    """Reads and writes ``<run_dir>/state/``; pass the run folder or the state folder
    itself (a path already named ``state`` is used as is)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        d = Path(directory)
        self.dir = d if d.name == "state" else d / "state"

    def fragment_path(self, p: int) -> Path:
        return self.dir / f"fragment-{p:03d}.safetensors"

    @property
    def meta_path(self) -> Path:
        return self.dir / "meta.json"

    def _ensure_dir(self) -> None:
        if not self.dir.is_dir():
            self.dir.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.dir.parent)

    def save_fragment(self, p: int, state: FragmentState) -> int:
        """Makes fragment p's state durable; returns the bytes written."""
        self._ensure_dir()
        tensors = {"params": state.params.detach().float().contiguous()}
        if state.momentum is not None:
            tensors["momentum"] = state.momentum.detach().float().contiguous()
        meta = {
            "fragment": p,
            "version": state.version,
            "data_end": {str(k): v for k, v in state.data_end.items()},
            "merged_keys": state.merged_keys,
            "tokens_merged": state.tokens_merged,
            "extra": state.extra,
        }
        blob = st_save(tensors, metadata={META_KEY: json.dumps(meta, separators=(",", ":"))})
        return atomic_write(self.fragment_path(p), blob)

    def save_meta(self, meta: Mapping[str, Any]) -> int:
        self._ensure_dir()
        return atomic_write(self.meta_path, (json.dumps(dict(meta), indent=1) + "\n").encode())

    def load_meta(self) -> dict[str, Any] | None:
        try:
            text = self.meta_path.read_text()
        except FileNotFoundError:
            return None
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as e:
            raise StoreCorrupt(f"{self.meta_path}: not JSON: {e}") from e
        if not isinstance(meta, dict):
            raise StoreCorrupt(f"{self.meta_path}: not a JSON object")
        return meta

    def load_fragment(self, p: int) -> FragmentState | None:
        path = self.fragment_path(p)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                raw_meta = (fh.metadata() or {}).get(META_KEY)
                keys = set(fh.keys())
                params = fh.get_tensor("params") if "params" in keys else None
                momentum = fh.get_tensor("momentum") if "momentum" in keys else None
            meta = json.loads(raw_meta) if raw_meta else None
        except (SafetensorError, OSError, json.JSONDecodeError) as e:
            raise StoreCorrupt(f"{path}: cannot be read: {e}") from e
        if params is None or not isinstance(meta, dict):
            raise StoreCorrupt(f"{path}: missing params or {META_KEY} metadata")
        return FragmentState(
            params=params,
            momentum=momentum,
            version=int(meta["version"]),
            data_end={int(k): int(v) for k, v in meta.get("data_end", {}).items()},
            merged_keys=dict(meta.get("merged_keys", {})),
            tokens_merged=int(meta.get("tokens_merged", 0)),
            extra=dict(meta.get("extra", {})),
        )

    def fragment_ids(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        ids = [int(m.group(1)) for f in self.dir.iterdir() if (m := _FRAGMENT_FILE.match(f.name))]
        return sorted(ids)

    def load(self) -> StoreSnapshot | None:
        """Everything saved, or None when nothing durable exists yet (a first start)."""
        meta = self.load_meta()
        fragments = {}
        for p in self.fragment_ids():
            state = self.load_fragment(p)
            if state is not None:
                fragments[p] = state
        if meta is None and not fragments:
            return None
        return StoreSnapshot(fragments=fragments, meta=meta)

    def discard_partial(self) -> list[Path]:
        """Removes temporary files left by a crash mid-save; returns what it removed."""
        if not self.dir.is_dir():
            return []
        removed = []
        for f in self.dir.iterdir():
            if f.name.startswith(TMP_PREFIX):
                f.unlink(missing_ok=True)
                removed.append(f)
        return removed
