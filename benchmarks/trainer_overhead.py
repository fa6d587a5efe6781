"""Communication overhead of decoupled training: tokens/s per learner alone versus in a
2- and 4-learner decoupled cluster (H=24), on the ``tiny`` preset.

Usage: ``.venv/bin/python benchmarks/trainer_overhead.py [--duration 30] [--out DIR]``

For each cluster size N it runs ``chaosloco train``'s cluster (``run_cluster``) and reads
the learners' ``progress`` events: ``tokens/wall_s`` is the rate a learner achieved,
``compute_s/wall_s`` the share of its wall time spent in forward/backward/optimizer.
The inner loop's communication overhead is ``1 - compute_s/wall_s`` (time spent on
anything but compute: snapshotting, queueing pushes, applying merged fragments). On a
shared 2-core machine N learners plus a synchronizer also compete for CPU, which slows
compute itself; that contention is reported separately as the per-learner compute rate
``tokens/compute_s`` relative to N=1, so it is not mistaken for communication.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from trainers import config as config_mod
from trainers.events import read_events
from trainers.train_cmd import run_cluster


def measure(n: int, duration: float, out: Path, sync_every: int) -> dict:
    cfg = config_mod.from_dict({"learners": n, "mode": "decoupled", "sync_every": sync_every,
                                "eval_every_s": 600.0})
    summary = run_cluster(cfg, out, duration)
    events = read_events(out / "events.jsonl")
    per = {}
    for i in range(n):
        prog = [e for e in events if e["ev"] == "progress" and e["learner"] == i][1:]  # skip warm-up window
        tokens = sum(e["tokens"] for e in prog)
        wall = sum(e["wall_s"] for e in prog)
        compute = sum(e["compute_s"] for e in prog)
        per[f"learner-{i}"] = {"tokens_per_s": tokens / wall, "compute_tokens_per_s": tokens / compute,
                               "overhead": 1 - compute / wall}
    mean = lambda k: sum(v[k] for v in per.values()) / n  # noqa: E731
    return {"learners": n, "tokens_per_s": mean("tokens_per_s"), "compute_tokens_per_s": mean("compute_tokens_per_s"),
            "overhead": mean("overhead"), "per_learner": per, "outer_updates": summary["outer_updates"],
            "eval_loss_end": summary["eval_loss_end"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--sync-every", type=int, default=24)
    ap.add_argument("--sizes", default="1,2,4")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="overhead-"))
    rows = [measure(n, args.duration, root / f"n{n}", args.sync_every) for n in map(int, args.sizes.split(","))]
    alone = rows[0]["tokens_per_s"]
    for r in rows:
        r["rate_vs_alone"] = r["tokens_per_s"] / alone
        print(f"N={r['learners']}: {r['tokens_per_s']:8.0f} tok/s per learner ({r['rate_vs_alone']:.0%} of alone), "
              f"compute-only {r['compute_tokens_per_s']:8.0f} tok/s, in-loop overhead {r['overhead']:.1%}")
    (root / "overhead.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"details: {root / 'overhead.json'}")


if __name__ == "__main__":
    main()
