"""Which ExaBGP process holds which customer: the pool's size and its assignment, pure functions.

Theory of operation
-------------------
One ExaBGP process does not scale to many sessions: its reactor walks every peer on each pass — at
least every ``exabgp.reactor_poll_s`` (ExaBGP's own default: 10 ms, when 200 idle sessions cost
~25 % of a core; ``routing/exabgp/conf.py``) and on every keepalive received — and with 1,000
sessions in one process they once never all reached Established (hold timers expired on peers that
were sending keepalives; measured, see ``/work/shared/notes/exabgp.md``). It is also one failure
domain: a crash flaps every customer. So customers are spread over ``exabgp.processes`` supervised
processes, each with its own generated configuration and relay socket.

- **Size** (:func:`process_count`): an integer is taken as given; ``auto`` is
  ``max(1, min(4, cpus - 1))`` — one CPU is left to the daemon's own loop and FIB writer, and more
  than four processes buy little on the small routers a PoP runs on (each idles at a few % of a core
  and costs ~30 MB) — but **1 while there are fewer than** :data:`AUTO_MIN_SESSIONS` **sessions**: a
  few dozen sessions are far below what one process handles, and a single process keeps the small
  PoP exactly as it was (one config, one relay). The count is not capped by the number of customers:
  a process with no neighbour idles, and a cap would move customers whenever one is added or removed.
- **Assignment** (:func:`assign`): rendezvous (highest-random-weight) hashing of the *customer name*
  over the process indices. A customer's sessions always share a process (its dual-homed sessions
  fail together and come back together, and a reset of "the customer" is one process's business).
  The choice depends only on the name and the process count, so adding or removing *other* customers
  never moves anyone; changing the count moves only the customers whose highest-scoring index
  changes (about 1/n of them when growing from n-1 to n). The hash is BLAKE2b, not Python's
  ``hash()``, so the assignment is the same in every process and across restarts.
- **The backbone** (``backbone.peers``, iBGP to the route reflectors) is placed as one more
  "customer" named :data:`BACKBONE`: its sessions share one process, chosen by the same hash, and
  the name cannot be a customer's (names start with a letter or digit), so no customer is moved by
  configuring a backbone.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from routing.config import Config, IPAddress

#: Below this many configured sessions, ``auto`` runs one process (see the module docstring).
AUTO_MIN_SESSIONS = 100
#: ``auto`` never runs more processes than this.
AUTO_MAX_PROCESSES = 4
#: The pool's name for the backbone sessions (never a valid customer name).
BACKBONE = "_backbone"


def auto_processes(cpu_count: int, sessions: int) -> int:
    """``exabgp.processes: auto`` for a machine with ``cpu_count`` CPUs (see the module docstring)."""
    if sessions < AUTO_MIN_SESSIONS:
        return 1
    return max(1, min(AUTO_MAX_PROCESSES, cpu_count - 1))


def process_count(config: Config, cpu_count: int | None = None) -> int:
    """How many ExaBGP processes the pool runs for ``config`` (at least 1)."""
    setting = config.exabgp.processes
    if setting == "auto":
        cpus = cpu_count if cpu_count is not None else len(os.sched_getaffinity(0))
        return auto_processes(cpus, len(config.peers()) + len(config.backbone.peers))
    return int(setting)


def _score(customer: str, index: int) -> int:
    h = hashlib.blake2b(f"exabgp-{index}:{customer}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def process_of(customer: str, processes: int) -> int:
    """The process index (0..processes-1) that holds ``customer``: rendezvous hashing on its name."""
    if processes <= 1:
        return 0
    return max(range(processes), key=lambda i: (_score(customer, i), -i))


def assign(customers: Iterable[str], processes: int) -> dict[str, int]:
    """Customer name -> process index for every customer."""
    return {c: process_of(c, processes) for c in customers}


def peer_processes(config: Config, processes: int | None = None) -> dict[IPAddress, int]:
    """Session address -> process index (every session of a customer on its customer's process, the
    backbone's on :data:`BACKBONE`'s)."""
    n = process_count(config) if processes is None else processes
    out = {p.address: process_of(c.name, n) for c, p in config.peers()}
    if config.backbone.peers:
        b = process_of(BACKBONE, n)
        out.update({p.address: b for p in config.backbone.peers})
    return out


def process_customers(config: Config, processes: int, index: int) -> frozenset[str]:
    """The customer names process ``index`` holds, with :data:`BACKBONE` if it holds the backbone."""
    names = {c.name for c in config.customers if process_of(c.name, processes) == index}
    if config.backbone.peers and process_of(BACKBONE, processes) == index:
        names.add(BACKBONE)
    return frozenset(names)
