"""Builds a synthetic but contract-faithful run folder (docs/CONTRACTS.md) for the
report tests: run.json, config.json, secret, events.jsonl, journal.jsonl, result.json.

The story it tells, scaled to ``duration_s``: N learners train and merge fragments; at
20% learner-1 is killed and restarted at 30% (it rejoins: learner_start, join, joined,
first_step); at 45% learner-2 is paused for 8%; at 60% learner-0's link goes down for
10% (partitioned: its pushes stop arriving); at 75% learner-3 sends a NaN update that is
rejected. Every figure in result.json is computed from the same synthetic history, so
the report's recomputed series agree with the headline. ``hostile`` puts a string into
every free-text channel (scenario name and text, fault ids and targets, check names,
expected/actual, host, reasons, a link name) for the escaping tests.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

T0 = 1_790_000_000.0  # the journal's "ready"; any fixed epoch works
SECRET = "5ec2e7" * 10 + "abcd"  # 64 hex chars; a test asserts it never reaches a report


@dataclasses.dataclass(frozen=True)
class BuiltRun:
    path: Path
    learners: list[str]
    fault_ids: list[str]
    checks: list[dict[str, Any]]
    result: dict[str, Any]
    run: dict[str, Any]
    scenario_text: str


def _writer(path: Path):
    fh = path.open("w", encoding="utf-8")

    def write(record: dict[str, Any]) -> None:
        fh.write(json.dumps(record, separators=(",", ":")) + "\n")
    return fh, write


def build_run(run_dir: Path, *, learners: int = 4, duration_s: float = 60.0, seed: int = 7,
              trainer: str = "decoupled", fragments: int = 4, merge_every_s: float = 0.5,
              progress_every_s: float = 1.0, hostile: str | None = None, failing: bool = False,
              useful_share: float = 0.9, with_unknown: bool = True) -> BuiltRun:
    """Writes the run folder and returns what a test needs to check a report against."""
    assert learners >= 3, "the story needs a learner to kill, one to pause and one to partition"
    run_dir.mkdir(parents=True, exist_ok=True)
    D = duration_s
    name = hostile or "kill-pause-partition"
    # a scenario harness.scenario accepts (unless `hostile` makes its name invalid on purpose)
    scenario_text = f"""# synthetic run for the report tests
name: {name}
description: kill, pause, partition and a corrupt update
duration_s: {D:g}
seed: {seed}
cluster:
  learners: {learners}
  mode: {trainer}
  preset: tiny
  trainer:
    fragments: {fragments}
faults:
  events:
    - {{at_s: {0.2 * D:g}, kind: kill, target: learner-1, duration_s: {0.1 * D:g}}}
    - {{at_s: {0.45 * D:g}, kind: pause, target: learner-2, duration_s: {0.08 * D:g}}}
    - {{at_s: {0.6 * D:g}, kind: link_down, target: learner-0, duration_s: {0.1 * D:g}}}
checks:
  goodput_efficiency_min: 0.5
  rejoin_max_s: 10
  max_stall_s: {0.1 if failing else 5}
  invariants: true
