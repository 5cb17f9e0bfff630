"""``common.model.fast_constructor`` builds genuine instances of frozen, slotted dataclasses: the same
type, equal, hashing, printing, pickling and refusing assignment like those ``cls(...)`` builds
(issue 12: the hot paths of an ingest build them this way at a third of the cost)."""

from __future__ import annotations

import dataclasses
import ipaddress
import pickle
from typing import Any

import pytest

from common.model import (
    Attributes,
    FibDiff,
    FibEntry,
    Origin,
    Path,
    Peer,
    fast_constructor,
    new_fib_diff,
    new_fib_entry,
    new_path,
    parse_address,
    parse_prefix,
)
from fib.ops import RouteDelete, RouteInstall, RouteReplace
from routing.bestpath import BestPathReason, Selection
from routing.exabgp.messages import UpdateEvent

PFX = parse_prefix("198.51.100.0/24")
NH = parse_address("10.0.0.2")
ATTRS = Attributes(Origin.IGP, (64512, 64513), 7, None, ((64512, 1),), (), (), (16,), False)
PEER = Peer(ipaddress.ip_address("10.0.0.2"), "acme", 64512, 65000)
PATH = Path(PFX, PEER, NH, ATTRS)
ENTRY = FibEntry(PFX, (NH,), (16,), (parse_address("10.0.0.3"),))

CASES: list[tuple[type, tuple[Any, ...], dict[str, Any]]] = [
    (Path, (PFX, PEER, NH, ATTRS), {}),
    (Path, (PFX, PEER, NH, ATTRS), {"local_pref": 200, "rtbh": True, "prepend": 2}),
    (FibEntry, (PFX, (NH,)), {}),
    (FibEntry, (PFX, ()), {"blackhole": True}),
    (FibDiff, (PFX, None, ENTRY), {}),
    (Selection, (PATH, BestPathReason.ROUTER_ID, (PATH,)), {}),
    (RouteInstall, (PFX, 7, ENTRY), {}),
    (RouteReplace, (PFX, 7, ENTRY, 6), {}),
    (RouteDelete, (PFX, 6), {}),
    (UpdateEvent, (NH, ATTRS, ((PFX, NH, ()),), ()), {}),
    (Attributes, (Origin.EGP, (1, 2, 3), None), {"communities": ((1, 2),), "as_set_last": True}),
]


@pytest.mark.parametrize(("cls", "args", "kwargs"), CASES)
def test_fast_instances_are_the_real_thing(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    ref = cls(*args, **kwargs)
    fast = (new_path if cls is Path else fast_constructor(cls))(*args, **kwargs)
    assert type(fast) is cls and fast == ref and ref == fast and hash(fast) == hash(ref) and repr(fast) == repr(ref)
    assert not hasattr(fast, "__dict__")
    name = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fast, name, getattr(fast, name))
    back = pickle.loads(pickle.dumps(fast))
    assert type(back) is cls and back == ref
    assert dataclasses.replace(fast, **{name: getattr(ref, name)}) == ref


def test_the_module_constructors_and_defaults() -> None:
    assert new_path(PFX, PEER, NH, ATTRS) == PATH and new_path(PFX, PEER, NH, ATTRS).local_pref == 100
    assert new_fib_entry(PFX, (NH,), (16,), (parse_address("10.0.0.3"),)) == ENTRY
    assert new_fib_diff(PFX, ENTRY, None) == FibDiff(PFX, ENTRY, None)
    with pytest.raises(TypeError):
        new_path(PFX, PEER)  # missing fields are refused as by the class itself


def test_classes_it_cannot_swap_are_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Sub(FibDiff):
        extra: int = 0

    for cls in (NoSlots, Sub):
        with pytest.raises(TypeError):
            fast_constructor(cls)


def test_defaults_factories_and_keywords_as_the_class_takes_them() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class D:
        a: int
        b: tuple[int, ...] = ()
        c: list[int] = dataclasses.field(default_factory=list)

    make = fast_constructor(D)
    x, y = make(1), make(1)
    assert x == D(1) and x.c == [] and x.c is not y.c  # a fresh default per instance, as the class does
    assert make(a=2, c=[1]) == D(2, (), [1]) and make(3, (4,)) == D(3, (4,))
    with pytest.raises(TypeError):
        make(1, b=(), a=2)  # the same argument errors as the class


def test_a_class_with_post_init_is_refused() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("negative")

    with pytest.raises(TypeError):
        fast_constructor(Checked)


def test_paths_share_their_source_and_stay_small() -> None:
    """A Path is its prefix, its attribute set and a shared :class:`~common.model.PathSource`: three
    slots (64 bytes with the GC header, against 96 for eight), the six session and policy values read
    through the source, equal by all eight values whichever way it was built."""
    import sys

    a, b = new_path(PFX, PEER, NH, ATTRS), Path(parse_prefix("198.51.101.0/24"), PEER, NH, ATTRS)
    assert a.source is b.source
    assert sys.getsizeof(a) <= 64
    assert (a.peer, a.nexthop, a.local_pref, a.rpki, a.rtbh, a.prepend) == (PEER, NH, 100, None, False, 0)
    c = dataclasses.replace(a, local_pref=200, rtbh=True)
    assert c.source is not a.source and (c.local_pref, c.rtbh, c.prefix, c.attrs) == (200, True, PFX, ATTRS)
    assert c != a and dataclasses.replace(c, local_pref=100, rtbh=False) == a
    # Equal peers that are different objects: different sources, equal paths.
    twin = Peer(ipaddress.ip_address("10.0.0.2"), "acme", 64512, 65000)
    d = new_path(PFX, twin, NH, ATTRS)
    assert d.source is not a.source and d == a and hash(d) == hash(a)
    assert [f.name for f in dataclasses.fields(Path)] == list(Path.__match_args__)
    assert dataclasses.asdict(a)["local_pref"] == 100


def test_the_source_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from common import model

    monkeypatch.setattr(model, "PATH_SOURCES_MAX", 4)
    paths = [new_path(PFX, PEER, NH, ATTRS, local_pref=lp) for lp in range(10)]
    assert len(model._SOURCES) <= 4
    assert [p.local_pref for p in paths] == list(range(10))  # cleared, never wrong
