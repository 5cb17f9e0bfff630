"""Source address validation planning: customers and their routes -> per-interface allowed sources.

Theory of operation
-------------------
BCP 38 / RFC 3704 §2.3 (feasible path): on the interfaces facing a customer, a packet is legitimate
only if its source lies in address space that customer may originate. Pure state, no I/O (the
daemon feeds it and hands the resulting :data:`~fib.ops.SavOp` list to the dataplane,
:meth:`fib.kernel.KernelFib.apply_sav`):

- :class:`SavCustomer` is one customer as configured: its mode (``off``, ``prefix-list`` — the
  prefixes of its ``import.prefixes`` rules; ``accepted-routes`` — what its peers announced and we
  accepted), its interfaces (those holding each peer's ``local_address``) and its peers' addresses.
  The peers' own addresses are always allowed (as host prefixes): the customer router's traffic
  from its link address (traceroute answers, ICMP errors) is legitimate.
- :class:`SavPlan` keeps, per interface, a reference count per allowed prefix (one reference per
  customer and reason), so two customers on one interface, or a prefix both listed and announced,
  never revoke each other's sources. :meth:`SavPlan.configure` (start, reload) rebuilds the counts
  from the customers and the accepted routes it knows and returns the difference as operations;
  :meth:`SavPlan.accepted` applies a few route changes incrementally (0 -> 1: allow, 1 -> 0: revoke).
- Order of operations: allowances before enabling an interface, disabling before revocations, so a
  legitimate packet never meets a half-written set.

Invariant: after the returned operations are applied, the maps hold exactly :meth:`SavPlan.wanted`.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from common.model import IPAddress, IPNetwork
from fib.ops import SavAllow, SavEnable, SavOp, SavRevoke

Mode = Literal["off", "prefix-list", "accepted-routes"]


@dataclass(frozen=True, slots=True)
class SavCustomer:
    name: str
    mode: Mode
    interfaces: frozenset[int]
    #: The prefixes of the customer's ``import.prefixes`` rules (``prefix-list`` mode).
    listed: frozenset[IPNetwork] = frozenset()
    peers: frozenset[IPAddress] = frozenset()


def host(addr: IPAddress) -> IPNetwork:
    return ipaddress.ip_network(addr)


def customer_interfaces(local_addresses: Iterable[IPAddress], ifindex_of: Mapping[IPAddress, int]) -> frozenset[int]:
    """The interfaces holding the customer's sessions' local addresses (those configured here)."""
    return frozenset(ifindex_of[a] for a in local_addresses if a in ifindex_of)


@dataclass(slots=True)
class SavPlan:
    customers: dict[str, SavCustomer] = field(default_factory=dict)
    #: customer -> prefix -> peers of that customer that have it accepted.
    routes: dict[str, dict[IPNetwork, set[IPAddress]]] = field(default_factory=dict)
    #: peer -> its customer (for route changes, which name the peer).
    customer_of: dict[IPAddress, str] = field(default_factory=dict)
    on: set[int] = field(default_factory=set)
    refs: dict[int, Counter[IPNetwork]] = field(default_factory=dict)

    def watched_peers(self) -> frozenset[IPAddress]:
        """Peers whose accepted routes feed an allowed set (the core records their changes)."""
        return frozenset(p for c in self.customers.values() if c.mode == "accepted-routes" for p in c.peers)

    def wanted(self) -> tuple[set[int], dict[int, set[IPNetwork]]]:
        return set(self.on), {i: set(c) for i, c in self.refs.items() if c}

    def _contribution(self, c: SavCustomer) -> set[IPNetwork]:
        if c.mode == "off":
            return set()
        out = {host(p) for p in c.peers}
        if c.mode == "prefix-list":
            out |= c.listed
        else:
            out |= set(self.routes.get(c.name, ()))
        return out

    def configure(self, customers: Iterable[SavCustomer]) -> list[SavOp]:
        """New configuration (start or reload): the operations from the current state to the new one."""
        self.customers = {c.name: c for c in customers}
        self.customer_of = {p: c.name for c in self.customers.values() for p in c.peers}
        self.routes = {n: r for n, r in self.routes.items() if n in self.customers}
        refs: dict[int, Counter[IPNetwork]] = {}
        on: set[int] = set()
        for c in self.customers.values():
            if c.mode == "off":
                continue
            allowed = self._contribution(c)
            for i in c.interfaces:
                on.add(i)
                refs.setdefault(i, Counter()).update(allowed)
        old_allowed = {i: set(c) for i, c in self.refs.items()}
        self.refs, old_on, self.on = refs, self.on, on
        return _diff(old_on, old_allowed, on, {i: set(c) for i, c in refs.items()})

    def accepted(self, changes: Iterable[tuple[IPAddress, IPNetwork, bool]]) -> list[SavOp]:
        """Route changes of watched peers (the core's ``AcceptedChanged``): incremental operations."""
        ops: list[SavOp] = []
        for peer, prefix, ok in changes:
            name = self.customer_of.get(peer)
            if name is None:
                continue
            by_prefix = self.routes.setdefault(name, {})
            holders = by_prefix.get(prefix, set())
            before = bool(holders)
            if ok:
                by_prefix[prefix] = holders | {peer}
            elif peer in holders:
                holders = holders - {peer}
                if holders:
                    by_prefix[prefix] = holders
                else:
                    by_prefix.pop(prefix, None)
            after = prefix in by_prefix
            c = self.customers.get(name)
            if before == after or c is None or c.mode != "accepted-routes":
                continue
            for i in sorted(c.interfaces):
                cnt = self.refs.setdefault(i, Counter())
                if after:
                    cnt[prefix] += 1
                    if cnt[prefix] == 1:
                        ops.append(SavAllow(i, prefix))
                else:
                    cnt[prefix] -= 1
                    if cnt[prefix] <= 0:
                        del cnt[prefix]
                        ops.append(SavRevoke(i, prefix))
        return ops


def _diff(old_on: set[int], old_allowed: Mapping[int, set[IPNetwork]], new_on: set[int],
          new_allowed: Mapping[int, set[IPNetwork]]) -> list[SavOp]:
    """Allow, enable, disable, revoke: in that order (see the module docstring)."""
    key = lambda p: (p.version, p)  # noqa: E731
    ops: list[SavOp] = []
    for i in sorted(new_allowed):
        ops += [SavAllow(i, p) for p in sorted(new_allowed[i] - old_allowed.get(i, set()), key=key)]
    ops += [SavEnable(i, True) for i in sorted(new_on - old_on)]
    ops += [SavEnable(i, False) for i in sorted(old_on - new_on)]
    for i in sorted(old_allowed):
        ops += [SavRevoke(i, p) for p in sorted(old_allowed[i] - new_allowed.get(i, set()), key=key)]
    return ops
