"""The backend protocol: what the run needs from a place that runs a cluster.

Two backends implement it: ``harness.local`` (child processes on 127.0.0.1, the
embedded default) and ``harness.compose_backend`` (Docker Compose containers). A run
and every fault injector talk only to this protocol, so every scenario runs on either
backend unchanged. Methods that a backend cannot honour raise ``Unsupported`` (for
example an IP-level network disconnect on the local backend).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol, runtime_checkable

from harness.errors import ChaoslocoError
from trainers.config import TrainerConfig


class Unsupported(ChaoslocoError):
    """This backend cannot perform the requested action."""

    exit_code = 2


@dataclasses.dataclass(frozen=True)
class LinkSpec:
    """Baseline conditions of one learner link (wide-area modelling), both directions."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_kbps: float | None = None  # KB/s as Toxiproxy's bandwidth toxic; None = unlimited


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    run_id: str  # short, [a-z0-9-]; names, ports and folders derive from it
    run_dir: Path
    trainer: TrainerConfig
    cpu_shares: tuple[float, ...] = ()  # per learner; 1.0 = one full core; empty = unthrottled
    links: tuple[LinkSpec, ...] = ()  # per learner; empty = no baseline toxics
    official_toxiproxy: bool = False  # compose only: Shopify's image instead of ours
    seed: int = 0  # the run's seed: the proxy server's random choices (toxicity, jitter) follow it

    @property
    def learner_names(self) -> list[str]:
        return [f"learner-{i}" for i in range(self.trainer.learners)]


@runtime_checkable
class Backend(Protocol):
    name: str

    def start(self, spec: ClusterSpec) -> None:
        """Starts proxy server, synchronizer and learners; returns once all processes
        exist (readiness is the run's job: it waits on events with deadlines)."""

    def toxiproxy_url(self) -> str:
        """Base URL of the Toxiproxy API server that carries the learner links."""

    def control_url(self) -> str:
        """Base URL of the synchronizer's control port (never proxied)."""

    def is_running(self, node: str) -> bool: ...

    def kill(self, node: str) -> None:
        """SIGKILL; the node stays down until start_node."""

    def stop(self, node: str, timeout_s: float = 10.0) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after the timeout)."""

    def start_node(self, node: str) -> None:
        """(Re)starts a node that is not running: a new incarnation."""

    def pause(self, node: str) -> None: ...

    def resume(self, node: str) -> None: ...

    def throttle(self, node: str, cpu_share: float | None) -> None:
        """Limits a node to ``cpu_share`` cores; None lifts the limit."""

    def signal(self, node: str, signum: int) -> None:
        """Sends a signal (the learner's corruption hooks are SIGUSR1 / SIGUSR2)."""

    def disconnect_network(self, node: str) -> None:
        """IP-level partition (compose only; local raises Unsupported)."""

    def reconnect_network(self, node: str) -> None: ...

    def teardown(self) -> list[str]:
        """Stops and removes everything; idempotent. Returns what could NOT be removed."""

    def leftovers(self) -> list[str]:
        """What of this run still exists (processes, containers, networks)."""
