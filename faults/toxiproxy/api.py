"""The Toxiproxy 2.x REST API over our proxies (aiohttp.web).

aiohttp is already a dependency and gives us a hardened HTTP/1.1 parser, keep-alive
and a request-size cap (``client_max_size``, answered with 413) for free; a hand-written
HTTP layer would have to re-earn all three against hostile input, so we do not write one.

Routes, JSON shapes and status codes follow Toxiproxy 2.x (api.go):

    GET  /proxies                        200 {name: proxy}
    POST /proxies                        201 proxy | 400 | 409 exists | 500 cannot listen
    POST /populate                       201 {"proxies": [...]} | 400
    GET|POST|DELETE /proxies/{p}         200 proxy | 200 proxy | 204
    GET|POST /proxies/{p}/toxics         200 [toxic] | 200 toxic, 400 bad toxic, 409 exists
    GET|POST|DELETE /proxies/{p}/toxics/{t}   200 toxic | 200 toxic | 204
    POST /reset                          204 (every proxy enabled, every toxic removed)
    GET  /version                        200 text

Proxy JSON: ``name, listen, upstream, enabled, toxics``; toxic JSON: ``name, type,
stream, toxicity, attributes``; errors: ``{"error": "...", "status": N}``. Every
failure, including ones aiohttp raises itself (404 route, 405, 413), is answered in that
error shape, and an unexpected exception is a JSON 500, never a dropped connection.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any

from aiohttp import web

from faults.toxiproxy.link import ToxicSpec
from faults.toxiproxy.proxy import AddressError, Proxy, split_address
from faults.toxiproxy.toxics import ToxicError, toxic_class

VERSION = "2.12.0-chaosloco"
MAX_BODY = 1 << 20  # 1 MiB: a populate of thousands of proxies still fits
STREAMS = ("upstream", "downstream")
log = logging.getLogger("toxiproxy")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, "status": status, **extra}, status=status)


@web.middleware
async def _errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as e:
        return _error(e.status, str(e))
    except web.HTTPException as e:  # aiohttp's own: unknown route, 405, 413 body too large
        if e.status < 400:
            raise
        return _error(e.status, e.reason.lower())
    except Exception as e:  # a bug of ours: say so in JSON and keep serving
        log.exception("internal error on %s %s", request.method, request.path)
        return _error(500, f"internal error: {type(e).__name__}: {e}")


async def _body(request: web.Request, want: type) -> Any:
    raw = await request.read()  # raises 413 past client_max_size
    try:
        data = json.loads(raw or b"null", parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"bad request body: {e}") from None
    if not isinstance(data, want):
        raise ApiError(400, f"bad request body: expected a JSON {want.__name__}")
    return data


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


class ToxiproxyApi:
    """Holds the proxies; one instance per server."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.proxies: dict[str, Proxy] = {}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY)
        r = app.router
        r.add_get("/version", self.version)
        r.add_post("/reset", self.reset)
        r.add_post("/populate", self.populate)
        r.add_get("/proxies", self.list_proxies)
        r.add_post("/proxies", self.create_proxy)
        r.add_get("/proxies/{proxy}", self.get_proxy)
        r.add_post("/proxies/{proxy}", self.update_proxy)
        r.add_delete("/proxies/{proxy}", self.delete_proxy)
        r.add_get("/proxies/{proxy}/toxics", self.list_toxics)
        r.add_post("/proxies/{proxy}/toxics", self.create_toxic)
        r.add_get("/proxies/{proxy}/toxics/{toxic}", self.get_toxic)
        r.add_post("/proxies/{proxy}/toxics/{toxic}", self.update_toxic)
        r.add_delete("/proxies/{proxy}/toxics/{toxic}", self.delete_toxic)
        return app

    async def close(self) -> None:
        for proxy in list(self.proxies.values()):
            await proxy.stop()
        self.proxies.clear()

    # ---- helpers -----------------------------------------------------------------
    def _proxy(self, request: web.Request) -> Proxy:
        proxy = self.proxies.get(request.match_info["proxy"])
        if proxy is None:
            raise ApiError(404, "proxy not found")
        return proxy

    @staticmethod
    def _toxic(proxy: Proxy, name: str) -> ToxicSpec:
        spec = proxy.toxics.get(name)
        if spec is None:
            raise ApiError(404, "toxic not found")
        return spec

    @staticmethod
    def _proxy_fields(data: dict) -> tuple[str, str, str, bool]:
        name, upstream = data.get("name"), data.get("upstream")
        listen = data.get("listen") or "127.0.0.1:0"
        enabled = data.get("enabled", True)
        if not isinstance(name, str) or not name or "/" in name:
            raise ApiError(400, "missing required field: name")
        if not isinstance(upstream, str) or not upstream:
            raise ApiError(400, "missing required field: upstream")
        if not isinstance(enabled, bool):
            raise ApiError(400, "enabled must be true or false")
        if not isinstance(listen, str):
            raise ApiError(400, "listen must be host:port")
        return name, listen, upstream, enabled

    async def _new_proxy(self, name: str, listen: str, upstream: str, enabled: bool) -> Proxy:
        try:
            proxy = Proxy(name, listen, upstream, seed=self.seed)
        except AddressError as e:
            raise ApiError(400, str(e)) from None
        if enabled:
            try:
                await proxy.start()
            except OSError as e:
                raise ApiError(500, f"cannot listen on {listen}: {e.strerror or e}") from None
        self.proxies[name] = proxy
        return proxy

    @staticmethod
    def _toxic_spec(data: dict, *, base: ToxicSpec | None = None) -> ToxicSpec:
        type_name = data.get("type", base.type if base else None)
        try:
            cls = toxic_class(type_name)
        except ToxicError as e:
            raise ApiError(400, str(e)) from None
        stream = data.get("stream", base.stream if base else "downstream")
        if stream not in STREAMS:
            raise ApiError(400, "stream was invalid, can be either upstream or downstream")
        name = data.get("name", base.name if base else f"{type_name}_{stream}")
        if not isinstance(name, str) or not name or "/" in name:
            raise ApiError(400, f"bad toxic name: {name!r}")
        toxicity = data.get("toxicity", base.toxicity if base else 1.0)
        if isinstance(toxicity, bool) or not isinstance(toxicity, (int, float)) \
                or not math.isfinite(toxicity) or not 0.0 <= toxicity <= 1.0:
            raise ApiError(400, f"toxicity must be a number in [0, 1], got {toxicity!r}")
        attributes = data.get("attributes", {})
        if not isinstance(attributes, dict):
            raise ApiError(400, "attributes must be a JSON object")
        merged = {**(base.attributes if base else {}), **attributes}
        try:
            attrs = cls.validate(merged)
        except ToxicError as e:
            raise ApiError(400, str(e)) from None
        return ToxicSpec(name, type_name, stream, float(toxicity), attrs, cls)

    # ---- server-wide -------------------------------------------------------------
    async def version(self, request: web.Request) -> web.Response:
        return web.Response(text=VERSION, content_type="text/plain")

    async def reset(self, request: web.Request) -> web.Response:
        for proxy in self.proxies.values():
            proxy.clear_toxics()
            try:
                await proxy.start()
            except OSError as e:
                raise ApiError(500, f"cannot re-enable {proxy.name} on {proxy.listen}: {e.strerror or e}") from None
        log.info("reset: every proxy enabled, every toxic removed")
        return web.Response(status=204)

    async def populate(self, request: web.Request) -> web.Response:
        items = await _body(request, list)
        fields = []
        for item in items:  # validate everything before changing anything
            if not isinstance(item, dict):
                raise ApiError(400, "populate expects a list of proxy objects")
            fields.append(self._proxy_fields(item))
        done: list[dict] = []
        for name, listen, upstream, enabled in fields:
            old = self.proxies.get(name)
            if old is not None and (old.upstream != upstream or old.listen != listen):
                await old.stop()
                del self.proxies[name]
                old = None
            try:
                proxy = old or await self._new_proxy(name, listen, upstream, enabled)
            except ApiError as e:
                return _error(e.status if e.status != 500 else 400, str(e), proxies=done)
            done.append(proxy.to_json())
        return web.json_response({"proxies": done}, status=201)

    # ---- proxies -----------------------------------------------------------------
    async def list_proxies(self, request: web.Request) -> web.Response:
        return web.json_response({n: p.to_json() for n, p in self.proxies.items()})

    async def create_proxy(self, request: web.Request) -> web.Response:
        name, listen, upstream, enabled = self._proxy_fields(await _body(request, dict))
        if name in self.proxies:
            raise ApiError(409, "proxy already exists")
        proxy = await self._new_proxy(name, listen, upstream, enabled)
        return web.json_response(proxy.to_json(), status=201)

    async def get_proxy(self, request: web.Request) -> web.Response:
        return web.json_response(self._proxy(request).to_json())

    async def update_proxy(self, request: web.Request) -> web.Response:
        proxy = self._proxy(request)
        data = await _body(request, dict)
        enabled = data.get("enabled", proxy.enabled)
        if not isinstance(enabled, bool):
            raise ApiError(400, "enabled must be true or false")
        try:
            if "upstream" in data:
                await proxy.set_upstream(data["upstream"])
            if "listen" in data and data["listen"] != proxy.listen:
                split_address(data["listen"], "listen")
                was = proxy.enabled
                await proxy.stop()
                proxy.listen = data["listen"]
                if was:
                    await proxy.start()
        except AddressError as e:
            raise ApiError(400, str(e)) from None
        except OSError as e:
            raise ApiError(500, f"cannot listen on {proxy.listen}: {e.strerror or e}") from None
        try:
            if enabled and not proxy.enabled:
                await proxy.start()
            elif not enabled and proxy.enabled:
                await proxy.stop()
        except OSError as e:
            raise ApiError(500, f"cannot listen on {proxy.listen}: {e.strerror or e}") from None
        log.info("proxy %s: enabled=%s listen=%s upstream=%s", proxy.name, proxy.enabled, proxy.listen, proxy.upstream)
        return web.json_response(proxy.to_json())

    async def delete_proxy(self, request: web.Request) -> web.Response:
        proxy = self._proxy(request)
        await proxy.stop()
        del self.proxies[proxy.name]
        log.info("proxy %s: deleted", proxy.name)
        return web.Response(status=204)

    # ---- toxics ------------------------------------------------------------------
    async def list_toxics(self, request: web.Request) -> web.Response:
        return web.json_response([t.to_json() for t in self._proxy(request).toxics.values()])

    async def create_toxic(self, request: web.Request) -> web.Response:
        proxy = self._proxy(request)
        spec = self._toxic_spec(await _body(request, dict))
        if spec.name in proxy.toxics:
            raise ApiError(409, "toxic already exists")
        proxy.put_toxic(spec)
        log.info("proxy %s: toxic added %s", proxy.name, spec.to_json())
        return web.json_response(spec.to_json())

    async def get_toxic(self, request: web.Request) -> web.Response:
        proxy = self._proxy(request)
        return web.json_response(self._toxic(proxy, request.match_info["toxic"]).to_json())

    async def update_toxic(self, request: web.Request) -> web.Response:
        proxy = self._proxy(request)
        base = self._toxic(proxy, request.match_info["toxic"])
        data = await _body(request, dict)
        # name, type and stream are fixed once created (as in Toxiproxy)
        spec = self._toxic_spec({k: v for k, v in data.items() if k in ("toxicity", "attributes")}, base=base)
        proxy.put_toxic(spec)
        log.info("proxy %s: toxic updated %s", proxy.name, spec.to_json())
        return web.json_response(spec.to_json())

    async def delete_toxic(self, request: web.Request) -> web.Response:
        proxy = self._proxy(request)
        self._toxic(proxy, request.match_info["toxic"])
        proxy.remove_toxic(request.match_info["toxic"])
        log.info("proxy %s: toxic removed %s", proxy.name, request.match_info["toxic"])
        return web.Response(status=204)
