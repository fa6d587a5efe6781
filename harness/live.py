"""The live view of a run: learner states, fragment versions, tokens merged, goodput so
far, faults so far and time left, redrawn about once a second with rich's Live.

It reads only what any observer could: the synchronizer's control ``/status`` (never
proxied, so it answers even while links are broken) and the two logs of the run folder
(``events.jsonl``, ``journal.jsonl``), so it cannot disturb the run. Where stdout is not
a terminal (``--quiet``, CI) the table is off and one plain line is printed per fault
and per lifecycle step instead. Goodput so far is an estimate (merged tokens over each
learner's median healthy rate times the time since ready); result.json has the figure.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from harness.tail import JsonlTail

_STATUS_TIMEOUT_S = 0.5


@dataclasses.dataclass
class LearnerRow:
    state: str = "starting"
    incarnation: int = 0
    step: int = 0
    tokens: int = 0
    loss: float | None = None
    rates: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class LiveState:
    learners: dict[int, LearnerRow]
    duration_s: float
    ready_t: float | None = None  # wall clock of the journal's ``ready``
    now: float = 0.0
    versions: list[int] = dataclasses.field(default_factory=list)
    outer_updates: int = 0
    tokens_merged: int = 0
    faults_injected: int = 0
    faults_active: dict[str, str] = dataclasses.field(default_factory=dict)  # fault_id -> "kind target"
    status: str = "starting"

    @property
    def elapsed_s(self) -> float:
        return 0.0 if self.ready_t is None else max(0.0, self.now - self.ready_t)

    @property
    def time_left_s(self) -> float:
        return max(0.0, self.duration_s - self.elapsed_s)

    @property
    def goodput_estimate(self) -> float | None:
        rates = [statistics.median(r.rates) for r in self.learners.values() if r.rates]
        capacity = sum(rates) * self.elapsed_s
        return None if capacity <= 0 else min(1.0, self.tokens_merged / capacity)


class LiveModel:
    """Folds events, journal entries and /status answers into a LiveState."""

    def __init__(self, duration_s: float, learners: int) -> None:
        self.state = LiveState({i: LearnerRow() for i in range(learners)}, duration_s)

    def on_event(self, ev: dict[str, Any]) -> None:
        kind, st = ev.get("ev"), self.state
        row = st.learners.get(ev.get("learner")) if isinstance(ev.get("learner"), int) else None
        if kind == "merge":
            st.tokens_merged += int(ev.get("tokens", 0))
            st.outer_updates += 1
        if row is None:
            return
        if kind == "learner_start":
            row.state = "joining"
        elif kind == "joined":
            row.state, row.incarnation = "training", int(ev.get("incarnation", 0))
        elif kind == "progress":
            row.step, row.loss = int(ev.get("step", row.step)), ev.get("loss")
            row.tokens += int(ev.get("tokens", 0))
            if ev.get("wall_s"):
                row.rates.append(float(ev.get("tokens", 0)) / float(ev["wall_s"]))
        elif kind == "learner_stop":
            row.state = "stopped"

    def on_journal(self, entry: dict[str, Any]) -> None:
        kind, st = entry.get("kind"), self.state
        if kind == "ready":
            st.ready_t, st.status = float(entry["t"]), "running"
        elif kind == "fault_inject":
            st.faults_injected += 1
            st.faults_active[entry["fault_id"]] = f"{entry['fault']} {entry['target']}"
        elif kind == "fault_heal":
            st.faults_active.pop(entry["fault_id"], None)
        elif kind == "run_end":
            st.status = entry.get("status", "ended")
        elif kind == "node_state" and entry.get("node", "").startswith("learner-"):
            row = st.learners.get(int(entry["node"].split("-", 1)[1]))
            if row is not None and entry.get("state") != "up":
                row.state = entry["state"]
            elif row is not None:
                row.state = "training"
        elif kind == "node_exit" and entry.get("node", "").startswith("learner-"):
            row = st.learners.get(int(entry["node"].split("-", 1)[1]))
            if row is not None:
                row.state = "down"

    def on_status(self, status: dict[str, Any]) -> None:
        st = self.state
        st.versions = [int(v) for v in status.get("versions", st.versions)]
        st.outer_updates = int(status.get("outer_updates", st.outer_updates))
        st.tokens_merged = int(status.get("tokens_merged", st.tokens_merged))


def render(state: LiveState) -> Panel:
    table = Table(expand=True)
    for col in ("learner", "state", "inc", "step", "tokens", "loss"):
        table.add_column(col, justify="right" if col not in ("learner", "state") else "left")
    for i, row in sorted(state.learners.items()):
        style = {"training": "green", "down": "red", "paused": "yellow", "throttled": "yellow",
                 "partitioned": "magenta", "degraded": "magenta"}.get(row.state, "")
        table.add_row(f"learner-{i}", Text(row.state, style=style), str(row.incarnation), str(row.step),
                      f"{row.tokens:,}", "-" if row.loss is None else f"{row.loss:.3f}")
    goodput = state.goodput_estimate
    summary = Text.assemble(
        ("versions ", "bold"), (" ".join(str(v) for v in state.versions) or "-"),
        ("   outer updates ", "bold"), str(state.outer_updates),
        ("   tokens merged ", "bold"), f"{state.tokens_merged:,}",
        ("   goodput ≈ ", "bold"), "-" if goodput is None else f"{goodput:.2f}")
    faults = Text.assemble(("faults ", "bold"), f"{state.faults_injected} injected, active: ",
                           ", ".join(sorted(state.faults_active.values())) or "none")
    title = (f"chaosloco  {state.status}  {state.elapsed_s:5.0f} s elapsed  "
             f"{state.time_left_s:5.0f} s left")
    return Panel(Group(table, summary, faults), title=title)


def fault_line(entry: dict[str, Any], ready_t: float | None) -> str | None:
    """The plain line printed for a journal entry when the table is off."""
    at = "" if ready_t is None else f"+{float(entry['t']) - ready_t:7.1f}s "
    kind = entry.get("kind")
    if kind == "fault_inject":
        return f"{at}inject {entry['fault_id']} ({entry['fault']} {entry['target']})"
    if kind == "fault_heal":
        return f"{at}heal   {entry['fault_id']}"
    if kind == "ready":
        return f"ready: learners {entry.get('learners')}"
    if kind == "run_end":
        return f"{at}run {entry.get('status')}: {entry.get('reason', '')}"
    return None


class LiveView:
    """Follows a run folder from a thread; a rich table on a terminal, lines elsewhere."""

    def __init__(self, run_dir: str | Path, *, duration_s: float, learners: int,
                 control_url: Callable[[], str | None], console: Console | None = None,
                 enabled: bool | None = None, refresh_s: float = 1.0) -> None:
        self.run_dir = Path(run_dir)
        self.console = console or Console()
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self.model = LiveModel(duration_s, learners)
        self._control_url = control_url
        self._refresh_s = refresh_s
        self._events = JsonlTail(self.run_dir / "events.jsonl")
        self._journal = JsonlTail(self.run_dir / "journal.jsonl")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None

    def poll(self) -> LiveState:
        for ev in self._events.read_new():
            self.model.on_event(ev)
        for entry in self._journal.read_new():
            self.model.on_journal(entry)
            if not self.enabled:
                line = fault_line(entry, self.model.state.ready_t)
                if line:
                    self.console.print(line, markup=False, highlight=False)
        status = self._fetch_status()
        if status:
            self.model.on_status(status)
        self.model.state.now = time.time()
        return self.model.state

    def _fetch_status(self) -> dict[str, Any] | None:
        try:
            url = self._control_url()
        except Exception:  # the backend has no address yet
            return None
        if not url:
            return None
        try:
            with urllib.request.urlopen(f"{url}/status", timeout=_STATUS_TIMEOUT_S) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None  # the synchronizer may be down on purpose (syncer_crash)

    def start(self) -> None:
        if self.enabled:
            self._live = Live(render(self.model.state), console=self.console, refresh_per_second=2,
                              transient=False)
            self._live.start()
        self._thread = threading.Thread(target=self._loop, name="live-view", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._refresh_s):
            self._tick()

    def _tick(self) -> None:
        try:
            state = self.poll()
            if self._live is not None:
                self._live.update(render(state))
        except Exception as e:  # the view must never take a run down
            self.console.print(f"live view: {e}", markup=False)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._tick()  # last lines (run_end) and a final frame
        if self._live is not None:
            self._live.stop()
