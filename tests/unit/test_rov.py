"""Route origin validation through the real RIB, policy and routing core, with injected validators.

No RTR, no processes: a :class:`~rpki.vrp.Validator` built from VRPs written here stands for what
the RTR clients would publish, and :class:`~routing.rov.RpkiChanged` is fed to the core as the
daemon posts it. The hypothesis test checks the whole decision (validation state, accepted or
rejected, and why) against a reference written directly from RFC 6811 §2 and the policy rules, both
for a path announced under a VRP set and for one re-validated after the set changed.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.model import BLACKHOLE, Attributes, Origin, Peer, Validity, intern_attrs
from routing.config import parse_config
from routing.core import PeerStatus, RoutingCore, SubmitFib
from routing.exabgp import messages as msg
from routing.policy import ImportPolicy, RejectReason
from routing.reload import plan_reload, policy_fingerprint
from routing.rib import Rib
from routing.rov import RpkiChanged
from rpki.model import Vrp, make_vrp
from rpki.vrp import Validator, affected

A = ipaddress.ip_address("10.0.1.2")
ACME_AS, OTHER_AS = 64512, 64999


def cfg(mode: str | None = "reject-invalid", prefixes: list[str] | None = None, caches: bool = True,
        bogons: list[str] | None = None, max_v4: int = 24, rtbh: bool = False) -> Any:
    return parse_config({
        "router": {"asn": 65000, "router_id": "192.0.2.1", "max_prefix_length_v4": max_v4,
                   **({"bogons": bogons} if bogons is not None else {})},
        "rpki": {"caches": [{"address": "127.0.0.1", "port": 8282}] if caches else []},
        "customers": [{"name": "acme", "asn": ACME_AS, "rpki": mode,
                       "import": {"prefixes": prefixes or ["198.51.100.0/22 le 24"], "rtbh": rtbh},
                       "peers": [{"address": "10.0.1.2", "local_address": "10.0.1.1"}]}],
    })


def make_core(config: Any) -> RoutingCore:
    c = config.customers[0]
    rib = Rib()
    rib.add_peer(A, ImportPolicy(config.router, c, config.customer_rpki(c)), None)
    ps = PeerStatus(A, ipaddress.ip_address("10.0.1.1"), "acme", "ipv4", Peer(A, "acme", ACME_AS, 65000))
    core = RoutingCore(rib, {A: ps}, stale_timeout_s=120.0)
    core.on_event(msg.StateEvent(A, A, "up"), 1.0)
    return core


def attrs(*as_path: int, blackhole: bool = False, as_set_last: bool = False) -> Attributes:
    return intern_attrs(Attributes(Origin.IGP, as_path, communities=(BLACKHOLE,) if blackhole else (),
                                   as_set_last=as_set_last))


def announce(core: RoutingCore, a: Attributes, *prefixes: str) -> list:
    ann = tuple((ipaddress.ip_network(p), A, ()) for p in prefixes)
    return core.on_event(msg.UpdateEvent(A, a, ann, ()), 2.0)


def vrps(*roas: tuple[str, int, int]) -> list[Vrp]:
    return [make_vrp(p, ml, asn) for p, ml, asn in roas]


def change(core: RoutingCore, old: list[Vrp], new: list[Vrp]) -> None:
    core.on_event(RpkiChanged(Validator(new), affected(set(old) ^ set(new))), 3.0)


def drain(core: RoutingCore, budget: int = 100) -> dict:
    """Run every pending job; prefix -> FIB next hops (None: removed) over what it submitted."""
    out: dict = {}
    while core.busy:
        for a in core.work(budget):
            if isinstance(a, SubmitFib):
                for d in a.diffs:
                    out[str(d.prefix)] = None if d.new is None else [str(n) for n in d.new.nexthops]
    return out


def stored(core: RoutingCore, prefix: str) -> tuple[str, Validity | None]:
    """("accepted" | rejection reason, stored rpki state) of one prefix."""
    a = core.rib.adj[A]
    p = ipaddress.ip_network(prefix)
    if p in a.accepted:
        return "accepted", a.accepted[p].rpki
    path, rej = a.rejected[p]
    return rej.reason.value, path.rpki


# --- announcement and policy ------------------------------------------------------------------------
def test_states_and_reject_invalid_on_announce() -> None:
    core = make_core(cfg())
    v = vrps(("198.51.100.0/22", 23, ACME_AS))
    change(core, [], v)
    drain(core)
    fib = announce(core, attrs(ACME_AS), "198.51.100.0/23", "198.51.100.0/24", "198.51.102.0/24")
    announce(core, attrs(ACME_AS, OTHER_AS), "198.51.103.0/24")
    assert stored(core, "198.51.100.0/23") == ("accepted", Validity.VALID)
    assert stored(core, "198.51.100.0/24") == ("rpki_invalid", Validity.INVALID)  # longer than max length
    assert stored(core, "198.51.102.0/24") == ("rpki_invalid", Validity.INVALID)
    assert stored(core, "198.51.103.0/24") == ("rpki_invalid", Validity.INVALID)  # wrong origin
    assert core.rib.adj[A].rejected[ipaddress.ip_network("198.51.103.0/24")][1].detail == f"origin AS {OTHER_AS}"
    assert [str(d.prefix) for act in fib for d in act.diffs] == ["198.51.100.0/23"]
    assert core.rib.adj[A].rpki_states == {Validity.VALID: 1, Validity.INVALID: 3}


def test_tag_only_keeps_invalid_and_off_shows_no_state() -> None:
    v = vrps(("198.51.100.0/22", 22, OTHER_AS))
    for mode, want in (("tag-only", ("accepted", Validity.INVALID)), ("off", ("accepted", None))):
        core = make_core(cfg(mode))
        change(core, [], v)
        drain(core)
        announce(core, attrs(ACME_AS), "198.51.100.0/24")
        assert stored(core, "198.51.100.0/24") == want, mode
    # No cache configured: the effective mode is off whatever the customer says.
    core = make_core(cfg("reject-invalid", caches=False))
    core.rib.validator = Validator(v)
    announce(core, attrs(ACME_AS), "198.51.100.0/24")
    assert stored(core, "198.51.100.0/24") == ("accepted", None)


def test_as_set_last_has_no_origin_and_is_invalid_when_covered() -> None:
    core = make_core(cfg("tag-only"))
    change(core, [], vrps(("198.51.100.0/22", 24, ACME_AS)))
    drain(core)
    announce(core, attrs(ACME_AS, as_set_last=True), "198.51.100.0/24")
    assert stored(core, "198.51.100.0/24") == ("accepted", Validity.INVALID)


def test_blackhole_skips_max_length() -> None:
    core = make_core(cfg(prefixes=["198.51.100.0/22 le 32"], max_v4=32, rtbh=True))
    change(core, [], vrps(("198.51.100.0/22", 24, ACME_AS)))
    drain(core)
    announce(core, attrs(ACME_AS, blackhole=True), "198.51.100.7/32")
    announce(core, attrs(ACME_AS), "198.51.101.7/32")
    announce(core, attrs(ACME_AS, OTHER_AS, blackhole=True), "198.51.102.7/32")
    assert stored(core, "198.51.100.7/32") == ("accepted", Validity.VALID)
    assert stored(core, "198.51.101.7/32") == ("rpki_invalid", Validity.INVALID)
    assert stored(core, "198.51.102.7/32")[1] is Validity.INVALID  # wrong origin stays invalid


def test_messages_record_an_as_set_last() -> None:
    def origin(segments: str) -> int | None:
        line = ('{"type":"update","neighbor":{"address":{"local":"10.0.1.1","peer":"10.0.1.2"},"message":'
                '{"update":{"attribute":{"origin":"igp","as-path":{' + segments + '}},"announce":{"ipv4 unicast":'
                '{"10.0.1.2":[{"nlri":"198.51.100.0/24"}]}}}}}}').encode()
        u = msg.parse_line(line)
        assert isinstance(u, msg.UpdateEvent)
        return u.attrs.origin_as

    seq = '"0":{"element":"as-sequence","value":[64512,64513]}'
    assert origin(seq) == 64513
    assert origin(seq + ',"1":{"element":"as-set","value":[9,8]}') is None
    assert origin('"0":{"element":"as-set","value":[9]},"1":{"element":"as-sequence","value":[7]}') == 7


# --- VRP changes --------------------------------------------------------------------------------------
def test_vrp_change_revalidates_and_moves_the_fib_both_ways() -> None:
    core = make_core(cfg())
    announce(core, attrs(ACME_AS), "198.51.100.0/24", "198.51.101.0/24")
    assert stored(core, "198.51.100.0/24") == ("accepted", Validity.NOT_FOUND)
    wrong = vrps(("198.51.100.0/24", 24, OTHER_AS))
    change(core, [], wrong)
    assert drain(core) == {"198.51.100.0/24": None}  # now invalid: out of the FIB
    assert stored(core, "198.51.100.0/24") == ("rpki_invalid", Validity.INVALID)
    assert stored(core, "198.51.101.0/24") == ("accepted", Validity.NOT_FOUND)  # outside the ranges
    right = vrps(("198.51.100.0/24", 24, ACME_AS))
    change(core, wrong, right)
    assert drain(core) == {"198.51.100.0/24": ["10.0.1.2"]}  # rejected, now valid: installed
    assert stored(core, "198.51.100.0/24") == ("accepted", Validity.VALID)
    assert core.peers[A].flaps == 0 and core.peers[A].state.value == "established"
    assert core.rov.last is not None and core.rov.last.done and core.rov.last.became_accepted == 1


def test_a_newer_change_supersedes_a_running_one() -> None:
    core = make_core(cfg(prefixes=["198.51.100.0/22 le 30"], max_v4=30))
    prefixes = [f"198.51.{100 + i // 64}.{(i % 64) * 4}/30" for i in range(256)]
    announce(core, attrs(ACME_AS), *prefixes[:100])
    announce(core, attrs(ACME_AS), *prefixes[100:200])
    announce(core, attrs(ACME_AS), *prefixes[200:])
    drain(core)
    first = vrps(("198.51.100.0/23", 32, OTHER_AS))  # half of them invalid
    change(core, [], first)
    core.work(10)  # a slice of the first job only
    assert core.busy
    second = vrps(("198.51.102.0/23", 32, OTHER_AS))  # the first withdrawn, the other half invalid
    change(core, first, second)
    drain(core)
    for p in prefixes:
        want = Validity.INVALID if ipaddress.ip_network(p).subnet_of(ipaddress.ip_network("198.51.102.0/23")) \
            else Validity.NOT_FOUND
        assert stored(core, p)[1] is want, p
    fib = {str(p) for p in core.rib.loc.prefixes()}
    assert fib == {p for p in prefixes if p.startswith(("198.51.100.", "198.51.101."))}
    assert core.rov.pending == [] and core.rov.generation == 2


def test_reload_of_the_rpki_mode_reevaluates() -> None:
    old, new = cfg("tag-only"), cfg("reject-invalid")
    assert policy_fingerprint(old, old.customers[0]) != policy_fingerprint(new, new.customers[0])
    core = make_core(old)
    change(core, [], vrps(("198.51.100.0/24", 24, OTHER_AS)))
    drain(core)
    announce(core, attrs(ACME_AS), "198.51.100.0/24")
    plan = plan_reload(old, new, core.rib, core.peers)
    assert plan.policy_changed == ["acme"] and plan.prefixes[0]["first_rejected"][0]["reason"] == "rpki_invalid"
    off = cfg("off")
    plan = plan_reload(old, off, core.rib, core.peers)
    assert plan.policy_changed == ["acme"] and plan.prefixes[0]["changed"] == 1  # the state goes
    assert plan_reload(old, cfg("tag-only", caches=False), core.rib).other  # caches changed: listed


# --- the whole decision against a reference ---------------------------------------------------------
BASE = int(ipaddress.ip_address("198.51.96.0"))  # a /20 of test space: every generated prefix lives here


def prefix_st(lo: int = 18, hi: int = 27) -> st.SearchStrategy[ipaddress.IPv4Network]:
    return st.builds(lambda plen, bits: ipaddress.ip_network((BASE + (bits << (32 - plen) & 0xFFF), plen), strict=False)
                     if plen > 20 else ipaddress.ip_network((BASE, plen), strict=False),
                     st.integers(lo, hi), st.integers(0, 2**12))


#: A rule most generated prefixes match, so the RPKI step is reached often.
BROAD = "198.51.96.0/20 ge 20 le 28"
ASNS = st.sampled_from([ACME_AS, OTHER_AS, 0, 64513])


@st.composite
def vrp_st(draw: st.DrawFn) -> Vrp:
    net = draw(prefix_st(18, 26))
    ml = draw(st.integers(net.prefixlen, 32))
    return Vrp(4, int(net.network_address), net.prefixlen, ml, draw(ASNS))


@st.composite
def rule_st(draw: st.DrawFn) -> str:
    net = draw(prefix_st(18, 24))
    ge = draw(st.integers(net.prefixlen, 28))
    le = draw(st.integers(ge, 28))
    return f"{net} ge {ge} le {le}"


def reference_state(vs: list[Vrp], prefix: ipaddress.IPv4Network, origin: int | None, blackhole: bool) -> Validity:
    """RFC 6811 §2, word for word: covered by a VRP whose prefix contains the route; matched when the
    VRP's AS is the origin AS (never AS 0, never NONE) and the route is no longer than its max length
    (for RTBH paths the max length is not applied, as BIRD does)."""
    covering = [v for v in vs if prefix.subnet_of(v.network())]
    if not covering:
        return Validity.NOT_FOUND
    for v in covering:
        if origin is not None and origin != 0 and v.asn == origin and (blackhole or prefix.prefixlen <= v.max_len):
            return Validity.VALID
    return Validity.INVALID


def reference_decision(rules: list[str], mode: str, vs: list[Vrp], prefix: ipaddress.IPv4Network,
                       as_path: tuple[int, ...], as_set_last: bool, blackhole: bool,
                       rtbh: bool = False) -> tuple[str, Validity | None]:
    """The policy's rule order (routing/policy.py docstring), then the RPKI mode. A blackhole request
    (RFC 7999) needs ``import.rtbh`` and lies inside a rule's prefix at any length up to /32."""
    state = None if mode == "off" else reference_state(vs, prefix, None if as_set_last else as_path[-1], blackhole)
    if blackhole and not rtbh:
        return "rtbh_not_allowed", state
    if prefix.prefixlen > (32 if blackhole else 24):
        return "too_specific", state
    in_list = False
    for r in rules:
        net, _, ge, _, le = r.split()
        inside = prefix.subnet_of(ipaddress.ip_network(net))
        if inside and (blackhole or int(ge) <= prefix.prefixlen <= int(le)):
            in_list = True
    if not in_list:
        return "not_in_prefix_list", state
    if mode == "reject-invalid" and state is Validity.INVALID:
        return "rpki_invalid", state
    if as_path[0] != ACME_AS:
        return "first_as_mismatch", state
    return "accepted", state


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=st.lists(rule_st(), max_size=3).flatmap(
           lambda r: st.sampled_from([r, [*r, BROAD]]) if r else st.just([BROAD])), vs=st.lists(vrp_st(), max_size=8),
       mode=st.sampled_from(["reject-invalid", "tag-only", "off"]), prefix=prefix_st(18, 26),
       as_path=st.lists(ASNS, min_size=1, max_size=3).map(lambda x: (ACME_AS, *x)) | st.just((OTHER_AS,)),
       as_set_last=st.booleans(), blackhole=st.booleans(), rtbh=st.booleans())
