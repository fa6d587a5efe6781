"""``chaosloco train``: a fault-free local cluster, for baselines and smoke tests.

``chaosloco train --learners N --mode MODE --duration SECONDS --out DIR
[--preset tiny] [--seed S] [--set KEY=VALUE ...]``

Writes ``DIR/config.json`` and ``DIR/secret``, starts the synchronizer and N learners
as processes on 127.0.0.1 (``trainers.launch``; no proxy: nothing is injected), lets
them train for ``--duration`` seconds from the moment every learner has joined, stops
the learners (SIGTERM: they flush in-flight pushes), then the synchronizer (which
evaluates the final global model), and writes ``DIR/summary.json``: ``mode``,
``learners``, ``tokens_merged``, ``outer_updates``, ``wire_bytes``, ``eval_loss_start``,
``eval_loss_end``, ``duration_s`` (+ per-learner token rates). Finally it runs the
invariant checker (``harness.checks.check_invariants``, SPEC §3 items 1-6) over the
event log and prints its verdict; exit 1 when an invariant fails.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, InfraError
from trainers import config as config_mod
from trainers import launch
from trainers.events import read_events


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="chaosloco train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--learners", type=int, default=2)
    ap.add_argument("--mode", default="decoupled", help="decoupled | diloco | ddp")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of training after all joined")
    ap.add_argument("--out", required=True, type=Path, help="run folder to create")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any TrainerConfig field (JSON value), repeatable")
    return ap


def make_config(args: argparse.Namespace) -> config_mod.TrainerConfig:
    fields = {"mode": args.mode, "learners": args.learners, "preset": args.preset, "seed": args.seed}
    fields.update(config_mod.parse_assignments(args.set, "--set"))
    return config_mod.from_dict(fields, source="command line")


def prepare_run_dir(out: Path, cfg: config_mod.TrainerConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    config_mod.save(cfg, out / "config.json")
    secret = out / "secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")


def summarize(events: list[dict[str, Any]], cfg: config_mod.TrainerConfig, duration_s: float) -> dict[str, Any]:
    merges = [e for e in events if e["ev"] == "merge"]
    evals = [e for e in events if e["ev"] == "eval"]
    wire_bytes = sum(e.get("bytes_in", 0) for e in events if e["ev"] in ("join", "push")) + \
        sum(e.get("bytes_out", 0) for e in events if e["ev"] in ("join", "ack"))
    rates: dict[str, float] = {}
    for src in sorted({e["src"] for e in events if e["ev"] == "progress"}):
        per = [e["tokens"] / e["wall_s"] for e in events if e["ev"] == "progress" and e["src"] == src and e["wall_s"] > 0]
        rates[src] = statistics.median(per) if per else 0.0
    contributors = {c["learner"] for m in merges for c in m.get("contributors", [])}
    return {"mode": cfg.mode.value, "learners": cfg.learners,
            # A merge of fragment p carries its tokens into fraction_p of the model:
            # counted as whole-model tokens (as harness.measure counts useful tokens).
            "tokens_merged": round(sum(m.get("tokens", 0) * m.get("fraction", 1.0) for m in merges)),
            "outer_updates": len(merges), "wire_bytes": wire_bytes,
            "eval_loss_start": evals[0]["loss"] if evals else None,
            "eval_loss_end": evals[-1]["loss"] if evals else None,
            "duration_s": duration_s, "learners_merged": sorted(contributors),
            "tokens_per_s": rates}


def run_cluster(cfg: config_mod.TrainerConfig, out: Path, duration_s: float, *,
                start_timeout_s: float = 120.0) -> dict[str, Any]:
    """Runs the cluster for ``duration_s``; returns the summary (also written)."""
    prepare_run_dir(out, cfg)
    events = out / "events.jsonl"
    port, control = launch.free_port(), launch.free_port()
    procs = []
    try:
        syncer = launch.start(launch.python_module_argv(
            "trainers.syncer", "--run-dir", str(out), "--port", str(port), "--control-port", str(control)),
            out / "logs" / "syncer.log")
        procs.append(syncer)
        launch.wait_for_event(events, lambda e: e.get("ev") == "syncer_start", start_timeout_s,
                              alive=lambda: syncer.poll() is None, what="syncer_start")
        for i in range(cfg.learners):
            procs.append(launch.start(launch.python_module_argv(
                "trainers.learner", "--run-dir", str(out), "--id", str(i), "--syncer", f"127.0.0.1:{port}"),
                out / "logs" / f"learner-{i}.log"))
        for i in range(cfg.learners):
            launch.wait_for_event(events, lambda e, i=i: e.get("ev") == "first_step" and e.get("learner") == i,
                                  start_timeout_s, alive=lambda p=procs[i + 1]: p.poll() is None,
                                  what=f"learner {i}'s first step")
        t0 = time.monotonic()
        deadline = t0 + duration_s
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                raise InfraError(f"a trainer process exited early; see {out / 'logs'}")
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        for p in procs[1:]:
            launch.signal_group(p, 15)
        for p in procs[1:]:
            launch.stop(p, grace_s=cfg.rpc_timeout_s + 10)
        elapsed = time.monotonic() - t0
        launch.stop(syncer, grace_s=30)
    finally:
        for p in reversed(procs):
            launch.stop(p, grace_s=5)
    summary = summarize(read_events(events), cfg, elapsed)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.duration <= 0:
        raise ConfigError("must be > 0", key="--duration", value=args.duration)
    cfg = make_config(args)
    summary = run_cluster(cfg, args.out, args.duration)
    print(json.dumps(summary, indent=2))
    try:
        from harness.checks import Verdict, check_invariants, overall
    except ImportError:
        print("invariants: checker not available")
        return 0
    results = check_invariants(read_events(args.out / "events.jsonl"))
    for r in results:
        print(f"  {r.verdict.value:7} {r.name}: {r.detail}")
    verdict = overall(results)
    print(f"invariants: {verdict.value}")
    return 1 if verdict is Verdict.FAIL else 0
