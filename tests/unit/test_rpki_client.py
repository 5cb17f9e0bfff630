"""The asyncio transport against a scripted cache on loopback: connect, sync, reconnect, metrics.

The fake cache replays stayrtr's captured bytes; the protocol itself is covered by
test_rpki_session, the real stayrtr by tests/integration/test_rpki_stayrtr.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rpki.client import CacheConfig, RpkiClients
from rpki.pdu import Framer, ResetQuery, SerialQuery
from rpki.vrp import EffectiveChange

FIX = Path(__file__).parents[1] / "fixtures" / "rtr"


async def until(fn, within_s: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while not fn():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)  # poll


async def test_sync_reconnect_with_serial_query_and_metrics() -> None:
    queries: list[object] = []
    conns = 0

    async def cache(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal conns
        conns += 1
        queries.extend(Framer().feed(await reader.readexactly(8 if conns == 1 else 12)))
        if conns == 1:
            writer.write((FIX / "v1_reset_response.bin").read_bytes())
            await writer.drain()
            writer.close()  # the cache goes away right after the transfer
        else:
            writer.write((FIX / "v1_cache_response.bin").read_bytes()
                         + (FIX / "v1_serial_response.bin").read_bytes()[8:])
            await writer.drain()
            await reader.read()  # keep the connection until the client leaves

    server = await asyncio.start_server(cache, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    changes: list[EffectiveChange] = []
    clients = RpkiClients([CacheConfig("127.0.0.1", port, 5)], changes.append, backoff_s=0.05)
    task = asyncio.create_task(clients.run())
    try:
        await until(lambda: len(queries) == 2 and clients.metrics().cache_up[f"127.0.0.1:{port}"] == 1
                    and clients.metrics().serial[f"127.0.0.1:{port}"] == 0x16)
        assert [type(q) for q in queries] == [ResetQuery, SerialQuery]
        assert queries[1] == SerialQuery(1, 0x7591, 0x15)  # the reconnect continued the session
        m = clients.metrics()
        assert m.vrps == {"ipv4": 2, "ipv6": 1} and m.selected == [f"127.0.0.1:{port}"]
        assert [len(c.announced) for c in changes] == [3, 1] and [len(c.withdrawn) for c in changes] == [0, 1]
        assert clients.clients[0].connects == 2
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        server.close()
        await server.wait_closed()


async def test_unreachable_cache_backs_off_and_stays_down() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens there now
    clients = RpkiClients([CacheConfig("127.0.0.1", port)], backoff_s=0.01, backoff_max_s=0.05)
    task = asyncio.create_task(clients.run())
    try:
        await until(lambda: clients.clients[0].last_error is not None)
        assert clients.metrics().cache_up == {f"127.0.0.1:{port}": 0} and clients.table.effective == frozenset()
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
