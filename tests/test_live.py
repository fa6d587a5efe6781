"""The live view: folding events and journal entries into its state, rendering to a
fixed-width console, plain fault lines when the table is off, /status polling."""
from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rich.console import Console

from harness.journal import Journal
from harness.local_proc import free_port
from harness.live import LiveModel, LiveView, fault_line, render
from trainers.events import EventLog


def _console():
    buf = io.StringIO()
    return Console(file=buf, width=100, force_terminal=False, color_system=None), buf


def test_model_follows_learners_merges_and_faults():
    m = LiveModel(duration_s=60, learners=2)
    m.on_journal({"t": 100.0, "kind": "ready", "learners": [0, 1]})
    m.on_event({"ev": "joined", "learner": 0, "incarnation": 0})
    m.on_event({"ev": "joined", "learner": 1, "incarnation": 0})
    m.on_event({"ev": "progress", "learner": 0, "step": 12, "tokens": 1000, "wall_s": 1.0, "loss": 4.5})
    m.on_event({"ev": "progress", "learner": 1, "step": 10, "tokens": 1000, "wall_s": 1.0, "loss": 4.6})
    m.on_event({"ev": "merge", "fragment": 0, "version": 1, "tokens": 500})
    m.on_journal({"t": 101.0, "kind": "fault_inject", "fault_id": "f1", "fault": "kill", "target": "learner-1"})
    m.on_journal({"t": 101.0, "kind": "node_state", "node": "learner-1", "state": "down", "cpu_share": 0})
    st = m.state
    st.now = 110.0
    assert st.learners[1].state == "down" and st.learners[0].state == "training"
    assert st.learners[0].step == 12 and st.tokens_merged == 500 and st.outer_updates == 1
    assert st.faults_active == {"f1": "kill learner-1"} and st.faults_injected == 1
    assert st.elapsed_s == 10.0 and st.time_left_s == 50.0
    assert abs(st.goodput_estimate - 500 / (2000 * 10)) < 1e-9
    m.on_journal({"t": 105.0, "kind": "fault_heal", "fault_id": "f1"})
    m.on_journal({"t": 105.0, "kind": "node_state", "node": "learner-1", "state": "up", "cpu_share": 1.0})
    assert st.faults_active == {} and st.learners[1].state == "training"


def test_status_overrides_what_the_log_suggests():
    m = LiveModel(duration_s=10, learners=1)
    m.on_status({"versions": [3, 4, 2], "outer_updates": 9, "tokens_merged": 12345, "learners": {}})
    assert m.state.versions == [3, 4, 2] and m.state.tokens_merged == 12345


def test_render_shows_every_learner_versions_goodput_faults_and_time_left():
    m = LiveModel(duration_s=90, learners=3)
    m.on_journal({"t": 0.0, "kind": "ready", "learners": [0, 1, 2]})
    for i in range(3):
        m.on_event({"ev": "joined", "learner": i, "incarnation": i})
        m.on_event({"ev": "progress", "learner": i, "step": 7 * i, "tokens": 100, "wall_s": 1.0, "loss": 3.25})
    m.on_status({"versions": [5, 6, 7, 8], "outer_updates": 26, "tokens_merged": 1500})
    m.on_journal({"t": 1.0, "kind": "fault_inject", "fault_id": "f9", "fault": "pause", "target": "learner-2"})
    m.on_journal({"t": 1.0, "kind": "node_state", "node": "learner-2", "state": "paused", "cpu_share": 0})
    m.state.now = 30.0
    console, buf = _console()
    console.print(render(m.state))
    out = buf.getvalue()
    assert all(f"learner-{i}" in out for i in range(3))
    assert "paused" in out and "5 6 7 8" in out and "26" in out and "1,500" in out
    assert "goodput ≈ 0.17" in out  # 1500 / (3 x 100 tok/s x 30 s)
    assert "pause learner-2" in out and "1 injected" in out
    assert "30 s elapsed" in out and "60 s left" in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_fault_lines_are_printed_when_the_table_is_off(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    console, buf = _console()
    view = LiveView(tmp_path, duration_s=10, learners=1, control_url=lambda: None, console=console, enabled=False)
    journal.record("ready", learners=[0])
    journal.record("fault_inject", fault_id="f1-kill", fault="kill", target="learner-0", params={}, planned_s=1)
    view.poll()
    journal.record("fault_heal", fault_id="f1-kill", fault="kill", target="learner-0")
    journal.record("run_end", status="completed", reason="schedule finished")
    view.poll()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "ready: learners [0]"
    assert "inject f1-kill (kill learner-0)" in lines[1] and "heal   f1-kill" in lines[2]
    assert "run completed" in lines[3]


def test_fault_line_ignores_other_records():
    assert fault_line({"t": 1.0, "kind": "node_start", "node": "syncer"}, None) is None


def test_view_polls_the_control_status_and_tails_the_event_log(tmp_path):
    class Status(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"versions": [2, 2], "outer_updates": 4, "tokens_merged": 777}).encode()
            self.send_response(200 if self.path == "/status" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with EventLog(tmp_path / "events.jsonl", "learner-0") as log:
            log.emit("joined", learner=0, incarnation=2)
        console, _ = _console()
        view = LiveView(tmp_path, duration_s=10, learners=1, console=console, enabled=False,
                        control_url=lambda: f"http://127.0.0.1:{server.server_address[1]}")
        st = view.poll()
        assert st.versions == [2, 2] and st.tokens_merged == 777 and st.learners[0].incarnation == 2
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_synchronizer_does_not_break_the_view(tmp_path):
    console, _ = _console()
    view = LiveView(tmp_path, duration_s=10, learners=1, console=console, enabled=False,
                    control_url=lambda: f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert view.poll().versions == []


def test_table_is_off_on_a_non_terminal_by_default(tmp_path):
    console, _ = _console()
    view = LiveView(tmp_path, duration_s=1, learners=1, control_url=lambda: None, console=console)
    assert view.enabled is False
    view.start()
    view.stop()


def test_tail_returns_only_new_complete_lines(tmp_path):
    from harness.tail import JsonlTail
    path = tmp_path / "events.jsonl"
    tail = JsonlTail(path)
    assert tail.read_new() == []  # no file yet
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": ')
    assert tail.read_new() == [{"a": 1}, {"b": 2}]
    assert tail.read_new() == []  # the torn line waits for its end
    with path.open("ab") as fh:
        fh.write(b'3}\nnot json\n{"d": 4}\n')
    assert tail.read_new() == [{"c": 3}, {"d": 4}]
