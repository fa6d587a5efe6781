"""`chaosloco run SCENARIO`: bring up a cluster, break it on a seeded schedule, judge it.

    chaosloco run SCENARIO [--backend local|compose] [--trainer decoupled|diloco|ddp]
                  [--seed N] [--out DIR] [--baseline DIR] [--no-faults]
                  [--toxiproxy ours|official] [--quiet]

``--trainer`` overrides the scenario's mode, so one schedule replays against each
trainer; ``--seed`` overrides the scenario's seed (the schedule depends on nothing
else); ``--no-faults`` drops the schedule (same cluster, links and checks), which makes
the fault-free baseline that ``--baseline`` compares against. The last line printed is the run folder, which holds result.json. Exit codes:
0 every check passed, 1 a check failed (or could not be judged), 2 bad input,
3 infrastructure failed, 130 interrupted (SIGINT / SIGTERM; healed and torn down).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import uuid
from pathlib import Path

from harness.errors import ConfigError
from harness.journal import Journal
from trainers.config import Mode

BACKENDS = ("local", "compose")


def make_backend(name: str, journal: Journal, *, detach: bool = False):
    """local -> LocalBackend; compose -> ComposeBackend (imported only when asked for)."""
    if name == "local":
        from harness.local import LocalBackend
        return LocalBackend(journal=journal, detach=detach)
    if name == "compose":
        from harness.compose_backend import ComposeBackend
        return ComposeBackend(journal=journal)
    raise ConfigError(f"must be one of {', '.join(BACKENDS)}", key="--backend", value=name)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chaosloco run", description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", type=Path)
    p.add_argument("--backend", choices=BACKENDS, default="local")
    p.add_argument("--trainer", choices=[m.value for m in Mode], help="override the scenario's trainer mode")
    p.add_argument("--seed", type=int, help="schedule seed (default: the scenario's)")
    p.add_argument("--out", type=Path, help="run folder (default: runs/<scenario>-<run id>)")
    p.add_argument("--baseline", type=Path, help="a fault-free run folder, for the quality gap")
    p.add_argument("--no-faults", action="store_true", help="run the scenario without its fault schedule "
                   "(a baseline for --baseline)")
    p.add_argument("--toxiproxy", choices=("ours", "official"), default="ours",
                   help="compose only: our Toxiproxy-API server, or Shopify's image (needs a registry)")
    p.add_argument("--quiet", action="store_true", help="no live table; one line per fault")
    return p


def _parse(argv: list[str]) -> argparse.Namespace:
    try:
        return parser().parse_args(argv)
    except SystemExit as e:  # argparse already printed the one line
        if e.code in (0, None):
            raise
        raise ConfigError("bad arguments (see usage above)") from None


def load(args: argparse.Namespace):
    from harness.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    if args.trainer:
        scenario = dataclasses.replace(scenario, trainer=scenario.trainer.replace(mode=Mode(args.trainer)))
    if args.no_faults:
        scenario = dataclasses.replace(scenario, timed=(), random=())
    if args.baseline is not None and not (args.baseline / "events.jsonl").exists():
        raise ConfigError("not a run folder (no events.jsonl)", key="--baseline", value=str(args.baseline))
    return scenario


def main(argv: list[str]) -> int:
    args = _parse(argv)
    scenario = load(args)
    seed = scenario.seed if args.seed is None else args.seed
    run_id = uuid.uuid4().hex[:8]
    run_dir = args.out or Path("runs") / f"{scenario.name}-{run_id}"
    if (run_dir / "run.json").exists():
        raise ConfigError("already holds a run; choose another folder", key="--out", value=str(run_dir))

    from harness import result as result_mod
    from harness.live import LiveView
    from harness.run import Run, RunRequest, check_supported, write_run_files
    from harness.schedule import build_schedule

    schedule = build_schedule(scenario, seed)
    check_supported(schedule, args.backend)  # bad input: refused before anything starts
    if args.toxiproxy == "official" and args.backend != "compose":
        raise ConfigError("the official Toxiproxy image needs --backend compose", key="--toxiproxy",
                          value=args.toxiproxy)

    req = RunRequest(scenario=scenario, seed=seed, backend_name=args.backend, run_dir=run_dir,
                     run_id=run_id, baseline_dir=args.baseline,
                     official_toxiproxy=args.toxiproxy == "official")
    write_run_files(req)
    journal = Journal(run_dir / "journal.jsonl")
    backend = make_backend(args.backend, journal)
    run = Run(req, backend, schedule=schedule, journal=journal)
    view = LiveView(run_dir, duration_s=scenario.duration_s, learners=scenario.trainer.learners,
                    control_url=backend.control_url, enabled=False if args.quiet else None)
    view.start()
    try:
        outcome = run.execute()
    finally:
        view.stop()
        journal.close()

    def warn(line: str) -> None:
        print(line, file=sys.stderr)

    result = result_mod.build_result(run_dir, scenario, backend=args.backend, seed=seed,
                                     status=outcome.status, baseline_dir=args.baseline)
    outcome.result = result
    result_path = result_mod.write_result(run_dir, result)
    result_mod.write_reports(run_dir, warn, baseline_dir=args.baseline)
    print(summary(result, outcome))
    for line in outcome.leftovers:
        warn(f"left behind: {line}")
    print(result_path.parent)
    return outcome.exit_code


def summary(result: dict, outcome) -> str:
    def fmt(v, spec=".3f"):
        return "-" if v is None else format(v, spec)
    failed = [c["name"] for c in result["checks"] if c.get("passed") is False]
    lines = [f"{result['scenario']} [{result['trainer']}, {result['backend']}, seed {result['seed']}]: "
             f"{outcome.status}, verdict {result['verdict']}",
             f"  goodput {fmt(result['goodput'])}  availability {fmt(result['availability_bound'])}  "
             f"efficiency {fmt(result['goodput_efficiency'])}  outer updates {result['outer_updates']}  "
             f"max stall {fmt(result['max_global_stall_seconds'], '.1f')} s",
             "  rejoin: " + (", ".join(f"learner-{r['learner']} {fmt(r['to_first_step_s'], '.1f')} s / "
                                       f"{fmt(r['to_first_merge_s'], '.1f')} s"
                                       for r in result["rejoin_seconds"]) or "none")]
    if failed:
        lines.append("  failed checks: " + ", ".join(failed))
    if outcome.status != "completed":
        lines.append(f"  reason: {outcome.reason}")
    return "\n".join(lines)
