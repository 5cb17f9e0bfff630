"""Shared RPKI value types: :class:`Vrp`, :class:`Validity`, address-family helpers.

Theory of operation
-------------------
A leaf module (it imports only ``common.model``'s :class:`Validity`, which the RIB's paths carry
too) so that the codec (:mod:`rpki.pdu`), the session
(:mod:`rpki.session`), the table (:mod:`rpki.vrp`) and a future RIB share one VRP type without
import cycles. A VRP is a plain tuple of integers: the address is an ``int``, not an
:mod:`ipaddress` object, because the validator touches hundreds of thousands of them and the table
diffs whole sets of them; tuples of ints hash and compare in C.

Invariants (enforced by :func:`make_vrp` and by the decoder, never re-checked downstream):
``afi`` is 4 or 6; ``0 <= prefix_len <= max_len <= width(afi)``; no host bits are set beyond
``prefix_len``; ``0 <= asn < 2**32``.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from common.model import Validity

__all__ = ["AFI_LABEL", "WIDTH", "Validity", "Vrp", "host_bits_clear", "make_vrp"]

#: Address width in bits per address family.
WIDTH = {4: 32, 6: 128}
#: Metric label per address family (``pop_router_rpki_vrps{afi}``).
AFI_LABEL = {4: "ipv4", 6: "ipv6"}


class Vrp(NamedTuple):
    """A Validated ROA Payload (RFC 6811 §2): prefix, maximum length and origin AS."""

    afi: int
    prefix: int
    prefix_len: int
    max_len: int
    asn: int

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        cls = ipaddress.IPv4Network if self.afi == 4 else ipaddress.IPv6Network
        return cls((self.prefix, self.prefix_len))

    def __str__(self) -> str:
        return f"{self.network()}-{self.max_len} AS{self.asn}"


def host_bits_clear(afi: int, prefix: int, prefix_len: int) -> bool:
    """True when no bit beyond ``prefix_len`` is set (the address is the network address)."""
    return prefix & ((1 << (WIDTH[afi] - prefix_len)) - 1) == 0


def make_vrp(prefix: str, max_len: int | None, asn: int) -> Vrp:
    """Build a VRP from text (``"192.0.2.0/24"``); ValueError on anything outside the invariants."""
    net = ipaddress.ip_network(prefix, strict=True)
    afi = net.version
    ml = net.prefixlen if max_len is None else max_len
    if not net.prefixlen <= ml <= WIDTH[afi]:
        raise ValueError(f"max length {ml} outside {net.prefixlen}..{WIDTH[afi]} for {net}")
    if not 0 <= asn < 2**32:
        raise ValueError(f"AS {asn} out of range")
    return Vrp(afi, int(net.network_address), net.prefixlen, ml, asn)
