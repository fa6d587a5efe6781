"""Container entry: send this node's output to ``--log``, then become ``python ARGS``.

The runtime image is ``FROM scratch`` and has no shell to write ``> log 2>&1``, and the
log must land in the run folder on the host (bind-mounted) even when the harness that
started the container is gone, so the redirection happens here, before ``exec``: the
node keeps PID 1 of its container and receives ``docker kill --signal`` itself.

    python -m compose.launch --log DIR/logs/learner-0.log -- -m trainers.learner ...
"""
from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] != "--log" or argv[2] != "--":
        print("usage: python -m compose.launch --log FILE -- PYTHON-ARGS...", file=sys.stderr)
        return 2
    log, args = argv[1], argv[3:]
    os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.execv(sys.executable, [sys.executable, *args])
    return 127  # not reached: execv replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
