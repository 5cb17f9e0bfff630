from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from .netns import unique_prefix


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "failover_load: failover while another customer's table loads (issue 9)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.fail("integration tests need root and iproute2 (run them through `make test`)")


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh namespace with a veth link carrying on-link IPv4/IPv6 gateways (no dummy driver here)."""
    name = unique_prefix("fib")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (
            "link set lo up",
            "link add d0 type veth peer name d1",
            "link set d0 up",
            "link set d1 up",
            "addr add 10.0.0.1/24 dev d0",
            "addr add 2001:db8:1::1/64 dev d0 nodad",
        ):
            subprocess.run(["ip", "-n", name, *cmd.split()], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
