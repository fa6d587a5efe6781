"""`chaosloco`: the one command-line entry point.

Each subcommand lives with the part that owns it and is imported only when used, so
`chaosloco validate` does not pay for importing torch. A subcommand is a function
``main(argv: list[str]) -> int``; this module turns chaosloco's errors into one line on
stderr and the documented exit code (0 ok, 1 check failed, 2 bad input, 3 infrastructure).
"""
from __future__ import annotations

import importlib
import sys

from harness.errors import ChaoslocoError

SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module, function, one-line help)
    "run": ("harness.run_cmd", "main", "run a chaos scenario and judge it"),
    "validate": ("harness.scenario", "validate_main", "check a scenario file; start nothing"),
    "up": ("harness.manual_cmd", "up_main", "bring up a cluster and leave it running"),
    "inject": ("harness.manual_cmd", "inject_main", "inject a fault into a running cluster"),
    "down": ("harness.manual_cmd", "down_main", "tear down a running cluster (--all: everything labelled chaosloco)"),
    "train": ("trainers.train_cmd", "main", "train on a fault-free local cluster"),
    "toxiproxy-server": ("faults.toxiproxy.server", "main", "serve the Toxiproxy REST API"),
    "report": ("reports.cli", "report_main", "render DIR/report.html from a run folder"),
    "compare": ("reports.cli", "compare_main", "one report comparing several runs"),
}


def _usage() -> str:
    lines = ["usage: chaosloco SUBCOMMAND [ARGS...]", "", "subcommands:"]
    lines += [f"  {name:<17} {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"chaosloco: unknown subcommand {name!r}\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = SUBCOMMANDS[name]
    try:
        return int(getattr(importlib.import_module(module), func)(rest) or 0)
    except ChaoslocoError as e:
        print(f"chaosloco {name}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"chaosloco {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
