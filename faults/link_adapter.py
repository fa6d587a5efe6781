"""The only code that talks to a Toxiproxy API server (ours or Shopify's).

Built on toxiproxy-python 0.1.1 (the user's choice): proxies are created, listed,
enabled/disabled and destroyed, and toxics added, listed and destroyed, through its
``Toxiproxy`` and ``Proxy`` classes, and its ``validate_response`` turns 404/409/400
into its ``NotFound``/``ProxyExists``/``InvalidToxic``. Where the library falls short,
this adapter mends it here and nowhere else:

1. One server per process: the library keeps host and port on the class-level
   ``APIConsumer`` that ``toxiproxy.server`` and ``toxiproxy.proxy`` read as module
   globals. Each adapter has its own consumer class bound to its own URL, swapped into
   those two modules only for the duration of a call, under a process-wide lock; so any
   number of adapters (servers) can live in one process, from any thread.
2. No request timeouts: every request goes through this adapter's own
   ``requests.Session`` with ``timeout_s``; a timeout or refused connection is an
   ``InfraError`` naming the server, the method and the path. (``Toxiproxy.version()``
   also probes the port with an unbounded connect, so ``version`` asks ``/version``
   directly.)
3. Errors passing silently: the library returns a 5xx (and 405/413/...) response as if it
   had worked. Here a 5xx is an ``InfraError`` with the server's error text; every 4xx is
   a ``ToxiproxyRequestError`` (an ``InfraError``) with the status, the path and the
   server's message (``ToxicNotFound``/``ProxyNotFound``, ``AlreadyExists``,
   ``BadRequest`` as subclasses).
4. No toxic update: ``update_toxic`` POSTs ``/proxies/{p}/toxics/{t}`` itself (through
   the same consumer), as the Toxiproxy 2.x API defines.
5. ``get_proxy``'s ``None`` for a missing proxy becomes ``ProxyNotFound``, and the
   ``ProxyExists`` that ``create`` raises client-side becomes ``AlreadyExists``.

Every change is verified by reading state back from the server (a proxy's upstream,
enabled flag and bound port; a toxic's type, stream, toxicity and attributes; a toxic or
proxy really gone), so a server that answers 200 but did not do it is caught here.

``heal()`` undoes exactly what this adapter did: it removes the toxics it added and
re-enables the proxies it disabled, tries every item even when one fails (raising the
first failure after, and keeping the failed items booked for the next heal), and is
idempotent, so it is safe after a partial inject and on every exit path. A change whose
outcome is unknown (a timeout, a 5xx) is booked too; a refused one (4xx, e.g. a toxic of
that name that someone else added) is not. ``remove_toxic`` and ``delete_proxy`` accept
what is already gone. ``reset()`` is the server-wide ``POST /reset``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

import requests
import toxiproxy.api as tp_api
import toxiproxy.proxy as tp_proxy
import toxiproxy.server as tp_server
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from harness.errors import InfraError

# toxiproxy-python reads its API consumer from these module globals (mend 1).
_LIBRARY_LOCK = threading.RLock()


@dataclasses.dataclass(frozen=True)
class ProxyInfo:
    name: str
    listen: str  # "host:port" as the server reports it (the real port when created with :0)
    upstream: str
    enabled: bool


@dataclasses.dataclass(frozen=True)
class ToxicInfo:
    name: str
    type: str
    stream: str  # "upstream" | "downstream"
    toxicity: float
    attributes: Mapping[str, Any]


class ToxiproxyRequestError(InfraError):
    """The server refused a request (4xx)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class ProxyNotFound(ToxiproxyRequestError):
    pass


class ToxicNotFound(ToxiproxyRequestError):
    pass


class AlreadyExists(ToxiproxyRequestError):
    pass


class BadRequest(ToxiproxyRequestError):
    pass


