"""The per-run compose file: names from the run id, labels, networks, ports, mounts, CPU.

Pure: renders documents and reads them back; no Docker needed. The real thing is in
test_compose_backend.py.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from compose import compose_file as cf
from harness.backend import ClusterSpec
from harness.errors import ConfigError
from trainers.config import TrainerConfig


def _spec(tmp_path: Path, *, learners: int = 3, **kw) -> ClusterSpec:
    return ClusterSpec(run_id=uuid.uuid4().hex[:8], run_dir=tmp_path / "run",
                       trainer=TrainerConfig(learners=learners), **kw)


def _rt(**kw) -> cf.Runtime:
    defaults = dict(image="chaosloco-runtime:0123456789abcdef", python="/src/.venv/bin/python",
                    project_root=Path("/src"), user="1000:1000")
    return cf.Runtime(**{**defaults, **kw})


def test_project_name_derives_from_run_id_and_rejects_unsafe_ids():
    assert cf.project_name("ab12cd34") == "chaosloco-ab12cd34"
    for bad in ("", "UPPER", "a_b", "a b", "-lead", "x" * 42, "a/b"):
        with pytest.raises(ConfigError, match="run_id"):
            cf.project_name(bad)


def test_two_runs_share_no_names(tmp_path):
    a, b = _spec(tmp_path / "a"), _spec(tmp_path / "b")
    da, db = cf.render(a, _rt()), cf.render(b, _rt())
    assert cf.project_name(a.run_id) != cf.project_name(b.run_id)
    for doc, spec in ((da, a), (db, b)):
        for svc in doc["services"].values():
            assert svc["labels"]["chaosloco.run"] == spec.run_id
        for net in doc["networks"].values():
            assert net["labels"]["chaosloco.run"] == spec.run_id
    # no explicit container or network names: Compose prefixes them with the project
    assert not any("container_name" in s for s in da["services"].values())
    assert not any("name" in n for n in da["networks"].values())


def test_services_labels_and_node_names(tmp_path):
    spec = _spec(tmp_path, learners=3)
    doc = cf.render(spec, _rt())
    assert list(doc["services"]) == ["toxiproxy", "syncer", "learner-0", "learner-1", "learner-2"]
    for node, svc in doc["services"].items():
        assert svc["labels"] == {"chaosloco": "1", "chaosloco.run": spec.run_id, "chaosloco.node": node}
        assert svc["image"] == "chaosloco-runtime:0123456789abcdef"
        assert svc["restart"] == "no"
    for net in doc["networks"].values():
        assert net["labels"] == {"chaosloco": "1", "chaosloco.run": spec.run_id}


def test_learners_reach_the_synchronizer_only_through_their_own_proxy(tmp_path):
    spec = _spec(tmp_path, learners=3)
    doc = cf.render(spec, _rt())
    svcs = doc["services"]
    assert svcs["syncer"]["networks"] == ["core"]
    assert svcs["toxiproxy"]["networks"] == ["core", "links"]
    assert doc["networks"]["links"]["internal"] is True  # learners have no route anywhere else
    for i in range(3):
        learner = svcs[f"learner-{i}"]
        assert learner["networks"] == ["links"]  # not on the synchronizer's network
        cmd = learner["command"]
        assert cmd[cmd.index("--syncer") + 1] == f"toxiproxy:{20000 + i}"
        assert cmd[cmd.index("--id") + 1] == str(i)
        assert "ports" not in learner


def test_our_proxy_server_gets_the_runs_seed(tmp_path):
    cmd = cf.render(_spec(tmp_path, seed=42), _rt())["services"]["toxiproxy"]["command"]
    assert cmd[cmd.index("--seed") + 1] == "42"


def test_only_api_and_control_ports_are_published_ephemerally_on_loopback(tmp_path):
    doc = cf.render(_spec(tmp_path), _rt())
    assert doc["services"]["toxiproxy"]["ports"] == ["127.0.0.1::8474"]
    assert doc["services"]["syncer"]["ports"] == ["127.0.0.1::7001"]
    cmd = doc["services"]["syncer"]["command"]
    assert cmd[cmd.index("--port") + 1] == "7000" and cmd[cmd.index("--control-port") + 1] == "7001"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"


def test_mounts_tree_and_venv_read_only_and_run_folder_read_write_at_host_paths(tmp_path):
    spec = _spec(tmp_path)
    run_dir = str((tmp_path / "run").resolve())
    doc = cf.render(spec, _rt(mounts_ro=(Path("/opt/venv"),)))
    for node, svc in doc["services"].items():
        assert svc["volumes"] == ["/src:/src:ro", "/opt/venv:/opt/venv:ro", f"{run_dir}:{run_dir}:rw"]
        assert svc["working_dir"] == "/src" and svc["user"] == "1000:1000"
        assert svc["environment"]["OMP_NUM_THREADS"] == "1"
        assert svc["environment"]["CHAOSLOCO_RUN_ID"] == spec.run_id
        # output goes to the run folder's logs/<node>.log, then the node's own module runs
        assert svc["command"][:5] == ["/src/.venv/bin/python", "-m", "compose.launch", "--log",
                                      f"{run_dir}/logs/{node}.log"]
    syncer = doc["services"]["syncer"]["command"]
    assert syncer[syncer.index("--config") + 1] == f"{run_dir}/config.json"
    assert syncer[syncer.index("--secret-file") + 1] == f"{run_dir}/secret"


def test_a_corpus_folder_is_mounted_read_only(tmp_path):
    corpus = tmp_path / "corpus"
    spec = ClusterSpec(run_id="c0rpus", run_dir=tmp_path / "run",
                       trainer=TrainerConfig(learners=1, data=str(corpus)))
    svc = cf.render(spec, _rt())["services"]["learner-0"]
    assert f"{corpus.resolve()}:{corpus.resolve()}:ro" in svc["volumes"]


def test_cpu_shares_become_cfs_quotas_per_learner(tmp_path):
    doc = cf.render(_spec(tmp_path, learners=3, cpu_shares=(0.5, 1.0, 0.25)), _rt())
    quotas = [(doc["services"][f"learner-{i}"]["cpu_quota"], doc["services"][f"learner-{i}"]["cpu_period"])
              for i in range(3)]
    assert quotas == [(50_000, 100_000), (100_000, 100_000), (25_000, 100_000)]
    assert "cpu_quota" not in doc["services"]["syncer"]
    assert cf.cpu_quota(0.0001) == 1000  # Docker's minimum quota is 1 ms


def test_no_cpu_shares_means_unlimited(tmp_path):
    doc = cf.render(_spec(tmp_path, learners=2), _rt())
    assert not any("cpu_quota" in s or "cpus" in s for s in doc["services"].values())


def test_official_toxiproxy_image_by_option(tmp_path):
    spec = _spec(tmp_path, official_toxiproxy=True, seed=42)
    doc = cf.render(spec, _rt())
    tp = doc["services"]["toxiproxy"]
    assert tp["image"].startswith("ghcr.io/shopify/toxiproxy:")
    assert tp["command"] == ["-host=0.0.0.0", "-port=8474", "-seed=42"]
    assert tp["ports"] == ["127.0.0.1::8474"] and tp["networks"] == ["core", "links"]
    assert tp["labels"]["chaosloco.run"] == spec.run_id
    assert doc["services"]["syncer"]["image"].startswith("chaosloco-runtime:")


def test_written_file_is_compose_2_4_yaml_that_reads_back_equal(tmp_path):
    spec = _spec(tmp_path)
    (tmp_path / "run").mkdir()
    path = cf.write(spec, _rt(), tmp_path / "run" / "compose.yaml")
    text = path.read_text()
    assert text.startswith(f"# generated by chaosloco (compose.compose_file) for run {spec.run_id}\n")
    assert yaml.safe_load(text) == cf.render(spec, _rt())
    assert yaml.safe_load(text)["version"] == "2.4"


def test_portable_image_mounts_only_the_run_folder(tmp_path):
    spec = _spec(tmp_path)
    run_dir = str((tmp_path / "run").resolve())
    doc = cf.render(spec, cf.portable_runtime("chaosloco:portable"))
    for svc in doc["services"].values():
        assert svc["volumes"] == [f"{run_dir}:{run_dir}:rw"]
        assert svc["command"][:3] == ["python", "-m", "compose.launch"]
        assert svc["working_dir"] == "/opt/chaosloco"


def test_cgroup_parent_only_when_asked(tmp_path):
    spec = _spec(tmp_path, official_toxiproxy=True)
    plain = cf.render(spec, _rt())
    assert not any("cgroup_parent" in s for s in plain["services"].values())
    beside_host = cf.render(spec, _rt(cgroup_parent="/"))
    assert {s["cgroup_parent"] for s in beside_host["services"].values()} == {"/"}
