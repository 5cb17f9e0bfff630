"""The daemon's RTBH and SAV dataplane wiring: configuration -> :mod:`fib.sav` customers, warnings.

Theory of operation
-------------------
Kept out of ``daemon.py`` so the daemon stays a shell. :class:`PolicyDataplane` owns the
:class:`~fib.sav.SavPlan` and the kernel-path blackhole counter (:class:`~fib.nft.BlackholeCounter`):

- start: the counter's nftables table is created only when some customer has ``import.rtbh: true``,
  and joins the kernel writer's providers; SAV is configured from the configuration (below);
- :meth:`configure` (start and every reload): a customer's interfaces are those holding its peers'
  ``local_address`` (read from the kernel in the FIB's namespace); the plan's difference goes to the
  dataplane at once (:meth:`fib.kernel.KernelFib.apply_sav`), and the peers to watch (``accepted-routes``
  customers) are returned for the routing core (:class:`routing.core.WatchAccepted`);
- :meth:`accepted`: the core's :class:`routing.core.AcceptedChanged`, applied incrementally.

SAV lives in the XDP program only: a SAV customer's interface that is not in ``fib.xdp.interfaces``
(or XDP not running) gets a warning naming the customer and the interface — nothing filters there.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable

from common.model import IPAddress, IPNetwork
from common.netns import netns as enter_netns
from fib.nft import BlackholeCounter
from fib.ops import SavOp
from fib.sav import SavCustomer, SavPlan
from routing.config import Config

log = logging.getLogger(__name__)


def interface_addresses(netns: str | None) -> dict[IPAddress, tuple[int, str]]:
    """Every local address in the FIB's namespace -> (ifindex, interface name)."""
    from fib.netlink import RouteSocket

    with enter_netns(netns):
        s = RouteSocket()
        try:
            out = {}
            for addr, ifindex in s.dump_addresses():
                try:
                    out[addr] = (ifindex, socket.if_indextoname(ifindex))
                except OSError:
                    continue
            return out
        finally:
            s.close()


def sav_customers(config: Config, addrs: dict[IPAddress, tuple[int, str]], xdp_running: bool,
                  ) -> tuple[list[SavCustomer], list[str]]:
    """The configuration's customers as the SAV plan sees them, and the warnings to log."""
    out, warnings = [], []
    xdp_ifaces = set(config.fib.xdp.interfaces) if xdp_running else set()
    for c in config.customers:
        ifindexes = set()
        for p in c.peers:
            found = addrs.get(p.local_address)
            if c.sav == "off":
                continue
            if found is None:
                warnings.append(f"customer {c.name}: sav {c.sav} cannot work for peer {p.address}: its local_address "
                                f"{p.local_address} is not configured on any interface here")
                continue
            ifindexes.add(found[0])
            if found[1] not in xdp_ifaces:
                warnings.append(f"customer {c.name}: sav {c.sav} cannot work on interface {found[1]}: "
                                + ("it is not in fib.xdp.interfaces" if xdp_running
                                   else "the XDP fast path is not running")
                                + " (source address validation is done by the XDP program only)")
        listed: frozenset[IPNetwork] = frozenset(r.prefix for r in c.import_.prefixes)  # type: ignore[misc]
        out.append(SavCustomer(c.name, c.sav, frozenset(ifindexes), listed, frozenset(p.address for p in c.peers)))
    return out, warnings


class PolicyDataplane:
    def __init__(self, fib: object, netns: str | None) -> None:
        self.fib = fib
        self.netns = netns
        self.sav = SavPlan()
        self.counter: BlackholeCounter | None = None
        self.sav_errors = 0

    def start(self, config: Config, xdp_running: bool) -> frozenset[IPAddress]:
        if any(c.import_.rtbh for c in config.customers):
            counter = BlackholeCounter(self.netns)
            if counter.start(self.fib.fib_table):  # type: ignore[attr-defined]
                self.fib.dataplane.mirrors.append(counter)  # type: ignore[attr-defined]
                self.counter = counter
        return self.configure(config, xdp_running)

    def stop(self) -> None:
        if self.counter is not None:
            self.counter.stop()

    def configure(self, config: Config, xdp_running: bool) -> frozenset[IPAddress]:
        """Apply ``config``'s SAV settings; returns the peers whose accepted routes the core must watch."""
        wants_sav = any(c.sav != "off" for c in config.customers)
        addrs = interface_addresses(self.netns) if wants_sav or self.sav.on else {}
        customers, warnings = sav_customers(config, addrs, xdp_running)
        for w in warnings:
            log.warning("%s", w)
        self._apply(self.sav.configure(customers))
        return self.sav.watched_peers()

    def accepted(self, changes: Iterable[tuple[IPAddress, IPNetwork, bool]]) -> None:
        self._apply(self.sav.accepted(changes))

    def _apply(self, ops: list[SavOp]) -> None:
        if not ops:
            return
        res = self.fib.apply_sav(ops)  # type: ignore[attr-defined]
        if not res.clean and self.sav.on:
            self.sav_errors += len(res.errors)
            log.error("source address validation: %d of %d map operations failed (see above)", len(res.errors),
                      len(ops))

    def view(self) -> dict:
        on, allowed = self.sav.wanted()
        return {
            "sav": {"interfaces": sorted(on), "allowed_prefixes": sum(len(v) for v in allowed.values()),
                    "errors": self.sav_errors},
            "kernel_dropped_blackhole": self.counter.read() if self.counter is not None else None,
        }
