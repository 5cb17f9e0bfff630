"""Local API (aiohttp on a Unix socket) and the Prometheus endpoint, on a thread of their own.

The control lane (DESIGN.md "Lanes": answers within ~100 ms during a full-table ingest). Both
servers run on their own event loop in the ``control`` thread (:class:`ControlThread`), so a request
never waits behind the daemon loop's routing steps (one step of each busy task per iteration, on a
CPU shared with ExaBGP: ``GET /peers`` took 29 ms median, 137 ms p99 during a 300k ingest when it
ran there). Cheap read-only views (status, peers, BFD, configuration, the metrics refresh) run on
the control thread itself: they read small dicts and counters (O(1) or O(peers)); a dict resized by
the owner mid-read raises RuntimeError, and the view is then retried, finally on the owner's loop.
Views that walk the RIB or the FIB (routes, fib, fib/diff, xdp) and everything that changes state
(reset, reload) run on the daemon's loop (:func:`asyncio.run_coroutine_threadsafe`), as before.

Security by default: the API listens only on a Unix socket (mode 0600, root's), read-only calls
need nothing more, and every state-changing call needs ``Authorization: Bearer TOKEN`` with the
token from ``api.token_file`` (created 0600 at start). The metrics endpoint is plain HTTP on
``metrics.listen`` (loopback by default) and exposes no state-changing call.

The list below is the API's contract: tests/unit/test_docs_match_code.py checks it equals the route
table :func:`build_app` declares.

Endpoints (all JSON)::

    GET  /status                      daemon summary
    GET  /peers                       BGP sessions
    GET  /routes[?rejected=1]         Loc-RIB paths with best-path reason, or rejected announcements;
                                      ?exported=PEER: what that session is sent (customer: its
                                      export policy; backbone: the Adj-RIB-Out)
    GET  /fib[?failed=1]              kernel routes of ours, or routes the kernel refused
    GET  /bfd                         BFD sessions: states, diags, negotiated timers, flaps
    GET  /xdp                         XDP fast path: program, attached interfaces, map sync, counters
    GET  /rpki                        RPKI caches (up, serial, VRPs, last update), VRPs in effect,
                                      paths by origin validation state, the last re-validation
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
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from routing.views import Views

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Tries of a read-only view on the control thread before it goes to the owner's loop.
LOCAL_TRIES = 3


class Dispatch:
    """Where view code runs: ``local`` on the calling (control) loop, ``owner`` on the daemon's loop.
    Without an owner loop (tests, one loop) both run in place."""

    def __init__(self, owner_loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.owner_loop = owner_loop
        self.local_retries = 0

    async def owner(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def run() -> Any:
            res = fn(*args)
            return (await res) if asyncio.iscoroutine(res) else res

        if self.owner_loop is None or self.owner_loop is asyncio.get_running_loop():
            return await run()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self.owner_loop))

    async def local(self, fn: Callable[[], T]) -> T:
        for _ in range(LOCAL_TRIES):
            try:
                return fn()
            except RuntimeError:  # "dictionary changed size during iteration": the owner moved it
                self.local_retries += 1
                await asyncio.sleep(0)
        return await self.owner(fn)  # type: ignore[no-any-return]


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "0").lower() in ("1", "true", "yes")


def build_app(d: Views, on: Dispatch | None = None) -> web.Application:
    app = web.Application()
    on = on or Dispatch()

    async def status(_: web.Request) -> web.Response:
        return _json(await on.local(d.status_view))

    async def peers(_: web.Request) -> web.Response:
        return _json(await on.local(d.peers_view))

    async def routes(request: web.Request) -> web.Response:
        exported = request.query.get("exported")
        if exported is not None:
            try:
                addr = ipaddress.ip_address(exported)
            except ValueError:
                return _json({"error": "exported: not an IP address"}, 400)
            if addr not in d.peers:
                return _json({"error": f"{addr} is not a configured peer"}, 404)
            return _json(await on.owner(d.exported_view, addr))
        return _json(await on.owner(d.routes_view, _flag(request, "rejected")))

    async def fib(request: web.Request) -> web.Response:
        return _json(await on.owner(d.fib_view, _flag(request, "failed")))

    async def fib_diff(_: web.Request) -> web.Response:
        return _json(await on.owner(d.fib_diff))

    async def xdp(_: web.Request) -> web.Response:
        return _json(await on.owner(d.xdp_view))

    async def rpki(_: web.Request) -> web.Response:
        return _json(await on.local(d.rpki_view))

    async def bfd(_: web.Request) -> web.Response:
        return _json(await on.local(d.bfd_view))

    def authorized(request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), d.token)

    unauthorized = {"error": "this call changes state: it needs Authorization: Bearer <api token>"}

    async def config(_: web.Request) -> web.Response:
        return _json(await on.local(d.config_view))

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
        dry = _flag(request, "dry_run")
        res = await on.owner(lambda: d.reload(path, text, dry_run=dry))  # type: ignore[misc]
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
        ok = await on.owner(d.teardown, addr)
        return _json({"peer": str(addr), "reset": ok}, 200 if ok else 502)

    app.add_routes([
        web.get("/status", status),
        web.get("/peers", peers),
        web.get("/routes", routes),
        web.get("/fib", fib),
        web.get("/bfd", bfd),
        web.get("/xdp", xdp),
        web.get("/rpki", rpki),
        web.get("/fib/diff", fib_diff),
        web.get("/config", config),
        web.post("/peers/{address}/reset", reset),
        web.post("/config/reload", reload),
    ])
    return app


async def _start_api(d: Views, on: Dispatch) -> web.AppRunner:
    path = d.config.api.socket
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    runner = web.AppRunner(build_app(d, on), access_log=None)
    await runner.setup()
    site = web.UnixSite(runner, str(path))
    await site.start()
    os.chmod(path, 0o600)
    log.info("API on unix:%s (control thread)", path)
    return runner


async def _start_metrics(d: Views, on: Dispatch) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        await on.local(d.refresh_gauges)
        return web.Response(body=generate_latest(d.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, d.config.metrics.host, d.config.metrics.port)
    await site.start()
    log.info("metrics on http://%s/metrics (control thread)", d.config.metrics.listen)
    return runner


class ControlThread:
    """The API and metrics servers on their own loop in the ``control`` thread (module docstring).
    Started from the daemon's loop thread, so it inherits that thread's CPU placement."""

    def __init__(self, d: Views, owner_loop: asyncio.AbstractEventLoop) -> None:
        self.d = d
        self.dispatch = Dispatch(owner_loop)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="control", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        """Start both servers; raises what stopped them from starting (a metrics port in use...)."""
        self.thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("the control thread did not start its servers")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            if not self._started.is_set():
                self._error = exc
                self._started.set()
            else:
                log.exception("control thread stopped")

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runners = [await _start_api(self.d, self.dispatch), await _start_metrics(self.d, self.dispatch)]
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            for r in runners:
                await r.cleanup()

    def stop(self, timeout: float = 5.0) -> None:
        if self.loop is not None and self._stop is not None and self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # its loop already closed
                self.loop.call_soon_threadsafe(self._stop.set)
            self.thread.join(timeout)


async def serve_control(d: Views) -> None:
    """Task on the daemon's loop: run the control thread for as long as the daemon runs."""
    ct = ControlThread(d, asyncio.get_running_loop())
    await asyncio.get_running_loop().run_in_executor(None, ct.start)
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.get_running_loop().run_in_executor(None, ct.stop)