def test_decision_matches_rfc6811_reference(rules: list[str], vs: list[Vrp], mode: str,
                                            prefix: ipaddress.IPv4Network, as_path: tuple[int, ...],
                                            as_set_last: bool, blackhole: bool, rtbh: bool) -> None:
    want = reference_decision(rules, mode, vs, prefix, as_path, as_set_last, blackhole, rtbh)
    a = attrs(*as_path, blackhole=blackhole, as_set_last=as_set_last)
    # 1. announced while the VRPs are in effect
    core = make_core(cfg(mode, rules, bogons=[], rtbh=rtbh))
    change(core, [], vs)
    drain(core)
    announce(core, a, str(prefix))
    assert stored(core, str(prefix)) == want
    assert (prefix in core.rib.loc.prefixes()) == (want[0] == "accepted")
    # 2. announced before, the VRPs arrive as a change (re-validation job, from an opposite set)
    core = make_core(cfg(mode, rules, bogons=[], rtbh=rtbh))
    before = [v._replace(asn=OTHER_AS if v.asn == ACME_AS else ACME_AS) for v in vs]
    change(core, [], before)
    drain(core)
    announce(core, a, str(prefix))
    change(core, before, vs)
    drain(core)
    assert stored(core, str(prefix)) == want
    assert (prefix in core.rib.loc.prefixes()) == (want[0] == "accepted")
    assert want[0] == "accepted" or RejectReason(want[0])
