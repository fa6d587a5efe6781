"""Durable synchronizer state: exact round trips, and a save interrupted at any point
(an exception, or a process killed between write and rename) never damages the last
good state."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from trainers.store import TMP_PREFIX, DurableStore, FragmentState, StoreCorrupt, atomic_write


def state(version: int, fill: float, momentum: bool = True) -> FragmentState:
    return FragmentState(
        params=torch.arange(10, dtype=torch.float32) * fill,
        momentum=torch.full((10,), fill / 2) if momentum else None,
        version=version,
        data_end={0: 512 * version, 3: 1024},
        merged_keys={"0:0": f"0:0:{version}", "3:1": "3:1:4"},
        tokens_merged=2048 * version,
        extra={"merges": version, "note": "x"},
    )


def assert_same(a: FragmentState, b: FragmentState) -> None:
    assert torch.equal(a.params, b.params)
    assert (a.momentum is None and b.momentum is None) or torch.equal(a.momentum, b.momentum)
    assert (a.version, a.data_end, a.merged_keys, a.tokens_merged, a.extra) == \
           (b.version, b.data_end, b.merged_keys, b.tokens_merged, b.extra)


def test_nothing_saved_loads_as_none(tmp_path):
    assert DurableStore(tmp_path).load() is None
    assert DurableStore(tmp_path).load_meta() is None


def test_reopening_restores_exactly_what_was_saved(tmp_path):
    store = DurableStore(tmp_path)
    written = store.save_fragment(0, state(3, 1.5))
    store.save_fragment(7, state(1, -2.0, momentum=False))
    store.save_meta({"incarnations": {"0": 2, "3": 1}, "run_id": "abc"})
    assert written == store.fragment_path(0).stat().st_size
    assert store.dir == tmp_path / "state"

    snap = DurableStore(tmp_path / "state").load()  # a fresh object, as after a restart
    assert sorted(snap.fragments) == [0, 7]
    assert_same(snap.fragments[0], state(3, 1.5))
    assert_same(snap.fragments[7], state(1, -2.0, momentum=False))
    assert snap.meta == {"incarnations": {"0": 2, "3": 1}, "run_id": "abc"}
    assert isinstance(next(iter(snap.fragments[0].data_end)), int)


def test_newer_save_replaces_older(tmp_path):
    store = DurableStore(tmp_path)
    store.save_fragment(2, state(1, 1.0))
    store.save_fragment(2, state(2, 4.0))
    assert_same(store.load().fragments[2], state(2, 4.0))
    assert [f.name for f in store.dir.iterdir()] == ["fragment-002.safetensors"]


STEPS = ["write", "fsync", "replace"]


@pytest.mark.parametrize("step", STEPS)
def test_save_interrupted_by_an_exception_keeps_the_last_good_state(tmp_path, monkeypatch, step):
    store = DurableStore(tmp_path)
    store.save_fragment(0, state(1, 1.0))
    store.save_meta({"gen": 1})

    def boom(*args):
        raise KeyboardInterrupt  # the harshest interruption: not even an Exception

    monkeypatch.setattr(f"trainers.store.{step}", boom)
    with pytest.raises(KeyboardInterrupt):
        store.save_fragment(0, state(2, 9.0))
    with pytest.raises(KeyboardInterrupt):
        store.save_meta({"gen": 2})
    monkeypatch.undo()
    snap = DurableStore(tmp_path).load()
    assert_same(snap.fragments[0], state(1, 1.0))
    assert snap.meta == {"gen": 1}
    assert not [f for f in store.dir.iterdir() if f.name.startswith(TMP_PREFIX)]


@pytest.mark.parametrize("step", ["write", "replace"])  # mid-data, and data complete but not renamed
def test_process_killed_mid_save_leaves_old_state_and_an_ignored_temp(tmp_path, step):
    store = DurableStore(tmp_path)
    store.save_fragment(0, state(1, 1.0))
    # A real process dies (os._exit: no cleanup, no finally) at this step of saving v2.
    child = textwrap.dedent(f"""
        import os, torch
        from trainers import store as st
        s = st.DurableStore({str(tmp_path)!r})
        st.{step} = lambda *a: os._exit(9)
        s.save_fragment(0, st.FragmentState(params=torch.full((10,), 9.0), version=2))
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    leftovers = [f for f in store.dir.iterdir() if f.name.startswith(TMP_PREFIX)]
    assert len(leftovers) == 1

    assert_same(DurableStore(tmp_path).load().fragments[0], state(1, 1.0))
    assert store.discard_partial() == leftovers
    assert not any(f.name.startswith(TMP_PREFIX) for f in store.dir.iterdir())
    assert_same(DurableStore(tmp_path).load().fragments[0], state(1, 1.0))


def test_atomic_write_syncs_file_and_folder(tmp_path, monkeypatch):
    synced = []

    def record(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        os.fsync(fd)

    monkeypatch.setattr("trainers.store.fsync", record)
    atomic_write(tmp_path / "f.json", b"{}")
    assert len(synced) == 2
    assert os.path.basename(synced[0]).startswith(TMP_PREFIX)  # the data, before the rename
    assert synced[1] == str(tmp_path)  # the folder entry, after it


def test_damaged_file_is_reported_not_guessed(tmp_path):
    store = DurableStore(tmp_path)
    store.save_fragment(0, state(1, 1.0))
    store.fragment_path(0).write_bytes(b"\x10\0\0\0\0\0\0\0garbage garbage")
    with pytest.raises(StoreCorrupt, match="fragment-000"):
        store.load()
    store.meta_path.write_text("{torn")
    with pytest.raises(StoreCorrupt, match="meta.json"):
        store.load_meta()
