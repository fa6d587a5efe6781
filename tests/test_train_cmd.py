"""``chaosloco train``: a real local cluster trains, writes its summary, and passes the
invariant checker; the synchronous modes merge only when every learner is in; bad
input is one line and exit 2; both trainer entry points answer --help."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.cli import main as cli_main
from trainers.events import read_events

SUMMARY_KEYS = {"mode", "learners", "tokens_merged", "outer_updates", "wire_bytes", "eval_loss_start",
                "eval_loss_end", "duration_s"}


@pytest.mark.slow
def test_decoupled_two_learners_loss_falls_and_invariants_pass(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli_main(["train", "--learners", "2", "--mode", "decoupled", "--duration", "15", "--out", str(out),
                     "--set", "eval_every_s=5.0"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "invariants: pass" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["mode"] == "decoupled" and summary["learners"] == 2
    assert summary["eval_loss_end"] <= 0.8 * summary["eval_loss_start"], summary
    assert summary["learners_merged"] == [0, 1]
    assert summary["outer_updates"] > 0 and summary["tokens_merged"] > 0 and summary["wire_bytes"] > 0
    events = read_events(out / "events.jsonl")
    assert {e["src"] for e in events} == {"syncer", "learner-0", "learner-1"}
    assert [e["reason"] for e in events if e["ev"] == "learner_stop"] == ["stopped", "stopped"]
    assert sum(1 for e in events if e["ev"] == "syncer_stop") == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "diloco"])
def test_synchronous_modes_merge_with_every_learner(tmp_path, mode):
    out = tmp_path / mode
    code = cli_main(["train", "--learners", "2", "--mode", mode, "--duration", "5", "--out", str(out),
                     "--set", "sync_every=4", "--set", "eval_every_s=60.0"])
    assert code == 0
    events = read_events(out / "events.jsonl")
    merges = [e for e in events if e["ev"] == "merge"]
    assert len(merges) >= 3
    # A barrier: every merge holds both learners, one fragment = the whole model.
    assert all(sorted(c["learner"] for c in m["contributors"]) == [0, 1] for m in merges)
    assert {m["fragment"] for m in merges} == {0} and merges[0]["fraction"] == 1.0
    steps = {c["steps"] for m in merges for c in m["contributors"]}
    assert steps == ({1} if mode == "ddp" else {4})


def test_bad_set_is_one_line_exit_2(tmp_path, capsys):
    code = cli_main(["train", "--learners", "2", "--mode", "decoupled", "--duration", "1",
                     "--out", str(tmp_path / "x"), "--set", "outer_lr=-1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "outer_lr" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("module", ["trainers.syncer", "trainers.learner"])
def test_entry_points_answer_help(module):
    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--run-dir" in r.stdout
