"""Local API (aiohttp on a Unix socket) and the Prometheus endpoint.

Security by default: the API listens only on a Unix socket (mode 0600, root's), read-only calls
need nothing more, and every state-changing call needs ``Authorization: Bearer TOKEN`` with the
token from ``api.token_file`` (created 0600 at start). The metrics endpoint is plain HTTP on
``metrics.listen`` (loopback by default) and exposes no state-changing call.

The list below is the API's contract: tests/unit/test_docs_match_code.py checks it equals the route
table :func:`build_app` declares.

Endpoints (all JSON)::

    GET  /status                      daemon summary
    GET  /peers                       BGP sessions
    GET  /routes[?rejected=1]         Loc-RIB paths with best-path reason, or rejected announcements
    GET  /fib[?failed=1]              kernel routes of ours, or routes the kernel refused
    GET  /bfd                         BFD sessions: states, diags, negotiated timers, flaps
    GET  /xdp                         XDP fast path: program, attached interfaces, map sync, counters
    GET  /fib/diff                    RIB versus kernel (and kernel versus XDP maps): what differs
    GET  /config                      the running configuration (secrets masked)
    POST /peers/{address}/reset       tear the session down (cease 4, admin reset); needs the token
    POST /config/reload[?dry_run=1]   preview and apply a configuration: body {"path": FILE} or
                                      {"yaml": TEXT} or empty (the file the daemon started with);
                                      answers the plan and the outcome; needs the token

``/config/reload`` answers 400 with ``{"error": ...}`` (file, key, reason, as ``pop-router check``
says it) for an invalid configuration, which changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from routing.views import Views

log = logging.getLogger(__name__)


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "0").lower() in ("1", "true", "yes")


def build_app(d: Views) -> web.Application:
    app = web.Application()

    async def status(_: web.Request) -> web.Response:
        return _json(d.status_view())

    async def peers(_: web.Request) -> web.Response:
        return _json(d.peers_view())

    async def routes(request: web.Request) -> web.Response:
        return _json(d.routes_view(rejected=_flag(request, "rejected")))

    async def fib(request: web.Request) -> web.Response:
        return _json(d.fib_view(failed=_flag(request, "failed")))

    async def fib_diff(_: web.Request) -> web.Response:
        return _json(await d.fib_diff())

    async def xdp(_: web.Request) -> web.Response:
        return _json(d.xdp_view())

    async def bfd(_: web.Request) -> web.Response:
        return _json(d.bfd_view())

    def authorized(request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), d.token)

    unauthorized = {"error": "this call changes state: it needs Authorization: Bearer <api token>"}

    async def config(_: web.Request) -> web.Response:
        return _json(d.config_view())

    async def reload(request: web.Request) -> web.Response:
        if not authorized(request):
            return _json(unauthorized, 401)
        body = await request.read()
        path = text = None
        if body.strip():
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                return _json({"error": 'body must be JSON: {"path": FILE} or {"yaml": TEXT}'}, 400)
            if not isinstance(doc, dict) or not set(doc) <= {"path", "yaml"} or len(doc) > 1:
                return _json({"error": 'body must be {"path": FILE} or {"yaml": TEXT}'}, 400)
            path, text = doc.get("path"), doc.get("yaml")
            if not isinstance(path or text or "", str):
                return _json({"error": "path and yaml must be strings"}, 400)
        assert d.reload is not None
        res = await d.reload(path, text, dry_run=_flag(request, "dry_run"))
        return _json(res, 400 if "error" in res else 200)

    async def reset(request: web.Request) -> web.Response:
        if not authorized(request):
            return _json(unauthorized, 401)
        try:
            addr = ipaddress.ip_address(request.match_info["address"])
        except ValueError:
            return _json({"error": "not an IP address"}, 400)
        if addr not in d.peers:
            return _json({"error": f"{addr} is not a configured peer"}, 404)
        ok = await d.teardown(addr)
        return _json({"peer": str(addr), "reset": ok}, 200 if ok else 502)

    app.add_routes([
        web.get("/status", status),
        web.get("/peers", peers),
        web.get("/routes", routes),
        web.get("/fib", fib),
        web.get("/bfd", bfd),
        web.get("/xdp", xdp),
        web.get("/fib/diff", fib_diff),
        web.get("/config", config),
        web.post("/peers/{address}/reset", reset),
        web.post("/config/reload", reload),
    ])
    return app


async def serve_api(d: Views) -> None:
    path = d.config.api.socket
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    runner = web.AppRunner(build_app(d), access_log=None)
    await runner.setup()
    site = web.UnixSite(runner, str(path))
    await site.start()
    os.chmod(path, 0o600)
    log.info("API on unix:%s", path)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def serve_metrics(d: Views) -> None:
    async def metrics(_: web.Request) -> web.Response:
        d.refresh_gauges()
        return web.Response(body=generate_latest(d.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, d.config.metrics.host, d.config.metrics.port)
    await site.start()
    log.info("metrics on http://%s/metrics", d.config.metrics.listen)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
