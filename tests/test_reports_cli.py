"""`chaosloco report` and `chaosloco compare` through the real dispatcher: files written,
exit codes, and a bad run folder named in one line with exit 2."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from harness.cli import main
from report_fixtures import build_run, parse_html


def test_report_rerenders_html_and_junit(tmp_path, capsys):
    run = build_run(tmp_path / "run", learners=3, duration_s=20)
    base = build_run(tmp_path / "base", learners=3, duration_s=20, seed=3)
    assert main(["report", str(run.path), "--baseline", str(base.path)]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(run.path / "report.html"), str(run.path / "junit.xml")]
    assert parse_html((run.path / "report.html").read_text()).find("header", cls="banner")
    assert ET.parse(run.path / "junit.xml").getroot().tag == "testsuites"


def test_compare_puts_runs_side_by_side(tmp_path, capsys):
    dirs = [build_run(tmp_path / mode, learners=3, duration_s=30, trainer=mode).path
            for mode in ("decoupled", "diloco", "ddp")]
    out = tmp_path / "cmp.html"
    assert main(["compare", *map(str, dirs), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    dom = parse_html(out.read_text())
    rows = dom.find("table", cls="goodput").find_all("tr", cls="run")
    assert [r.attrs["data-run"] for r in rows] == ["decoupled", "diloco", "ddp"]
    goodputs = [json.loads((d / "result.json").read_text())["goodput"] for d in dirs]
    for row, g in zip(rows, goodputs):
        assert row.find("td", data_col="goodput").text() == f"{g * 100:.1f}%"
    # the decoupled trainer kept merging through the kill, so it has the best goodput (bold)
    assert goodputs[0] > goodputs[2]
    assert rows[0].find("td", data_col="goodput").find("b")
    assert "Highest goodput: decoupled" in dom.find("header", cls="banner").text()
    curves = dom.find("section", id="curves").find_all("svg", cls="line-chart")
    assert len(curves) == 3
    for chart in curves:  # one overlaid line per run
        assert len(chart.find_all("path", cls="series")) == 3
    assert len(dom.find("section", id="timelines").find_all("svg", cls="timeline")) == 3


@pytest.mark.parametrize("breakage, named", [
    ("no_dir", "missing-run"),
    ("no_result", "result.json"),
    ("bad_result", "result.json"),
    ("bad_checks", "checks"),
    ("no_journal", "journal.jsonl"),
    ("bad_run_json", "run.json"),
])
def test_bad_run_folder_is_one_line_exit_2(tmp_path, capsys, breakage, named):
    run = build_run(tmp_path / "run", learners=3, duration_s=10)
    target = run.path
    if breakage == "no_dir":
        target = tmp_path / "missing-run"
    elif breakage == "no_result":
        (run.path / "result.json").unlink()
    elif breakage == "bad_result":
        (run.path / "result.json").write_text("{not json")
    elif breakage == "bad_checks":
        (run.path / "result.json").write_text(json.dumps({"checks": "all good"}))
    elif breakage == "no_journal":
        (run.path / "journal.jsonl").unlink()
    elif breakage == "bad_run_json":
        (run.path / "run.json").write_text("[1, 2]")
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err
    assert not (run.path / "report.html").exists()


def test_usage_mistakes_exit_2(tmp_path, capsys):
    assert main(["compare"]) == 2
    assert main(["report"]) == 2
    run = build_run(tmp_path / "run", learners=3, duration_s=10)
    assert main(["compare", str(run.path), "--out", str(tmp_path / "nowhere" / "x.html")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["compare", str(run.path), "--out", str(tmp_path)]) == 0  # a folder: written inside
    assert (tmp_path / "comparison.html").is_file()


def test_report_command_in_a_child_process_from_another_folder(tmp_path):
    # The installed entry point, run outside the repository (as a user would).
    import subprocess
    import sys
    run = build_run(tmp_path / "run", learners=3, duration_s=10)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(run.path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "<style>" in (run.path / "report.html").read_text()
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(tmp_path / "nope")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nope" in proc.stderr
