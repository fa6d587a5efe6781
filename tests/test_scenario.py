"""Scenario parsing: every mistake is one line naming file, key path and value; the library parses."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from harness.backend import LinkSpec
from harness.cli import main as cli_main
from harness.errors import ConfigError
from harness.model import Distribution, FaultKind
from harness.scenario import load_scenario, parse_scenario
from harness.schedule import build_schedule
from trainers.config import Mode

LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"
EXPECTED_LIBRARY = {"quickstart", "kill-restart", "partition", "partition-ip", "slow-links",
                    "stragglers", "syncer-crash", "corrupt-update", "mixed-hardware"}

VALID = {
    "name": "t",
    "duration_s": 60,
    "cluster": {"learners": 4, "mode": "decoupled", "preset": "tiny",
                "cpu_shares": [1, 1, 0.5, 0.5], "trainer": {"sync_every": 12, "quorum": 1}},
    "links": {"default": {"latency_ms": 20, "bandwidth_kbps": 1000},
              "per_learner": {"learner-3": {"latency_ms": 100}}},
    "faults": {
        "events": [
            {"at_s": 5, "kind": "kill", "target": "learner-1", "duration_s": 3},
            {"at_s": 10, "kind": "latency", "target": "learner-2", "duration_s": 5, "latency_ms": 200},
            {"at_s": 12, "kind": "syncer_crash", "duration_s": 2},
        ],
        "random": [{"kind": "pause", "targets": "learners", "mtbf_s": 30,
                    "duration": {"uniform": [1, 3]}, "start_s": 5, "end_s": 50}],
    },
    "checks": {"goodput_efficiency_min": 0.85, "rejoin_max_s": 30, "invariants": True},
}


def write(tmp_path: Path, data, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def error_for(tmp_path: Path, mutate) -> ConfigError:
    data = copy.deepcopy(VALID)
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{path}: ")
    return info.value


def test_valid_scenario_becomes_typed_objects(tmp_path):
    s = load_scenario(write(tmp_path, VALID))
    assert s.name == "t" and s.duration_s == 60.0 and s.seed == 0
    assert s.trainer.learners == 4 and s.trainer.mode is Mode.DECOUPLED and s.trainer.sync_every == 12
    assert s.cpu_shares == (1.0, 1.0, 0.5, 0.5)
    assert s.links == (LinkSpec(20.0, 0.0, 1000.0),) * 3 + (LinkSpec(100.0, 0.0, 1000.0),)
    kill, latency, crash = s.timed
    assert (kill.fault_id, kill.kind, kill.target, kill.duration_s) == ("f000-kill-learner-1", FaultKind.KILL, "learner-1", 3.0)
    assert dict(latency.params) == {"latency_ms": 200.0, "jitter_ms": 0.0, "direction": "both", "toxicity": 1.0}
    assert (crash.target, crash.fault_id) == ("syncer", "f002-syncer_crash-syncer")
    (pause,) = s.random
    assert pause.targets == ("learner-0", "learner-1", "learner-2", "learner-3")
    assert pause.duration == Distribution("uniform", low=1.0, high=3.0) and pause.end_s == 50.0
    assert s.checks.goodput_efficiency_min == 0.85 and s.checks.max_stall_s is None
    assert s.text == yaml.safe_dump(VALID, sort_keys=False) and s.path is not None


def _set(path: str, value):
    """A mutation that sets (or with value=DELETE removes) a dotted key path."""
    def mutate(data):
        node, parts = data, path.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node[p]
        last = parts[-1]
        if value is DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return mutate


DELETE = object()

CASES = [
    # (mutation, key path in the message, words in the message, value shown)
    (_set("colour", "red"), "colour", "unknown key", "'red'"),
    (_set("duration_s", DELETE), "duration_s", "missing required key", None),
    (_set("duration_s", "long"), "duration_s", "must be a number", "'long'"),
    (_set("duration_s", True), "duration_s", "must be a number", "True"),
    (_set("duration_s", -1), "duration_s", "must be > 0", "-1"),
    (_set("seed", 1.5), "seed", "must be an integer", "1.5"),
    (_set("name", "a b"), "name", "must start with", "'a b'"),
    (_set("cluster.learners", 0), "cluster.learners", "must be at least 1", "0"),
    (_set("cluster.learners", DELETE), "cluster.learners", "missing required key", None),
    (_set("cluster.mode", "async"), "cluster.mode", "must be one of decoupled, diloco, ddp", "'async'"),
    (_set("cluster.preset", "huge"), "cluster.preset", "must be one of tiny", "'huge'"),
    (_set("cluster.gpus", 2), "cluster.gpus", "unknown key", "2"),
    (_set("cluster.trainer.sync_evry", 12), "cluster.trainer.sync_evry", "unknown key", "12"),
    (_set("cluster.trainer.sync_every", "often"), "cluster.trainer.sync_every", "must be int", "'often'"),
    (_set("cluster.trainer.quorum", 9), "cluster.trainer.quorum", "must be between 0 and learners", "9"),
    (_set("cluster.trainer.learners", 3), "cluster.trainer.learners", "set it as cluster.learners", "3"),
    (_set("cluster.cpu_shares", [1, 1]), "cluster.cpu_shares", "one share per learner", "[1, 1]"),
    (_set("cluster.cpu_shares.2", 0), "cluster.cpu_shares[2]", "must be > 0", "0"),
    (_set("cluster.cpu_shares.2", 2), "cluster.cpu_shares[2]", "must be <= 1", "2"),
    (_set("links.default.latency_ms", -5), "links.default.latency_ms", "must be >= 0", "-5"),
    (_set("links.default.loss", 0.1), "links.default.loss", "unknown key", "0.1"),
    (_set("links.per_learner", {"learner-9": {}}), "links.per_learner.learner-9", "unknown learner", "'learner-9'"),
    (_set("links.per_learner.learner-3.bandwidth_kbps", 0), "links.per_learner.learner-3.bandwidth_kbps", "must be > 0", "0"),
    (_set("faults.storms", []), "faults.storms", "unknown key", "[]"),
    (_set("faults.events", {"at_s": 1}), "faults.events", "must be a list", None),
    (_set("faults.events.2", "kill"), "faults.events[2]", "must be a mapping", "'kill'"),
    (_set("faults.events.1.kind", "meteor"), "faults.events[1].kind", "unknown fault kind", "'meteor'"),
    (_set("faults.events.0.target", "learner-7"), "faults.events[0].target", "unknown learner for kill", "'learner-7'"),
    (_set("faults.events.0.target", "syncer"), "faults.events[0].target", "unknown learner", "'syncer'"),
    (_set("faults.events.0.target", DELETE), "faults.events[0].target", "missing required key", None),
    (_set("faults.events.2.target", "learner-0"), "faults.events[2].target", "must be syncer", "'learner-0'"),
    (_set("faults.events.0.at_s", DELETE), "faults.events[0].at_s", "missing required key", None),
    (_set("faults.events.0.at_s", 60), "faults.events[0].at_s", "before the end of the run", "60"),
    (_set("faults.events.0.duration_s", 100), "faults.events[0].duration_s", "after the run ends", "100"),
    (_set("faults.events.0.duration_s", -1), "faults.events[0].duration_s", "must be >= 0", "-1"),
    (_set("faults.events.2.duration_s", DELETE), "faults.events[2].duration_s", "needs a duration_s", None),
    (_set("faults.events.1.latency_ms", DELETE), "faults.events[1].latency_ms", "latency needs latency_ms", None),
    (_set("faults.events.1.latency_ms", "slow"), "faults.events[1].latency_ms", "must be a number", "'slow'"),
    (_set("faults.events.1.rate_kbps", 10), "faults.events[1].rate_kbps", "not a parameter of latency", "10"),
    (_set("faults.events.1.direction", "sideways"), "faults.events[1].direction", "must be one of upstream", "'sideways'"),
    (_set("faults.events.0.cpu_share", 0.5), "faults.events[0].cpu_share", "not a parameter of kill", "0.5"),
    (_set("faults.events.0", {"at_s": 1, "kind": "throttle", "target": "learner-0", "cpu_share": 1.5}),
     "faults.events[0].cpu_share", "must be <= 1", "1.5"),
    (_set("faults.events.0", {"at_s": 1, "kind": "corrupt", "target": "learner-0", "value": "inf"}),
     "faults.events[0].value", "must be one of nan, norm", "'inf'"),
    (_set("faults.events.0", {"at_s": 1, "kind": "corrupt", "target": "learner-0", "value": "nan", "duration_s": 2}),
     "faults.events[0].duration_s", "instantaneous", "2"),
    (_set("faults.events.0", {"at_s": 1, "kind": "slicer", "target": "learner-0", "average_size": 10, "size_variation": 10}),
     "faults.events[0].size_variation", "smaller than average_size", "10"),
    (_set("faults.events.0", {"at_s": 1, "kind": "limit_data", "target": "learner-0", "bytes": 1.5}),
     "faults.events[0].bytes", "must be an integer", "1.5"),
    (_set("faults.events.1.toxicity", 1.5), "faults.events[1].toxicity", "must be <= 1", "1.5"),
    (_set("faults.events.0.timeout_s", 5), "faults.events[0].timeout_s", "not a parameter of kill", "5"),
    (_set("faults.events.0", {"at_s": 1, "kind": "flap", "target": "learner-0", "period_s": 0}),
     "faults.events[0].period_s", "must be > 0", "0"),
    (_set("faults.random.0.mtbf_s", 0), "faults.random[0].mtbf_s", "must be > 0", "0"),
    (_set("faults.random.0.mtbf_s", DELETE), "faults.random[0].mtbf_s", "missing required key", None),
    (_set("faults.random.0.targets", ["learner-1", "learner-12"]), "faults.random[0].targets[1]", "unknown learner", "'learner-12'"),
    (_set("faults.random.0.targets", ["learner-1", "learner-1"]), "faults.random[0].targets", "twice", None),
    (_set("faults.random.0.targets", []), "faults.random[0].targets", "at least one", "[]"),
    (_set("faults.random.0.duration", DELETE), "faults.random[0].duration", "needs a duration", None),
    (_set("faults.random.0.duration", {"normal": 3}), "faults.random[0].duration.normal", "unknown key", "3"),
    (_set("faults.random.0.duration", {"fixed": 1, "exponential": 2}), "faults.random[0].duration", "exactly one", None),
    (_set("faults.random.0.duration", {"uniform": [3, 1]}), "faults.random[0].duration.uniform[1]", "must be >= 3", "1"),
    (_set("faults.random.0.duration", {"uniform": [1]}), "faults.random[0].duration.uniform", "[low, high]", "[1]"),
    (_set("faults.random.0.duration", {"exponential": 0}), "faults.random[0].duration.exponential", "must be > 0", "0"),
    (_set("faults.random.0.end_s", 80), "faults.random[0].end_s", "must be <= 60", "80"),
    (_set("faults.random.0.end_s", 2), "faults.random[0].end_s", "must be > 5", "2"),
    (_set("faults.random.0.start_s", 60), "faults.random[0].start_s", "before the end of the run", "60"),
    (_set("faults.random.0.kind", "syncer_crash"), "faults.random[0].targets", "must be syncer", "'learners'"),
    (_set("checks.goodput_min", 1.5), "checks.goodput_min", "must be <= 1", "1.5"),
    (_set("checks.rejoin_max_s", 0), "checks.rejoin_max_s", "must be > 0", "0"),
    (_set("checks.invariants", "yes please"), "checks.invariants", "must be true or false", "'yes please'"),
    (_set("checks.goodput", 0.5), "checks.goodput", "unknown key", "0.5"),
]


@pytest.mark.parametrize("mutate,key,words,shown", CASES, ids=[c[1] + ":" + c[2] for c in CASES])
def test_every_mistake_names_file_key_and_value(tmp_path, mutate, key, words, shown):
    e = error_for(tmp_path, mutate)
    text = str(e)
    assert e.key == key, text
    assert f": {key}: " in text and words in text, text
    if shown is not None:
        assert text.endswith(f"(got {shown})"), text


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "duration_s: 60\ncluster:\n  learners: 2\n  mode: [decoupled\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    text = str(info.value)
    assert text.startswith(f"{path}: line ") and "invalid YAML" in text and "\n" not in text


def test_duplicate_key_is_an_error_with_its_line(tmp_path):
    path = write(tmp_path, "duration_s: 60\ncluster: {learners: 2}\nduration_s: 30\n")
    with pytest.raises(ConfigError, match=r": line 3: invalid YAML: key 'duration_s' given twice"):
        load_scenario(path)


def test_empty_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="empty"):
        load_scenario(write(tmp_path, ""))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_scenario(write(tmp_path, "- a\n- b\n"))


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read scenario"):
        load_scenario(tmp_path / "nope.yaml")


def test_defaults_filled_in_and_kill_without_duration_stays_down():
    s = parse_scenario("""
