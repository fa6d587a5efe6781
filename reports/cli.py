"""``chaosloco report DIR`` and ``chaosloco compare DIR... [--out FILE]``.

``report`` re-renders a finished run's ``report.html`` and ``junit.xml`` from its folder
(the run loop writes both at the end of every run; this is for later re-rendering, or an
interrupted run). Both commands exit 0 when the page was written; a missing or malformed
run folder is a ConfigError naming the file (exit 2 through harness.cli).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import ConfigError
from reports.compare import write_comparison
from reports.html import write_report
from reports.junit import write_junit


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as our ConfigError (one line, exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(message)


def report_main(argv: list[str]) -> int:
    parser = _Parser(prog="chaosloco report", description="Render DIR/report.html and DIR/junit.xml from a run folder.")
    parser.add_argument("run_dir", metavar="DIR", type=Path, help="the run folder")
    parser.add_argument("--baseline", metavar="DIR", type=Path,
                        help="a fault-free run folder whose eval loss is drawn for comparison")
    args = parser.parse_args(argv)
    html_path = write_report(args.run_dir, baseline_dir=args.baseline)
    junit_path = write_junit(args.run_dir)
    print(html_path)
    print(junit_path)
    return 0


def compare_main(argv: list[str]) -> int:
    parser = _Parser(prog="chaosloco compare", description="One report putting several runs side by side.")
    parser.add_argument("run_dirs", metavar="DIR", type=Path, nargs="+", help="run folders to compare")
    parser.add_argument("--out", metavar="FILE", type=Path, default=Path("comparison.html"),
                        help="where to write the page (default: ./comparison.html)")
    args = parser.parse_args(argv)
    print(write_comparison(args.run_dirs, args.out))
    return 0
