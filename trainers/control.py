"""The synchronizer's control port: plain HTTP, never routed through a proxy.

``GET /status`` answers JSON (``versions``, ``outer_updates``, ``tokens_merged``,
``learners`` {id: {``incarnation``, ``last_seen_s_ago``, ``tokens_merged``}}, plus the
grace-window EMAs); ``GET /metrics`` the same figures in the Prometheus text format,
rendered by prometheus_client from a collector that reads the live status (no second
copy of the numbers to keep in step). The stdlib ``ThreadingHTTPServer`` is enough for
two read-only endpoints polled by the harness; it runs in a daemon thread.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily


class _StatusCollector:
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status

    def collect(self):
        s = self.status()
        yield GaugeMetricFamily("chaosloco_outer_updates", "merges applied to the global model",
                                value=s["outer_updates"])
        yield GaugeMetricFamily("chaosloco_tokens_merged", "tokens merged into the global model",
                                value=s["tokens_merged"])
        versions = GaugeMetricFamily("chaosloco_fragment_version", "version of each global fragment",
                                     labels=["fragment"])
        for p, v in enumerate(s["versions"]):
            versions.add_metric([str(p)], v)
        yield versions
        seen = GaugeMetricFamily("chaosloco_learner_last_seen_seconds", "seconds since a learner was heard",
                                 labels=["learner"])
        merged = GaugeMetricFamily("chaosloco_learner_tokens_merged", "tokens merged per learner",
                                   labels=["learner"])
        for m, info in s["learners"].items():
            if info["last_seen_s_ago"] is not None:
                seen.add_metric([m], info["last_seen_s_ago"])
            merged.add_metric([m], info["tokens_merged"])
        yield seen
        yield merged


class ControlServer:
    """Serves ``status()`` on ``host:port`` until ``close()``."""

    def __init__(self, host: str, port: int, status: Callable[[], dict[str, Any]]) -> None:
        registry = CollectorRegistry()
        registry.register(_StatusCollector(status))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] == "/status":
                    body, ctype = json.dumps(status()).encode(), "application/json"
                elif self.path.split("?")[0] == "/metrics":
                    body, ctype = generate_latest(registry), "text/plain; version=0.0.4"
                else:
                    self.send_error(404, "try /status or /metrics")
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass  # polled often; the event log is the record, not access logs

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
