"""Wire bytes per merged token for ``ddp``, ``diloco`` and ``decoupled`` (with and
without quantization of pushes), 2 learners on ``tiny``.

Usage: ``.venv/bin/python benchmarks/wire_bytes.py [--duration 20] [--out DIR]``

Bytes are what the synchronizer logged on its links (``bytes_in`` of join/push,
``bytes_out`` of join/ack: whole frames, headers and HMAC included); tokens are the
tokens merged into the global model. Replies (merged fragments) always travel as
float32, so quantization only shrinks the learner → synchronizer direction.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from trainers import config as config_mod
from trainers.events import read_events
from trainers.train_cmd import run_cluster

CASES = [("ddp", {"mode": "ddp"}), ("diloco", {"mode": "diloco"}), ("decoupled", {"mode": "decoupled"}),
         ("decoupled+bf16", {"mode": "decoupled", "quantize": "bf16"}),
         ("decoupled+int8", {"mode": "decoupled", "quantize": "int8"})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="wire-"))
    rows = []
    for name, fields in CASES:
        cfg = config_mod.from_dict({"learners": 2, "eval_every_s": 600.0, **fields})
        out = root / name.replace("+", "-")
        s = run_cluster(cfg, out, args.duration)
        ev = read_events(out / "events.jsonl")
        up = sum(e.get("bytes_in", 0) for e in ev if e["ev"] == "push")
        down = sum(e.get("bytes_out", 0) for e in ev if e["ev"] == "ack")
        tokens = max(s["tokens_merged"], 1)
        rows.append({"case": name, "wire_bytes": s["wire_bytes"], "tokens_merged": s["tokens_merged"],
                     "bytes_per_token": s["wire_bytes"] / tokens, "push_bytes_per_token": up / tokens,
                     "ack_bytes_per_token": down / tokens, "eval_loss_end": s["eval_loss_end"]})
        r = rows[-1]
        print(f"{name:16} {r['bytes_per_token']:8.2f} B/token (push {r['push_bytes_per_token']:.2f}, "
              f"ack {r['ack_bytes_per_token']:.2f}), eval loss {r['eval_loss_end']:.3f}")
    (root / "wire_bytes.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"details: {root / 'wire_bytes.json'}")


if __name__ == "__main__":
    main()
