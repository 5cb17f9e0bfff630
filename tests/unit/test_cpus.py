"""CPU placement plans (common/cpus.py): pure, over an injected CPU set."""

from __future__ import annotations

import threading

from common import cpus


def test_auto_gives_the_writer_the_last_cpu_and_control_the_rest() -> None:
    assert cpus.plan("auto", "auto", {0, 1}) == ({1}, {0})
    assert cpus.plan("auto", "auto", {0, 1, 2, 3}) == ({3}, {0, 1, 2})


def test_one_cpu_pins_nothing() -> None:
    assert cpus.plan("auto", "auto", {0}) == (None, None)


def test_explicit_lists_are_kept_within_what_exists() -> None:
    assert cpus.plan([2, 3], [0, 1], {0, 1, 2, 3}) == ({2, 3}, {0, 1})
    assert cpus.plan([7], "auto", {0, 1}) == (None, None)  # a CPU that is not there pins nothing
    assert cpus.plan("off", "off", {0, 1}) == (None, None)


def test_pin_thread_pins_only_the_calling_thread() -> None:
    before = cpus.available()
    target = {min(before)}
    seen: dict[str, set[int]] = {}

    def worker() -> None:
        cpus.pin_thread(target, "test thread")
        seen["worker"] = cpus.available()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["worker"] == target
    assert cpus.available() == before
