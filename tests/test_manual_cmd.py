"""`chaosloco up / inject / down`: parameters, bad input, and `down --all` removing a
run's marked processes and cgroups (scoped to one run id here: the machine is shared)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from harness import cpu_throttle
from harness.errors import ConfigError
from harness.local import RUN_ID_ENV
from harness.local_proc import processes_with_env
from harness.manual_cmd import inject_main, remove_everything
from trainers.config import parse_assignments


def test_params_keep_numbers_as_numbers():
    assert parse_assignments(["latency_ms=120", "direction=upstream", "cpu_share=0.5"], "--param") == {
        "latency_ms": 120, "direction": "upstream", "cpu_share": 0.5}


def test_a_param_without_equals_is_bad_input():
    with pytest.raises(ConfigError, match="--param"):
        parse_assignments(["latency_ms"], "--param")


def test_inject_into_a_folder_without_a_cluster_is_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="cluster.json"):
        inject_main([str(tmp_path), "kill", "learner-0"])


def test_down_all_removes_a_runs_processes_and_cgroups():
    run_id = "t" + uuid.uuid4().hex[:7]
    env = {**os.environ, RUN_ID_ENV: run_id}
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env,
                              start_new_session=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 10
        while len(processes_with_env(RUN_ID_ENV, run_id)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        limiter = cpu_throttle.for_run(run_id)
        limiter.set("learner-0", procs[0].pid, 0.5)
        assert remove_everything(run_id=run_id) == []
        for p in procs:
            assert p.wait(timeout=10) == -9
        assert processes_with_env(RUN_ID_ENV, run_id) == []
        assert not any(g.name == f"chaosloco-{run_id}" for g in cpu_throttle.stale_run_groups())
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.slow
def test_up_inject_down_on_a_real_cluster(tmp_path, capsys):
    import json

    from harness.journal import read_journal
    from harness.local_proc import pid_alive
    from harness.manual_cmd import down_main, up_main
    from trainers.events import read_events

    out = tmp_path / "cluster"
    try:
        assert up_main(["scenarios/quickstart.yaml", "--out", str(out)]) == 0
        assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
        cluster = json.loads((out / "cluster.json").read_text())
        assert set(cluster["nodes"]) == {"toxiproxy", "syncer", "learner-0", "learner-1"}
        assert all(pid_alive(n["pid"]) for n in cluster["nodes"].values())  # still running after `up`
        old = cluster["nodes"]["learner-1"]["pid"]

        assert inject_main([str(out), "kill", "learner-1", "--duration", "0.5"]) == 0
        cluster = json.loads((out / "cluster.json").read_text())
        assert cluster["nodes"]["learner-1"]["pid"] != old and pid_alive(cluster["nodes"]["learner-1"]["pid"])
        assert inject_main([str(out), "latency", "learner-0", "--param", "latency_ms=50"]) == 0
        journal = read_journal(out / "journal.jsonl")
        assert [(r["fault"], r["target"]) for r in journal if r["kind"] == "fault_inject"] == [
            ("kill", "learner-1"), ("latency", "learner-0")]
        assert [r["fault"] for r in journal if r["kind"] == "fault_heal"] == ["kill"]
        deadline = time.monotonic() + 120
        while not any(e.get("ev") == "joined" and e["learner"] == 1 and e["incarnation"] > 0
                      for e in read_events(out / "events.jsonl")):
            assert time.monotonic() < deadline, "the restarted learner never rejoined"
            time.sleep(0.2)
    finally:
        code = down_main([str(out)]) if (out / "cluster.json").exists() else None
    assert code == 0
    run_id = json.loads((out / "cluster.json").read_text())["run_id"]
    assert read_journal(out / "journal.jsonl")[-1] == {**read_journal(out / "journal.jsonl")[-1], "leftovers": []}
    assert processes_with_env(RUN_ID_ENV, run_id) == []
