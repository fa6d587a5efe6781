"""The event log and the journal: appends from many writers never interleave."""
import multiprocessing
import os

from harness.journal import Journal, read_journal
from trainers.events import EventLog, read_events


def _writer(path, src, n):
    log = EventLog(path, src)
    for i in range(n):
        log.emit("progress", i=i, pad="x" * 300)
    log.close()


def test_concurrent_processes_append_whole_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    procs = [multiprocessing.Process(target=_writer, args=(path, f"learner-{k}", 400)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    events = read_events(path)
    assert len(events) == 1600
    for k in range(4):
        mine = [e["i"] for e in events if e["src"] == f"learner-{k}"]
        assert mine == list(range(400)), "each writer's lines arrive whole and in order"


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path, "syncer")
    log.emit("merge", fragment=0, version=1)
    log.close()
    with open(path, "ab") as fh:
        fh.write(b'{"t": 1.0, "src": "syncer", "ev": "mer')  # killed mid-write
    assert [e["ev"] for e in read_events(path)] == ["merge"]


def test_missing_log_reads_empty(tmp_path):
    assert read_events(tmp_path / "nope.jsonl") == []


def test_journal_records_with_injected_clock(tmp_path):
    ticks = iter([10.0, 11.5])
    journal = Journal(tmp_path / "journal.jsonl", clock=lambda: next(ticks))
    journal.record("ready", learners=2)
    journal.record("fault_inject", fault_id="f001", fault="kill", target="learner-1")
    journal.close()
    got = read_journal(tmp_path / "journal.jsonl")
    assert [(r["t"], r["kind"]) for r in got] == [(10.0, "ready"), (11.5, "fault_inject")]
    assert got[1]["target"] == "learner-1"
    assert oct(os.stat(tmp_path / "journal.jsonl").st_mode)[-3:] == "644"
