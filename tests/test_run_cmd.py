"""`chaosloco run`: at its edges (bad input is one line and exit 2 with nothing started,
--trainer overrides the mode, the backend factory, the summary), and for real: the
quickstart scenario end to end on the local backend, and a run interrupted by SIGINT
that still heals, tears down and leaves no process of the run behind."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import run_cmd
from harness.cli import main as cli_main
from harness.errors import ConfigError
from harness.journal import read_journal
from harness.local import RUN_ID_ENV
from harness.local_proc import pid_alive, processes_with_env
from harness.schedule import build_schedule
from trainers.config import Mode


def test_missing_scenario_is_bad_input(tmp_path, capsys):
    assert cli_main(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.yaml" in err[0]
    assert not (tmp_path / "out").exists()


def test_bad_flag_is_bad_input(tmp_path):
    assert cli_main(["run", "scenarios/quickstart.yaml", "--backend", "kubernetes"]) == 2


def test_official_toxiproxy_on_the_local_backend_is_refused_before_anything_starts(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["run", "scenarios/quickstart.yaml", "--toxiproxy", "official", "--out", str(out)]) == 2
    assert "--toxiproxy" in capsys.readouterr().err and not out.exists()


def test_no_faults_keeps_the_cluster_and_checks_and_drops_the_schedule():
    full = run_cmd.load(run_cmd.parser().parse_args(["scenarios/kill-restart.yaml"]))
    bare = run_cmd.load(run_cmd.parser().parse_args(["scenarios/kill-restart.yaml", "--no-faults"]))
    assert build_schedule(full, 1) and build_schedule(bare, 1) == []
    assert (bare.trainer, bare.links, bare.checks, bare.duration_s) == (full.trainer, full.links, full.checks,
                                                                       full.duration_s)


def test_trainer_flag_overrides_the_scenarios_mode():
    args = run_cmd.parser().parse_args(["scenarios/kill-restart.yaml", "--trainer", "ddp"])
    scenario = run_cmd.load(args)
    assert scenario.trainer.mode is Mode.DDP and scenario.name == "kill-restart"
    assert run_cmd.load(run_cmd.parser().parse_args(["scenarios/kill-restart.yaml"])).trainer.mode is Mode.DECOUPLED


def test_a_baseline_that_is_not_a_run_folder_is_bad_input(tmp_path):
    args = run_cmd.parser().parse_args(["scenarios/quickstart.yaml", "--baseline", str(tmp_path)])
    with pytest.raises(ConfigError, match="--baseline"):
        run_cmd.load(args)


def test_an_out_folder_holding_a_run_is_refused(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds a run"):
        run_cmd.main(["scenarios/quickstart.yaml", "--out", str(tmp_path)])


def test_backend_factory(tmp_path):
    from harness.journal import Journal
    from harness.local import LocalBackend
    assert isinstance(run_cmd.make_backend("local", Journal(tmp_path / "j")), LocalBackend)
    with pytest.raises(ConfigError):
        run_cmd.make_backend("nomad", Journal(tmp_path / "j"))


def test_summary_names_failed_checks_and_the_reason():
    class Outcome:
        status, reason = "interrupted", "signal SIGINT"
    result = {"scenario": "s", "trainer": "decoupled", "backend": "local", "seed": 1, "verdict": "unknown",
              "goodput": 0.5, "availability_bound": 0.9, "goodput_efficiency": 0.5 / 0.9, "outer_updates": 3,
              "max_global_stall_seconds": None,
              "rejoin_seconds": [{"learner": 1, "to_first_step_s": 2.25, "to_first_merge_s": None}],
              "checks": [{"name": "goodput_efficiency", "passed": False}, {"name": "rejoin", "passed": None}]}
    text = run_cmd.summary(result, Outcome())
    assert "efficiency 0.556" in text and "learner-1 2.2 s / - s" in text
    assert "failed checks: goodput_efficiency" in text and "reason: signal SIGINT" in text


# ---- the real thing: processes, proxy and training on loopback ----------------------

REPO = Path(__file__).resolve().parent.parent


def _chaosloco(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _nothing_of_the_run_left(run_dir: Path) -> None:
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    pids = [r["pid"] for r in read_journal(run_dir / "journal.jsonl") if r["kind"] == "node_start"]
    assert pids and not [p for p in pids if pid_alive(p)]
    assert processes_with_env(RUN_ID_ENV, run_id) == []
    needle = str(run_dir).encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and pid_alive(int(proc.name)):
            try:
                assert needle not in (proc / "cmdline").read_bytes(), f"pid {proc.name} still runs"
            except OSError:
                pass
    assert not Path(f"/sys/fs/cgroup/cpu/chaosloco-{run_id}").exists()


@pytest.mark.slow
def test_quickstart_end_to_end_on_the_local_backend(tmp_path):
    out = tmp_path / "quickstart"
    proc = _chaosloco("run", "scenarios/quickstart.yaml", "--quiet", "--out", str(out))
    stdout, stderr = proc.communicate(timeout=400)
    result = json.loads((out / "result.json").read_text())
    failed = [c for c in result["checks"] if c["passed"] is not True]
    assert proc.returncode == 0, (failed, stderr[-2000:])
    assert stdout.strip().splitlines()[-1] == str(out)
    assert result["status"] == "completed" and result["verdict"] == "pass"
    assert [f["fault"] for f in result["faults"]] == ["kill"] and result["faults"][0]["healed_s"] is not None
    assert result["goodput_efficiency"] >= 0.7 and result["rejoin_seconds"] and result["reconnect_seconds"] == []
    assert all(r["to_first_merge_s"] is not None and r["to_first_merge_s"] <= 30 for r in result["rejoin_seconds"])
    for name in ("run.json", "config.json", "journal.jsonl", "events.jsonl", "logs/syncer.log",
                 "logs/learner-0.log", "logs/toxiproxy.log", "report.html", "junit.xml"):
        assert (out / name).exists(), name
    assert oct((out / "secret").stat().st_mode & 0o777) == "0o600"
    _nothing_of_the_run_left(out)


@pytest.mark.slow
def test_sigint_interrupts_a_real_run_heals_and_leaves_nothing(tmp_path):
    out = tmp_path / "interrupted"
    proc = _chaosloco("run", "scenarios/quickstart.yaml", "--quiet", "--out", str(out))
    try:
        deadline = time.monotonic() + 180
        while not any(r["kind"] == "ready" for r in read_journal(out / "journal.jsonl")):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the cluster never became ready"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr[-2000:]
    journal = read_journal(out / "journal.jsonl")
    assert [r["status"] for r in journal if r["kind"] == "run_end"] == ["interrupted"]
    assert journal[-1]["kind"] == "teardown" and journal[-1]["leftovers"] == []
    assert json.loads((out / "result.json").read_text())["status"] == "interrupted"
    _nothing_of_the_run_left(out)