"""
    run = {"run_id": "r" + format(seed, "07x"), "scenario_path": f"scenarios/{name}.yaml",
           "scenario_text": scenario_text, "seed": seed, "backend": "local", "trainer": trainer,
           "versions": {"chaosloco": "0.1.0", "torch": "2.15.0", "python": "3.11.7"},
           "host": hostile or "ci-runner-3", "started_at": "2026-11-22T08:00:00Z"}
    (run_dir / "run.json").write_text(json.dumps(run, indent=2))
    (run_dir / "config.json").write_text(json.dumps({"mode": trainer, "learners": learners, "fragments": fragments}))
    secret = run_dir / "secret"
    secret.write_text(SECRET)
    os.chmod(secret, 0o600)

    rates = [2000.0 * (1 + 0.1 * i) for i in range(learners)]  # tokens/s when healthy
    kill = ("f001-kill-learner-1", "kill", "learner-1", 0.2 * D, 0.3 * D)
    pause = ("f002-pause-learner-2", "pause", "learner-2", 0.45 * D, 0.53 * D)
    link = ("f003-link_down-learner-0", "link_down", "learner-0", 0.6 * D, 0.7 * D)
    faults = [kill, pause, link]
    corrupt_at = 0.75 * D
    if learners > 3:
        faults.append(("f004-corrupt-learner-3", "corrupt", "learner-3", corrupt_at, corrupt_at))
    if hostile:
        faults.append((hostile, "latency", hostile, 0.85 * D, 0.9 * D))
    rejoin_start = kill[4] + 0.5  # process start after the restart
    first_step_at = kill[4] + 2.0

    def computing(i: int, t: float) -> bool:
        if i == 1 and kill[3] <= t < first_step_at:
            return False
        return not (i == 2 and pause[3] <= t < pause[4])

    def reaching(i: int, t: float) -> bool:  # pushes get through to the synchronizer
        if trainer != "decoupled" and not all(computing(j, t) for j in range(learners)):
            return False  # synchronous trainers wait for everyone: nothing merges
        return computing(i, t) and not (i == 0 and link[3] <= t < link[4])

    ev_fh, emit = _writer(run_dir / "events.jsonl")
    j_fh, journal = _writer(run_dir / "journal.jsonl")
    records: list[tuple[float, str, dict]] = []  # (t, target, record), sorted at the end

    def ev(t: float, src: str, name_: str, **fields: Any) -> None:
        records.append((T0 + t, "e", {"t": T0 + t, "src": src, "ev": name_, **fields}))

    def jr(t: float, kind: str, **fields: Any) -> None:
        records.append((T0 + t, "j", {"t": T0 + t, "kind": kind, **fields}))

    jr(-6, "run_start", run_id=run["run_id"], scenario=name, backend="local", trainer=trainer, seed=seed, duration_s=D)
    jr(-5.5, "node_start", node="toxiproxy", pid=100, reason="initial")
    jr(-5, "node_start", node="syncer", pid=101, reason="initial")
    ev(-4.8, "syncer", "syncer_start", pid=101, restored=False, versions=[0] * fragments,
       fragment_numel=[1000] * fragments, total_numel=1000 * fragments)
    for i in range(learners):
        jr(-4, "node_start", node=f"learner-{i}", pid=200 + i, reason="initial")
        ev(-3.5, f"learner-{i}", "learner_start", learner=i, pid=200 + i)
        ev(-3, "syncer", "join", learner=i, incarnation=0, resume_cursor=0, since=[0] * fragments,
           versions=[0] * fragments, bytes_in=512, bytes_out=16000)
        ev(-2.9, f"learner-{i}", "joined", learner=i, incarnation=0, resume_cursor=0, versions=[0] * fragments)
        ev(-2.5, f"learner-{i}", "first_step", learner=i, incarnation=0)
    jr(0, "ready", learners=learners)

    for fid, kind, target, start, end in faults:
        jr(start, "fault_inject", fault_id=fid, fault=kind, target=target, params={}, planned_s=start)
        state = {"kill": "down", "pause": "paused", "link_down": "partitioned", "latency": "degraded"}.get(kind)
        if state:
            jr(start + 0.01, "node_state", node=target, state=state, cpu_share=0.0 if state in ("down", "paused") else 1.0)
        if kind == "kill":
            jr(start + 0.02, "node_exit", node=target, code=-9)
        if kind != "corrupt":
            jr(end, "fault_heal", fault_id=fid, fault=kind, target=target)
        if kind == "kill":
            jr(end + 0.01, "node_start", node=target, pid=300, reason="restart")
        if state:
            jr(end + 0.02, "node_state", node=target, state="up", cpu_share=1.0)
    ev(rejoin_start, "learner-1", "learner_start", learner=1, pid=300)
    ev(rejoin_start + 0.7, "syncer", "join", learner=1, incarnation=1, resume_cursor=0, since=[0] * fragments,
       versions=[0] * fragments, bytes_in=512, bytes_out=16000)
    ev(rejoin_start + 0.9, "learner-1", "joined", learner=1, incarnation=1, resume_cursor=0, versions=[0] * fragments)
    ev(first_step_at, "learner-1", "first_step", learner=1, incarnation=1)

    processed = 0.0
    steps = int(D / progress_every_s)
    for k in range(1, steps + 1):
        t = k * progress_every_s
        for i in range(learners):
            if computing(i, t - progress_every_s / 2):
                tokens = rates[i] * progress_every_s
                processed += tokens
                ev(t, f"learner-{i}", "progress", learner=i, incarnation=1 if i == 1 and t > kill[4] else 0,
                   step=k * 4, cursor=int(processed), tokens=tokens, compute_s=progress_every_s,
                   wall_s=progress_every_s, loss=round(6.0 * math.exp(-t / D) + 2.0, 4))

    useful = 0.0
    versions = [0] * fragments
    cursor: dict[tuple[int, int], int] = {}
    n_merges = int(D / merge_every_s)
    for k in range(1, n_merges + 1):
        t = k * merge_every_s
        frag = k % fragments
        contributors = []
        for i in range(learners):
            if not reaching(i, t):
                continue
            # a fragment is merged every `fragments` rounds and carries the tokens since its last merge
            tokens = int(rates[i] * merge_every_s * fragments * useful_share)
            key = f"l{i}-f{frag}-{k}"
            incarnation = 1 if i == 1 and t >= first_step_at else 0
            # each (learner, fragment) merges consecutive ranges of the learner's shard
            start = cursor.get((i, frag), 0)
            cursor[(i, frag)] = start + tokens
            ev(t - 0.05, "syncer", "push", learner=i, incarnation=incarnation, fragment=frag, key=key,
               base_version=versions[frag], tokens=tokens, steps=4, range=[start, start + tokens], bytes_in=4096)
            contributors.append({"learner": i, "incarnation": incarnation, "key": key, "tokens": tokens, "steps": 4,
                                 "range": [start, start + tokens], "base_version": versions[frag], "weight": tokens})
        if not contributors:
            continue
        versions[frag] += 1
        merged = sum(c["tokens"] for c in contributors)
        useful += merged / fragments  # harness.measure: tokens × the fragment's fraction
        ev(t, "syncer", "merge", fragment=frag, version=versions[frag], fraction=1 / fragments,
           contributors=contributors, tokens=merged, quorum_wait_s=0.01, grace_s=0.02, update_norm=0.5)
        ev(t + 0.005, "syncer", "checkpoint", fragment=frag, version=versions[frag], bytes=4000)
        for c in contributors:
            ev(t + 0.01, "syncer", "ack", learner=c["learner"], fragment=frag, key=c["key"],
               version=versions[frag], bytes_out=4096)
            ev(t + 0.02, f"learner-{c['learner']}", "apply", learner=c["learner"], fragment=frag,
               version=versions[frag], lag_steps=1)
    if learners > 3:
        ev(corrupt_at, "learner-3", "corrupt", learner=3, fragment=0, kind="nan")
        start = cursor.get((3, 0), 0)  # the rejected range is dropped: the next one starts after it
        cursor[(3, 0)] = start + 100
        ev(corrupt_at + 0.1, "syncer", "reject", learner=3, fragment=0, key="l3-bad", reason=hostile or "nan",
           range=[start, start + 100], tokens=100)
        ev(corrupt_at + 0.15, "learner-3", "discard", learner=3, fragment=0, range=[start, start + 100],
           reason="nan")
    for k in range(0, int(D / 5) + 1):
        t = k * 5.0
        ev(t, "syncer", "eval", loss=round(5.5 * math.exp(-t / (0.6 * D)) + 2.0, 4), tokens_merged=0,
           versions=list(versions))
    jr(D, "run_end", status="completed", reason=hostile or "duration reached")
    jr(D + 1, "teardown", leftovers=[])

    for _, target, record in sorted(records, key=lambda r: r[0]):
        (emit if target == "e" else journal)(record)
    ev_fh.close()
    j_fh.close()

    capacity = sum(rates) * D
    # as harness.measure counts them: compute allowed from node_state down/paused to up
    allowed = sum(rates) * D - rates[1] * (kill[4] - kill[3] + 0.01) - rates[2] * (pause[4] - pause[3] + 0.01)
    goodput = useful / capacity
    availability = allowed / capacity
    restart_at = kill[4] + 0.01  # the journal's node_start (restart)
    rejoin = [{"learner": 1, "to_first_step_s": first_step_at - restart_at,
               "to_first_merge_s": math.ceil(first_step_at / merge_every_s) * merge_every_s - restart_at}]
    stall = merge_every_s
    checks = [
        {"name": "goodput_min", "verdict": "pass", "passed": True, "expected": ">= 0.5", "actual": round(goodput, 4)},
        {"name": "rejoin_max_s", "verdict": "pass", "passed": True, "expected": "<= 10", "actual": rejoin[0]["to_first_merge_s"]},
        {"name": "max_stall_s", "verdict": "fail" if failing else "pass", "passed": not failing,
         "expected": "<= 0.1" if failing else "<= 5", "actual": stall,
         "detail": "longest stretch without a merge while a quorum was up" if failing else ""},
        {"name": "merged_at_most_once", "verdict": "pass", "passed": True, "expected": "no contribution merged twice",
         "actual": "0 duplicates merged"},
    ]
    if with_unknown:
        checks.insert(3, {"name": "quality_gap_max", "verdict": "unknown", "passed": None, "expected": "<= 0.05",
                          "actual": "no baseline run given"})
    if hostile:
        checks.append({"name": hostile, "verdict": "fail", "passed": False, "expected": hostile, "actual": hostile})
    # Jepsen's priority: invalid beats unknown beats valid.
    verdicts = {c["verdict"] for c in checks}
    verdict = "fail" if "fail" in verdicts else "unknown" if "unknown" in verdicts else "pass"
    bytes_links = {f"learner-{i}": {"in": 4096 * n_merges * 0.8 + 512, "out": 4096 * n_merges * 0.8 + 16000}
                   for i in range(learners)}
    if hostile:
        bytes_links[hostile] = {"in": 10, "out": 10}
    wire = sum(v["in"] + v["out"] for v in bytes_links.values())
    result = {
        "scenario": name, "backend": "local", "trainer": trainer, "seed": seed, "duration_s": D,
        "goodput": goodput, "availability_bound": availability, "goodput_efficiency": goodput / availability,
        "rejoin_seconds": rejoin, "reconnect_seconds": [{"learner": 0, "fault_id": link[0], "to_first_merge_s": 1.25}],
        "max_global_stall_seconds": stall, "outer_updates": sum(versions),
        "tokens_merged": useful, "useful_tokens": useful, "capacity_tokens": capacity,
        "wire_bytes": wire, "wire_bytes_per_useful_token": wire / useful, "bytes_per_link": bytes_links,
        "eval_loss_start": 7.5, "eval_loss_final": 2.3, "quality_gap": None, "notes": [], "status": "completed", "verdict": verdict,
        "checks": checks,
        "faults": [{"fault_id": fid, "fault": kind, "target": target, "planned_s": start, "injected_s": start,
                    "healed_s": None if kind == "corrupt" else end, "params": {}}
                   for fid, kind, target, start, end in faults],
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    return BuiltRun(path=run_dir, learners=[f"learner-{i}" for i in range(learners)],
                    fault_ids=[f[0] for f in faults], checks=checks, result=result, run=run,
                    scenario_text=scenario_text)


# --- a tiny DOM for the report tests (stdlib html.parser; no third-party parser needed) ---

from html.parser import HTMLParser  # noqa: E402

_VOID = {"meta", "br", "img", "input", "link", "hr", "area", "base", "col", "embed", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: "Node | None") -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list["Node | str"] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list["Node"]:
        return [n for n in self.iter() if (tag is None or n.tag == tag) and (cls is None or cls in n.classes)
                and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> "Node":
        found = self.find_all(tag, cls, **attrs)
        assert found, f"no <{tag} class={cls} {attrs}>"
        return found[0]


class _DomBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in _VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node is not self.root and node.tag != tag:
            node = node.parent
        assert node is not self.root, f"unbalanced </{tag}>"
        self.cur = node.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse_html(text: str) -> Node:
    builder = _DomBuilder()
    builder.feed(text)
    builder.close()
    assert builder.cur is builder.root, f"unclosed <{builder.cur.tag}>"
    return builder.root
