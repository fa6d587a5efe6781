"""A real trainer cluster for process-level tests: syncer and learners as processes.

Everything is started through ``trainers.launch`` (own session, dies with the test) and
stopped in ``close()``, which the fixture calls in ``finally``. Waits are on events in
``events.jsonl`` with deadlines, never fixed sleeps.
"""
from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Callable

from trainers import config as config_mod
from trainers import launch
from trainers.events import read_events
from trainers.train_cmd import prepare_run_dir

START_TIMEOUT_S = 120.0  # torch import on a shared 2-core machine can take a while


class Cluster:
    def __init__(self, run_dir: Path, cfg: config_mod.TrainerConfig) -> None:
        self.dir, self.cfg = run_dir, cfg
        prepare_run_dir(run_dir, cfg)
        self.events_path = run_dir / "events.jsonl"
        self.port, self.control_port = launch.free_port(), launch.free_port()
        self.syncer: subprocess.Popen | None = None
        self.learners: dict[int, subprocess.Popen] = {}
        self.secret = bytes.fromhex((run_dir / "secret").read_text().strip())

    @property
    def addr(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def start_syncer(self) -> dict[str, Any]:
        starts = sum(1 for e in self.events() if e["ev"] == "syncer_start")
        self.syncer = launch.start(launch.python_module_argv(
            "trainers.syncer", "--run-dir", str(self.dir), "--port", str(self.port),
            "--control-port", str(self.control_port)), self.dir / "logs" / "syncer.log")
        seen = {"n": 0}

        def nth_start(e: dict[str, Any]) -> bool:
            if e.get("ev") == "syncer_start":
                seen["n"] += 1
                return seen["n"] > starts
            return False
        proc = self.syncer
        return self.wait(nth_start, what="syncer_start", alive=lambda: proc.poll() is None)

    def start_learner(self, i: int, *extra: str, via: tuple[str, int] | None = None) -> subprocess.Popen:
        host, port = via or self.addr
        p = launch.start(launch.python_module_argv(
            "trainers.learner", "--run-dir", str(self.dir), "--id", str(i), "--syncer", f"{host}:{port}", *extra),
            self.dir / "logs" / f"learner-{i}.log")
        self.learners[i] = p
        return p

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.events_path)

    def wait(self, predicate: Callable[[dict[str, Any]], bool], *, what: str,
             timeout_s: float = START_TIMEOUT_S, alive: Callable[[], bool] | None = None) -> dict[str, Any]:
        return launch.wait_for_event(self.events_path, predicate, timeout_s, alive=alive, what=what)

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control_port}/status", timeout=10) as r:
            return json.loads(r.read())

    def close(self) -> None:
        for p in self.learners.values():
            launch.stop(p, grace_s=15)
        launch.stop(self.syncer, grace_s=15)