def _port(listen: str) -> int:
    try:
        return int(listen.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return -1


class ToxiproxyAdapter:
    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if not parts.hostname or not parts.port:
            raise InfraError(f"Toxiproxy URL must be http://host:port, got {url!r}")
        if timeout_s <= 0:
            raise InfraError(f"Toxiproxy request timeout must be > 0, got {timeout_s!r}")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.timeout_s = float(timeout_s)
        self._session = requests.Session()
        self._added: dict[tuple[str, str], None] = {}  # (proxy, toxic) this adapter added, in order
        self._disabled: dict[str, None] = {}  # proxies this adapter disabled
        self._consumer = self._make_consumer(parts.hostname, parts.port)

    # ---- plumbing (mends 1-3) ---------------------------------------------------
    def _make_consumer(self, host: str, port: int) -> type:
        adapter = self

        class Consumer(tp_api.APIConsumer):
            @classmethod
            def get(cls, url, params=None, **kwargs):
                return adapter._request("GET", url, params=params)

            @classmethod
            def post(cls, url, data=None, json=None, **kwargs):
                return adapter._request("POST", url, data=data, json=json)

            @classmethod
            def delete(cls, url, **kwargs):
                return adapter._request("DELETE", url)

        Consumer.host, Consumer.port = host, port
        return Consumer

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        where = f"Toxiproxy at {self.url}: {method} {path}"
        try:
            response = self._session.request(method, self.url + path, timeout=self.timeout_s, **kwargs)
        except requests.Timeout as e:
            raise InfraError(f"{where}: no answer within {self.timeout_s:g} s") from e
        except requests.RequestException as e:
            raise InfraError(f"{where}: {e}") from e
        status = response.status_code
        if status >= 500:
            raise InfraError(f"{where} -> {status}: {_message(response)}")
        if status >= 400 and status not in (400, 404, 409):  # the library passes these silently
            raise BadRequest(f"{where} -> {status}: {_message(response)}", status=status)
        try:
            return tp_api.validate_response(response)
        except NotFound:
            cls = ToxicNotFound if "/toxics/" in path else ProxyNotFound
            raise cls(f"{where} -> 404: {_message(response)}", status=404) from None
        except ProxyExists:
            raise AlreadyExists(f"{where} -> 409: {_message(response)}", status=409) from None
        except InvalidToxic:
            raise BadRequest(f"{where} -> 400: {_message(response)}", status=400) from None

    @contextlib.contextmanager
    def _library(self) -> Iterator[None]:
        """toxiproxy-python, pointed at this adapter's server for one call."""
        with _LIBRARY_LOCK:
            saved = tp_server.APIConsumer, tp_proxy.APIConsumer
            tp_server.APIConsumer = tp_proxy.APIConsumer = self._consumer
            try:
                yield
            except ProxyExists as e:  # raised client-side: create() checks the list first
                raise AlreadyExists(f"Toxiproxy at {self.url}: {e}", status=409) from None
            finally:
                tp_server.APIConsumer, tp_proxy.APIConsumer = saved

    @staticmethod
    def _handle(name: str) -> tp_proxy.Proxy:
        # Proxy's methods use only its name; the rest is filled for the constructor.
        return tp_proxy.Proxy(name=name, upstream="", enabled=True, listen="")

    def _mismatch(self, what: str, want: object, got: object) -> InfraError:
        return InfraError(f"Toxiproxy at {self.url}: {what} did not take effect: wanted {want!r}, "
                          f"the server reports {got!r}")

    # ---- server ------------------------------------------------------------------
    def version(self) -> str:
        response = self._request("GET", "/version")
        text = response.text.strip()
        try:  # Toxiproxy >= 2.6 answers JSON, older ones plain text
            data = json.loads(text)
            if isinstance(data, dict) and "version" in data:
                return str(data["version"])
        except ValueError:
            pass
        return text

    def reset(self) -> None:
        with self._library():
            tp_server.Toxiproxy().reset()
        for p in self.proxies():
            if not p.enabled or self.toxics(p.name):
                raise self._mismatch(f"reset of {p.name}", "enabled, no toxics", p)
        self._added.clear()
        self._disabled.clear()

    # ---- proxies -------------------------------------------------------------------
    def create_proxy(self, name: str, listen: str, upstream: str, *, enabled: bool = True) -> ProxyInfo:
        with self._library():
            tp_server.Toxiproxy().create(upstream=upstream, name=name, listen=listen, enabled=enabled)
        info = self.get_proxy(name)
        wanted_port = _port(listen)
        if info.upstream != upstream or info.enabled != enabled or \
                (wanted_port > 0 and _port(info.listen) != wanted_port) or (enabled and _port(info.listen) <= 0):
            raise self._mismatch(f"create proxy {name}", (listen, upstream, enabled), info)
        return info

    def get_proxy(self, name: str) -> ProxyInfo:
        with self._library():
            proxy = tp_server.Toxiproxy().get_proxy(name)
        if proxy is None:  # mend 5
            raise ProxyNotFound(f"Toxiproxy at {self.url}: no proxy named {name!r}", status=404)
        return ProxyInfo(proxy.name, proxy.listen, proxy.upstream, bool(proxy.enabled))

    def proxies(self) -> list[ProxyInfo]:
        with self._library():
            found = tp_server.Toxiproxy().proxies()
        return [ProxyInfo(p.name, p.listen, p.upstream, bool(p.enabled)) for p in found.values()]

    def delete_proxy(self, name: str) -> None:
        """Idempotent: a proxy already gone is fine."""
        try:
            with self._library():
                self._handle(name).destroy()
        except ProxyNotFound:
            pass
        if any(p.name == name for p in self.proxies()):
            raise self._mismatch(f"delete proxy {name}", "gone", "still listed")
        self._disabled.pop(name, None)
        self._added = {k: None for k in self._added if k[0] != name}

    def set_enabled(self, name: str, enabled: bool) -> None:
        if not enabled:  # booked first: a disable that timed out may still have happened
            self._disabled[name] = None
        with self._library():
            handle = self._handle(name)
            handle.enable() if enabled else handle.disable()
        if enabled:
            self._disabled.pop(name, None)
        got = self.get_proxy(name).enabled
        if got != enabled:
            raise self._mismatch(f"enabled of {name}", enabled, got)

    # ---- toxics --------------------------------------------------------------------
    def toxics(self, proxy: str) -> list[ToxicInfo]:
        with self._library():
            found = self._handle(proxy).toxics()
        return [ToxicInfo(t.name, t.type, t.stream, float(t.toxicity), dict(t.attributes)) for t in found.values()]

    def _toxic(self, proxy: str, name: str) -> ToxicInfo | None:
        return next((t for t in self.toxics(proxy) if t.name == name), None)

    def _verify(self, proxy: str, name: str, *, type: str | None, stream: str | None,
                toxicity: float | None, attributes: Mapping[str, Any] | None) -> ToxicInfo:
        got = self._toxic(proxy, name)
        want = {"type": type, "stream": stream, "toxicity": toxicity}
        if got is None or any(v is not None and getattr(got, k) != v for k, v in want.items()) or \
                any(got.attributes.get(k) != v for k, v in (attributes or {}).items()):
            raise self._mismatch(f"toxic {name} on {proxy}", {**want, "attributes": dict(attributes or {})}, got)
        return got

    def add_toxic(self, proxy: str, *, name: str, type: str, stream: str = "downstream",
                  toxicity: float = 1.0, attributes: Mapping[str, Any] | None = None) -> ToxicInfo:
        attrs = dict(attributes or {})
        try:
            with self._library():
                self._handle(proxy).add_toxic(name=name, type=type, stream=stream, toxicity=toxicity,
                                              attributes=attrs)
        except ToxiproxyRequestError:
            raise  # refused: nothing was added (a 409 means the toxic is someone else's)
        except InfraError:
            self._added[(proxy, name)] = None  # timeout or 5xx: it may be there, so heal tries
            raise
        self._added[(proxy, name)] = None
        return self._verify(proxy, name, type=type, stream=stream, toxicity=float(toxicity), attributes=attrs)

    def update_toxic(self, proxy: str, name: str, *, toxicity: float | None = None,
                     attributes: Mapping[str, Any] | None = None) -> ToxicInfo:
        body: dict[str, Any] = {}
        if toxicity is not None:
            body["toxicity"] = toxicity
        if attributes is not None:
            body["attributes"] = dict(attributes)
        self._request("POST", f"/proxies/{proxy}/toxics/{name}", json=body)  # mend 4
        return self._verify(proxy, name, type=None, stream=None,
                            toxicity=None if toxicity is None else float(toxicity), attributes=attributes)

    def remove_toxic(self, proxy: str, name: str) -> None:
        """Idempotent: a toxic (or its proxy) already gone is fine."""
        try:
            with self._library():
                self._handle(proxy).destroy_toxic(name)
        except (ToxicNotFound, ProxyNotFound):
            pass
        self._added.pop((proxy, name), None)
        try:
            still = self._toxic(proxy, name)
        except ProxyNotFound:
            return
        if still is not None:
            raise self._mismatch(f"remove toxic {name} from {proxy}", "gone", still)

    # ---- healing -------------------------------------------------------------------
    def heal(self) -> None:
        """Remove every toxic this adapter added, re-enable every proxy it disabled.

        Every item is tried even if one fails; the first failure is raised at the end,
        and what failed stays on the books, so calling heal again retries just that.
        """
        first: Exception | None = None
        for proxy, name in list(self._added):
            try:
                self.remove_toxic(proxy, name)
            except InfraError as e:
                first = first or e
        for proxy in list(self._disabled):
            try:
                self.set_enabled(proxy, True)
            except ProxyNotFound:
                self._disabled.pop(proxy, None)  # deleted meanwhile: nothing left to heal
            except InfraError as e:
                first = first or e
        if first is not None:
            raise first

    def pending(self) -> tuple[list[tuple[str, str]], list[str]]:
        """What heal would undo now: (proxy, toxic) pairs added, proxies disabled."""
        return list(self._added), list(self._disabled)

    def close(self) -> None:
        self._session.close()


def _message(response: requests.Response) -> str:
    try:
        data = response.json()
        if isinstance(data, dict) and "error" in data:
            return str(data["error"])
    except ValueError:
        pass
    return response.text.strip()[:200] or response.reason or "no message"
