"""The control lane's dispatch (routing/api.py): cheap views run on the control thread, retried when
the owner resized a dict under them and finally run on the owner's loop; owner calls run there."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from routing.api import LOCAL_TRIES, Dispatch


@pytest.fixture
def owner() -> Iterator[tuple[asyncio.AbstractEventLoop, threading.Thread]]:
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, name="owner", daemon=True)
    t.start()
    try:
        yield loop, t
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


def test_owner_calls_run_on_the_owner_loop_sync_and_async(owner) -> None:  # type: ignore[no-untyped-def]
    loop, _thread = owner
    on = Dispatch(loop)

    async def coro(x: int) -> tuple[str, int]:
        await asyncio.sleep(0)  # poll: one loop iteration, so the coroutine really suspends on the owner loop
        return threading.current_thread().name, x

    async def main() -> None:
        assert await on.owner(lambda: threading.current_thread().name) == "owner"
        assert await on.owner(coro, 7) == ("owner", 7)

    asyncio.run(main())


def test_a_view_that_keeps_failing_locally_is_run_by_the_owner(owner) -> None:  # type: ignore[no-untyped-def]
    loop, _thread = owner
    on = Dispatch(loop)
    calls: list[str] = []

    def view() -> str:
        name = threading.current_thread().name
        calls.append(name)
        if name != "owner":
            raise RuntimeError("dictionary changed size during iteration")
        return "ok"

    assert asyncio.run(on.local(view)) == "ok"
    assert calls[-1] == "owner" and len(calls) == LOCAL_TRIES + 1 and on.local_retries == LOCAL_TRIES


def test_a_view_that_succeeds_locally_never_touches_the_owner() -> None:
    on = Dispatch(None)  # no owner loop at all: a call there would run in place, but none is made
    assert asyncio.run(on.local(lambda: threading.current_thread().name)) == threading.current_thread().name
    assert on.local_retries == 0