duration_s: 30
cluster: {learners: 2}
faults:
  events:
    - {at_s: 1, kind: kill, target: learner-0}
    - {at_s: 2, kind: reset_peer, target: learner-1, direction: upstream}
    - {at_s: 3, kind: slicer, target: learner-1, average_size: 64}
  random:
    - {kind: syncer_crash, mtbf_s: 20, duration: 2}
""", "inline.yaml")
    kill, reset, slicer = s.timed
    assert kill.duration_s is None
    assert dict(reset.params) == {"timeout_ms": 0.0, "direction": "upstream", "toxicity": 1.0}
    assert dict(slicer.params) == {"average_size": 64, "size_variation": 0, "delay_us": 0,
                                   "direction": "both", "toxicity": 1.0}
    assert s.random[0].targets == ("syncer",) and s.random[0].duration == Distribution("fixed", value=2.0)
    assert s.name == "scenario" and s.links == () and s.cpu_shares == ()
    assert s.checks.invariants is True


def test_library_is_complete_and_every_scenario_parses():
    found = {p.stem: load_scenario(p) for p in LIBRARY.glob("*.yaml")}
    assert EXPECTED_LIBRARY <= set(found)
    for stem, s in found.items():
        assert s.name == stem and s.description and s.trainer.preset == "tiny"
        assert s.duration_s <= 120, stem  # each run fits in about two minutes here
        assert s.checks.invariants, stem
    assert found["quickstart"].trainer.learners == 2
    assert found["kill-restart"].trainer.learners == 4
    assert found["kill-restart"].checks.goodput_efficiency_min == 0.85
    assert found["kill-restart"].checks.rejoin_max_s == 30
    assert any(r.kind is FaultKind.KILL for r in found["kill-restart"].random)
    headline = build_schedule(found["kill-restart"], 1)  # the seed the README and issue quote
    assert len(headline) >= 3 and len({e.target for e in headline}) >= 2, headline
    assert found["mixed-hardware"].cpu_shares and found["mixed-hardware"].trainer.quorum == 1
    assert any(e.kind is FaultKind.CORRUPT for e in found["corrupt-update"].timed)
    drawn = [e for e in build_schedule(found["corrupt-update"], 1) if e.fault_id.startswith("r")]
    assert len(drawn) >= 2, "seed 1 must exercise the random corruption process too"
    assert any(e.kind is FaultKind.SYNCER_CRASH for e in found["syncer-crash"].timed)
    assert any(e.kind is FaultKind.LINK_DOWN for e in found["partition"].timed)
    assert any(e.kind is FaultKind.DISCONNECT for e in found["partition-ip"].timed)
    assert found["slow-links"].links and any(e.kind is FaultKind.BANDWIDTH for e in found["slow-links"].timed)
    kinds = {e.kind for e in found["stragglers"].timed} | {r.kind for r in found["stragglers"].random}
    assert {FaultKind.PAUSE, FaultKind.THROTTLE} <= kinds


# --- chaosloco validate -----------------------------------------------------------------

def test_validate_ok_line(tmp_path, capsys):
    assert cli_main(["validate", str(LIBRARY / "kill-restart.yaml"), "--seed", "1"]) == 0
    out = capsys.readouterr().out.strip()
    from harness.schedule import build_schedule
    n = len(build_schedule(load_scenario(LIBRARY / "kill-restart.yaml"), 1))
    assert out == f"ok: kill-restart, 4 learners, {n} fault{'' if n == 1 else 's'} scheduled for seed 1"


def test_validate_uses_the_scenarios_seed_by_default(tmp_path, capsys):
    path = write(tmp_path, {**VALID, "seed": 5})
    assert cli_main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.strip().endswith("scheduled for seed 5")


def test_validate_bad_file_exits_2_with_one_line(tmp_path, capsys):
    data = copy.deepcopy(VALID)
    data["faults"]["events"][2] = {"at_s": 1, "kind": "kill", "target": "learner-7"}
    path = write(tmp_path, data)
    assert cli_main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"chaosloco validate: {path}: faults.events[2].target: unknown learner for kill "
                            "(this cluster has learner-0 .. learner-3) (got 'learner-7')\n")


def test_validate_yaml_error_and_missing_file_exit_2(tmp_path, capsys):
    assert cli_main(["validate", str(write(tmp_path, "cluster: [\n"))]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert cli_main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read scenario" in capsys.readouterr().err


def test_validate_as_a_real_process_exit_codes(tmp_path):
    """The installed entry point in a child process: exit 0 / exit 2 with one stderr line."""
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "harness.cli", "validate", str(LIBRARY / "quickstart.yaml")],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: quickstart, 2 learners, 1 fault scheduled for seed 1")
    bad = write(tmp_path, {**VALID, "duration_s": "forever"})
    res = subprocess.run([sys.executable, "-m", "harness.cli", "validate", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == f"chaosloco validate: {bad}: duration_s: must be a number (got 'forever')\n"
