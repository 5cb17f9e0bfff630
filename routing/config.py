"""pop-router configuration: YAML validated by pydantic.

Theory of operation
-------------------
The whole configuration is one immutable tree of pydantic models, built once by
:func:`load_config` and passed down explicitly: there are no module-level option globals. Every
model forbids unknown keys, because a typo in a routing policy (``max_prefix:`` instead of
``max_prefixes:``) silently disabling a limit is worse than a refusal to start.

Errors are reported as ``FILE: KEY.PATH: reason`` with the key path written the way an operator
reads YAML (``customers[0].peers[1].address``), one line per problem, so ``pop-router check``
can be used in a commit hook and its output pasted into a ticket.

Invariants checked here (not later at run time):
- every peer's ``address`` and ``local_address`` are of the same family;
- peer addresses are unique across all customers, customer names are unique;
- prefix rules are well formed (``len <= ge <= le <= max``);
- ``fib.protocol`` is not one of the kernel's reserved ids (0-4).

Secrets (TCP-MD5 keys, BFD authentication keys) are :class:`Secret` strings: their ``repr``,
``str``, f-string and ``model_dump`` forms are masked, so a log line, an API document or a config
dump cannot print one by accident. Code that must hand the value on (the generated exabgp.conf,
the BFD process's socket) asks for it with :func:`reveal`. A secret may also be read from a file
(``md5_password_file``, ``secret_file``; relative to the YAML file's directory) so the YAML itself
can be shared; the file is read when the configuration is loaded (and on every reload).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip_address(v: Any) -> IPAddress:
    if isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return v
    try:
        return ipaddress.ip_address(str(v))
    except ValueError:
        raise ValueError(f"{v!r} is not an IPv4 or IPv6 address") from None


def _ip_network(v: Any) -> IPNetwork:
    if isinstance(v, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return v
    try:
        return ipaddress.ip_network(str(v), strict=True)
    except ValueError as exc:
        raise ValueError(f"{v!r} is not a network prefix ({exc})") from None


#: Single-message validators: a union of IPv4/IPv6 types would report one error per member.
IPAddr = Annotated[IPAddress, PlainValidator(_ip_address)]
IPNet = Annotated[IPNetwork, PlainValidator(_ip_network)]

#: Non-global address space refused from customers unless the operator replaces the list.
#: Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) are left out
#: on purpose: every lab and example uses them. Add them in production (``router.bogons``).
DEFAULT_BOGONS: tuple[str, ...] = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
    "240.0.0.0/4",
    "::/8", "100::/64", "2001:2::/48", "2001:10::/28", "fc00::/7", "fe80::/10", "fec0::/10",
    "ff00::/8", "3ffe::/16", "2002::/16",
)

_PREFIX_RULE = re.compile(r"^\s*(?P<prefix>\S+)(?:\s+ge\s+(?P<ge>\d+))?(?:\s+le\s+(?P<le>\d+))?\s*$")


class Secret(str):
    """A configured secret: behaves as the string it holds, but never prints it.

    ``repr``/``str``/``format`` give a mask, so ``log.info("%s", peer)`` or an f-string cannot leak
    it; ``len``, comparisons and ``encode`` still work on the value, and orjson serialises the value
    itself (the 0600 socket to the BFD process relies on that). Use :func:`reveal` to get it.
    """

    __slots__ = ()
    MASK = "**********"

    def __repr__(self) -> str:
        return f"Secret({self.MASK!r})"

    def __str__(self) -> str:
        return self.MASK

    def __format__(self, spec: str) -> str:
        return self.MASK


def reveal(value: str) -> str:
    """The plain value of a :class:`Secret` (or of a plain str), for the few places that need it."""
    return str.__str__(value)


#: A secret field: stored as :class:`Secret`, dumped (``model_dump``, JSON) as the mask.
SecretText = Annotated[str, AfterValidator(Secret), PlainSerializer(lambda _: Secret.MASK, return_type=str)]


def _read_secret_file(path: Path, info: ValidationInfo) -> Path:
    """Resolve a ``*_file`` key against the YAML file's directory and check that it can be used."""
    base = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    _secret_from_file(path)
    return path


def _secret_from_file(path: Path) -> Secret:
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: the secret must be ASCII text") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    value = text.rstrip("\r\n")  # the newline an editor or `echo` adds is not part of the key
    if not value:
        raise ValueError(f"{path} is empty")
    if not value.isascii() or "\n" in value:
        raise ValueError(f"{path}: the secret must be one line of ASCII")
    return Secret(value)


SecretFile = Annotated[Path, AfterValidator(_read_secret_file)]


class ConfigError(Exception):
    """Raised with a message ready to print: file, key path and reason for each problem."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrefixRule(_Model):
    """``PREFIX [ge N] [le M]``: which prefix lengths under PREFIX match (Cisco prefix-list rules).

    Without ``ge``/``le`` only PREFIX itself matches; ``le M`` alone means lengths len..M, ``ge N``
    alone means N..max.
    """

    prefix: IPNetwork
    ge: int
    le: int

    @classmethod
    def parse(cls, text: str) -> PrefixRule:
        m = _PREFIX_RULE.match(text)
        if not m:
            raise ValueError(f"expected 'PREFIX [ge N] [le M]', got {text!r}")
        try:
            prefix = ipaddress.ip_network(m["prefix"], strict=True)
        except ValueError as exc:
            raise ValueError(f"{m['prefix']!r} is not a network prefix ({exc})") from None
        maxlen = prefix.max_prefixlen
        ge = int(m["ge"]) if m["ge"] else None
        le = int(m["le"]) if m["le"] else None
        lo = ge if ge is not None else prefix.prefixlen
        hi = le if le is not None else (maxlen if ge is not None else prefix.prefixlen)
        if not prefix.prefixlen <= lo <= hi <= maxlen:
            raise ValueError(
                f"{text!r}: need {prefix.prefixlen} <= ge <= le <= {maxlen}, got ge={lo} le={hi}"
            )
        return cls(prefix=prefix, ge=lo, le=hi)

    def matches(self, net: IPNetwork) -> bool:
        return (
            net.version == self.prefix.version
            and self.ge <= net.prefixlen <= self.le
            and net.subnet_of(self.prefix)  # type: ignore[arg-type]
        )

    def __str__(self) -> str:
        s = str(self.prefix)
        if self.ge != self.prefix.prefixlen:
            s += f" ge {self.ge}"
        if self.le != self.prefix.prefixlen or self.ge != self.prefix.prefixlen:
            s += f" le {self.le}"
        return s


Rule = Annotated[PrefixRule, BeforeValidator(lambda v: PrefixRule.parse(v) if isinstance(v, str) else v)]

#: Names for well-known communities accepted wherever a community is configured.
WELL_KNOWN_COMMUNITIES = {"no-export": "65535:65281", "no-advertise": "65535:65282", "blackhole": "65535:666"}


def parse_community(text: str) -> tuple[int, int] | tuple[int, int, int]:
    """``A:B`` (RFC 1997, 16-bit halves) or ``A:B:C`` (RFC 8092 large, 32-bit parts), or a well-known
    name; returns the pair or the triple. ValueError with the reason otherwise."""
    raw = WELL_KNOWN_COMMUNITIES.get(str(text).strip().lower(), str(text).strip())
    parts = raw.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ValueError(f"expected A:B, A:B:C or one of {', '.join(WELL_KNOWN_COMMUNITIES)}, got {text!r}")
    values = tuple(int(p) for p in parts)
    limit = 65535 if len(values) == 2 else 2**32 - 1
    if any(v > limit for v in values):
        kind = "standard" if limit == 65535 else "large"
        raise ValueError(f"{text!r}: each part of a {kind} community is 0..{limit}")
    return values  # type: ignore[return-value]


def _community_text(v: Any) -> str:
    parse_community(str(v))
    return str(v).strip().lower() if str(v).strip().lower() in WELL_KNOWN_COMMUNITIES else str(v).strip()


#: A configured community, kept as its text (``65000:100``, ``65000:1:2``, ``no-export``).
Community = Annotated[str, BeforeValidator(_community_text)]


class RouterConfig(_Model):
    asn: Annotated[int, Field(ge=1, le=4294967295)]
    router_id: ipaddress.IPv4Address
    announce: list[IPNet] = []
    bogons: list[IPNet] = Field(default_factory=lambda: [ipaddress.ip_network(b) for b in DEFAULT_BOGONS])
    max_prefix_length_v4: Annotated[int, Field(ge=8, le=32)] = 24
    max_prefix_length_v6: Annotated[int, Field(ge=16, le=128)] = 48
    hold_time_s: Annotated[int, Field(ge=3, le=65535)] = 90
    #: Advertise the graceful-restart capability (RFC 4724) with this restart time; None: not at all.
    graceful_restart_s: Annotated[int, Field(ge=1, le=4095)] | None = None
    #: Longest RTBH (RFC 7999) announcement accepted from a customer with ``import.rtbh``.
    rtbh_max_length_v4: Annotated[int, Field(ge=8, le=32)] = 32
    rtbh_max_length_v6: Annotated[int, Field(ge=16, le=128)] = 128
    #: Informational communities attached to every accepted customer route (this PoP).
    communities: list[Community] = []


class ApiConfig(_Model):
    socket: Path = Path("/run/pop-router/api.sock")
    #: File holding the bearer token that state-changing API calls need; created (0600) if absent.
    token_file: Path | None = None

    @property
    def token_path(self) -> Path:
        return self.token_file or self.socket.with_name("api.token")


class MetricsConfig(_Model):
    listen: str = "127.0.0.1:9324"

    @field_validator("listen")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT, got {v!r}")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address") from None
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class XdpConfig(_Model):
    #: Interfaces whose received packets the XDP fast path forwards (others: kernel only). Empty: off.
    interfaces: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,15}$")]] = []
    #: Neighbour changes arrive as netlink notifications; this full re-read is only a backstop.
    neighbour_refresh_s: Annotated[float, Field(gt=0)] = 30.0
    #: A bpffs (mounted here if it is not) under which the XDP maps are pinned (in ``pop-router/``),
    #: so a restarted daemon finds the fast path still forwarding and adopts its maps. null: no pins.
    bpffs: Path | None = Path("/sys/fs/bpf")


class FibConfig(_Model):
    protocol: Annotated[int, Field(ge=5, le=255)] = 200
    table: Annotated[int, Field(ge=1, le=2**31 - 1)] = 254
    #: After a (re)start, routes of ours found in the kernel are kept this long while sessions come
    #: back, then the ones nobody re-announced are removed.
    stale_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    #: After a restart that adopted kernel routes: hold RIB changes back from the kernel until every
    #: peer has sent End-of-RIB, for at most this long (FRR's update-delay, for the FIB).
    startup_hold_s: Annotated[float, Field(ge=0)] = 10.0
    #: How many FIB operations one netlink batch may hold.
    batch_size: Annotated[int, Field(ge=1, le=100000)] = 10000
    #: Route metric (priority) of our routes. Replace only hits a route with the same prefix *and*
    #: metric, so a distinct metric keeps us from ever overwriting another protocol's route.
    metric: Annotated[int, Field(ge=0, le=2**32 - 1)] = 20
    #: Where the kernel has MPLS routing: each customer next hop gets the incoming label
    #: ``base + (nexthop id - first id)`` whose AF_MPLS route pops it and forwards to that next hop.
    #: null: no incoming-label routes. Ignored (with a warning) where the kernel has no MPLS.
    mpls_local_label_base: Annotated[int, Field(ge=16, le=1048575)] | None = None
    xdp: XdpConfig = XdpConfig()


class ExabgpConfig(_Model):
    #: ExaBGP executable; default: chosen by ``interpreter``.
    binary: Path | None = None
    #: Which Python runs ExaBGP when ``binary`` is unset: ``pypy`` (``exabgp-pypy`` next to this
    #: Python, which ``make deps`` installs where Debian's pypy3 is present: it parses a full table
    #: several times faster), ``cpython`` (the ``exabgp`` next to this Python) or ``auto`` (PyPy when
    #: installed, else CPython, with a log line saying which and why).
    interpreter: Literal["auto", "cpython", "pypy"] = "auto"
    #: PyPy's young-generation size for ExaBGP, in MiB (``PYPY_GC_NURSERY``); null: PyPy's own
    #: choice, half the last-level cache it reads off the CPU. On a host whose CPU reports a 480 MiB
    #: L3 that made every ExaBGP process start at ~240 MB and take in a 1M table ~20 % slower than
    #: with 4 MiB (the nursery no longer fits any cache): the setting makes memory independent of the
    #: host (benchmarks/RESULTS.md, "PyPy's nursery"). Ignored on CPython.
    pypy_nursery_mb: Annotated[int, Field(ge=1, le=1024)] | None = 4
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING"
    #: Directory for the generated ExaBGP configuration and its relay socket.
    run_dir: Path | None = None
    restart_backoff_min_s: Annotated[float, Field(gt=0)] = 0.5
    restart_backoff_max_s: Annotated[float, Field(gt=0)] = 30.0
    #: Longest ExaBGP's reactor sleeps when no socket and no command is ready (its
    #: ``exabgp.reactor.speed`` is this x 100). A BGP message or a command wakes it at once whatever
    #: the value; what waits for the timeout is the reactor's timer work: sending keepalives,
    #: noticing that an outgoing connection completed or that a passive peer connected. Without
    #: ``lean_reactor`` each wake-up walks every session of the process: ExaBGP's default (10 ms)
    #: cost ~25 % of a core idle with 200 sessions, 0.1 s ~8 %, 0.25 s ~5.5 % but 1,000 sessions then
    #: took ~1.5x as long to come up (benchmarks/RESULTS.md, "idle CPU"). Unset: 0.25 s with
    #: ``lean_reactor`` (a wake-up then costs what it visits: 1.7-1.9 % of a core idle with 200
    #: sessions and 1,000 up in 14-18 s, against 2.3 % at 0.1 s), 0.1 s without. Capped at a tenth of
    #: the shortest configured hold time, so keepalives stay on time (``routing/exabgp/conf.py``).
    reactor_poll_s: Annotated[float, Field(ge=0.01, le=1.0)] | None = None
    #: Start ExaBGP through ``routing/exabgp/lean_reactor.py``: a reactor pass then visits only the
    #: sessions with something to do (not Established, a message in, work queued) instead of all of
    #: them, with a full sweep every ``lean_sweep_s`` for the timers. Needs ExaBGP 5.0.x started from
    #: its Python console script; otherwise ExaBGP runs unpatched and ``show status`` says why.
    lean_reactor: bool = True
    #: With ``lean_reactor``: every session gets a turn at least this often, on boundaries of the
    #: wall-clock second. ExaBGP's keepalive and hold timers count whole seconds, so 1 s sends each
    #: keepalive on the same pass as ExaBGP's own reactor; more would make keepalives late.
    lean_sweep_s: Annotated[float, Field(ge=0.01, le=1.0)] = 1.0
    #: How received UPDATEs reach the daemon. ``raw``: with ``lean_reactor``, ExaBGP passes each UPDATE
    #: of a session with four-octet AS numbers and no ADD-PATH on undecoded and the daemon decodes it
    #: (``routing/exabgp/wire.py``, RFC 7606 error handling included): ExaBGP then spends a third of
    #: the CPU on a full table (benchmarks/RESULTS.md). ``json``: ExaBGP decodes every UPDATE and
    #: sends it as JSON, as before. Other sessions, and ``raw`` without the lean reactor, use JSON.
    updates: Literal["raw", "json"] = "raw"
    #: Extra ExaBGP environment settings (``exabgp.a.b: value``), applied last.
    env: dict[str, str] = {}
    #: How many ExaBGP processes share the sessions (a customer's sessions stay in one); ``auto``:
    #: one below 100 sessions, else ``max(1, min(4, cpus - 1))`` (``routing/exabgp/pool.py`` says why).
    #: Changeable by reload: customers that move to another process have their sessions reset.
    processes: Literal["auto"] | Annotated[int, Field(ge=1, le=64)] = "auto"


AUTH_TYPES = ("simple", "keyed-md5", "meticulous-keyed-md5", "keyed-sha1", "meticulous-keyed-sha1")


class BfdAuthConfig(_Model):
    type: Literal["simple", "keyed-md5", "meticulous-keyed-md5", "keyed-sha1", "meticulous-keyed-sha1"]
    key_id: Annotated[int, Field(ge=0, le=255)] = 1
    #: The key, inline; or ``secret_file``: a file holding it (one line). Exactly one of the two.
    secret: Annotated[
        str, Field(min_length=1, max_length=20), AfterValidator(Secret),
        PlainSerializer(lambda _: Secret.MASK, return_type=str),
    ] | None = None
    secret_file: SecretFile | None = None

    @model_validator(mode="after")
    def _secret_fits(self) -> BfdAuthConfig:
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret and secret_file")
        if self.secret_file is not None:
            object.__setattr__(self, "secret", _secret_from_file(self.secret_file))
        assert self.secret is not None
        if not self.secret.isascii():
            raise ValueError("secret must be ASCII")
        if self.type in ("simple", "keyed-md5", "meticulous-keyed-md5") and len(self.secret) > 16:
            raise ValueError(f"{self.type} secrets are at most 16 characters")
        return self


class BfdSettings(_Model):
    """A BFD block at any level (global ``bfd``, ``customers[].bfd``, ``customers[].peers[].bfd``).

    Unset keys inherit from the level above; a block at customer or peer level without ``enabled``
    turns BFD on for the peers it covers.
    """

    enabled: bool | None = None
    tx_interval_ms: Annotated[int, Field(ge=1, le=60000)] | None = None
    rx_interval_ms: Annotated[int, Field(ge=1, le=60000)] | None = None
    multiplier: Annotated[int, Field(ge=1, le=255)] | None = None
    #: RFC 5883 multihop (UDP 4784, TTL checked against ``min_ttl``) instead of single-hop (3784, TTL 255).
    multihop: bool | None = None
    min_ttl: Annotated[int, Field(ge=1, le=255)] | None = None
    #: Routes from the peer are installed only while its BFD session is Up.
    strict: bool | None = None
    #: Interface for single-hop sessions; default: the one holding ``local_address``.
    interface: str | None = None
    auth: BfdAuthConfig | None = None


class BfdGlobalConfig(BfdSettings):
    #: Run the BFD process SCHED_FIFO at this priority (1-99): a routing process busy with a full
    #: table then never delays a BFD packet. None: normal scheduling.
    realtime_priority: Annotated[int, Field(ge=1, le=99)] | None = None


@dataclass(frozen=True)
class BfdPeerSettings:
    """The effective BFD settings of one peer after inheritance."""

    enabled: bool
    tx_interval_ms: int
    rx_interval_ms: int
    multiplier: int
    multihop: bool
    min_ttl: int
    strict: bool
    interface: str | None
    auth: BfdAuthConfig | None


def effective_bfd(glob: BfdGlobalConfig, customer: BfdSettings | None, peer: BfdSettings | None) -> BfdPeerSettings:
    levels = [glob, customer, peer]
    enabled = bool(glob.enabled)
    for lv in (customer, peer):
        if lv is not None:
            enabled = lv.enabled if lv.enabled is not None else True

    def pick(name: str, default: Any) -> Any:
        val = default
        for lv in levels:
            if lv is not None and getattr(lv, name) is not None:
                val = getattr(lv, name)
        return val

    return BfdPeerSettings(
        enabled=enabled, tx_interval_ms=pick("tx_interval_ms", 300), rx_interval_ms=pick("rx_interval_ms", 300),
        multiplier=pick("multiplier", 3), multihop=pick("multihop", False), min_ttl=pick("min_ttl", 254),
        strict=pick("strict", False), interface=pick("interface", None), auth=pick("auth", None),
    )


class ImportPolicy(_Model):
    prefixes: list[Rule]
    #: Received-prefix limit per session (BIRD's ``receive limit``): counts every prefix the peer
    #: makes us store, accepted or rejected. Exceeding it tears the session down (cease 1).
    max_prefixes: Annotated[int, Field(ge=1)] | None = None
    local_pref: Annotated[int, Field(ge=0, le=2**32 - 1)] = 100
    #: MPLS label stack (outermost first) pushed on traffic towards this customer's prefixes; labels
    #: from labeled-unicast routes (RFC 8277) take precedence.
    set_mpls_label: list[Annotated[int, Field(ge=16, le=1048575)]] = []
    #: Accept RTBH announcements (BLACKHOLE, 65535:666) inside ``prefixes``, up to
    #: ``router.rtbh_max_length_v4``/``_v6``: traffic to them is dropped at the PoP.
    rtbh: bool = False
    #: Paths carrying any of these communities are rejected (``A:B``, ``A:B:C``, ``*`` for any part).
    reject_communities: list[Annotated[str, Field(pattern=r"^(\*|\d+):(\*|\d+)(:(\*|\d+))?$")]] = []


class ExportPolicy(_Model):
    """What one customer's sessions are sent."""

    #: Our prefixes announced to this customer; null: ``router.announce``.
    prefixes: list[IPNet] | None = None
    #: Extra copies of our AS in the AS_PATH (ExaBGP adds one itself on eBGP).
    prepend: Annotated[int, Field(ge=0, le=3)] = 0
    #: Communities attached to what we announce.
    communities: list[Community] = []
    #: Also announce a default route (0.0.0.0/0, ::/0) of the session's family.
    default_route: bool = False


class PeerConfig(_Model):
    address: IPAddr
    local_address: IPAddr
    #: TCP-MD5 key (RFC 2385), inline; or ``md5_password_file``: a file holding it. Not both.
    md5_password: SecretText | None = None
    md5_password_file: SecretFile | None = None
    hold_time_s: Annotated[int, Field(ge=3, le=65535)] | None = None
    #: GTSM (RFC 5082): send TTL 255 and require it on receive.
    ttl_security: bool = False
    passive: bool = False
    bfd: BfdSettings | None = None
    #: Informational communities attached to routes accepted over this session (the link).
    communities: list[Community] = []

    @model_validator(mode="after")
    def _same_family(self) -> PeerConfig:
        if self.address.version != self.local_address.version:
            raise ValueError(
                f"address {self.address} and local_address {self.local_address} are of different families"
            )
        if self.md5_password is not None and self.md5_password_file is not None:
            raise ValueError("md5_password and md5_password_file are mutually exclusive")
        if self.md5_password_file is not None:
            object.__setattr__(self, "md5_password", _secret_from_file(self.md5_password_file))
        if self.md5_password is not None and not self.md5_password.isascii():
            raise ValueError("md5_password must be ASCII")
        if self.md5_password is not None and any(c in self.md5_password for c in '"\\;{}\n'):
            raise ValueError("md5_password may not contain any of \" \\ ; { } or a newline (ExaBGP's syntax)")
        return self


class CustomerConfig(_Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
    asn: Annotated[int, Field(ge=1, le=4294967295)]
    import_: ImportPolicy = Field(alias="import")
    peers: Annotated[list[PeerConfig], Field(min_length=1)]
    bfd: BfdSettings | None = None
    export: ExportPolicy = ExportPolicy()
    #: Informational communities attached to this customer's accepted routes.
    communities: list[Community] = []
    #: RPKI origin validation for this customer; null: ``rpki.policy``.
    rpki: Literal["reject-invalid", "tag-only", "off"] | None = None
    #: Source address validation (BCP 38, RFC 3704 feasible path) in the XDP program on the
    #: customer's interfaces: a packet whose source is outside ``prefix-list`` (the customer's
    #: ``import.prefixes``) or ``accepted-routes`` (what it announced and we accepted) is dropped.
    sav: Literal["off", "prefix-list", "accepted-routes"] = "off"


class RpkiCache(_Model):
    address: IPAddr
    port: Annotated[int, Field(ge=1, le=65535)] = 323
    #: Lower is preferred (RFC 8210 §10 spirit): the VRPs of the best reachable caches are used.
    preference: Annotated[int, Field(ge=0, le=255)] = 100


class RpkiConfig(_Model):
    """Route origin validation (RFC 6811) against VRPs from RTR caches (RFC 8210, RFC 6810)."""

    caches: list[RpkiCache] = []
    #: What an ``invalid`` path gets (``customers[].rpki`` overrides it); only with caches configured.
    policy: Literal["reject-invalid", "tag-only", "off"] = "reject-invalid"


class BackboneConfig(_Model):
    """iBGP sessions to the provider's route reflectors: accepted customer routes are exported to
    them (next hop self), so the rest of the network learns what this PoP reaches."""

    peers: list[PeerConfig] = []
    #: Install routes received from the backbone in the FIB (otherwise kept in the Adj-RIB-In only).
    install: bool = False


class CpusConfig(_Model):
    """CPU placement (``common/cpus.py``): the FIB writer thread's long kernel sections must not sit
    on the CPU where the BFD process and the event loop (the failover lane) wake up."""

    #: CPUs of the kernel FIB writer thread; ``auto``: the last CPU when there are two or more.
    writer: Literal["auto", "off"] | list[Annotated[int, Field(ge=0)]] = "auto"
    #: CPUs of the BFD process; ``auto``: every CPU but the writer's.
    control: Literal["auto", "off"] | list[Annotated[int, Field(ge=0)]] = "auto"
    #: CPUs of the daemon's event loop and API thread: ``any`` (not pinned: the scheduler moves them
    #: where there is room), ``control`` (with the BFD process), or a list. Since local repair the
    #: latency-critical half of a failover runs in the BFD process, and a loop pinned beside it on a
    #: two-CPU machine took CPU time the real-time BFD process needed (measured: issue 9).
    loop: Literal["any", "control"] | list[Annotated[int, Field(ge=0)]] = "any"


class Config(_Model):
    router: RouterConfig
    api: ApiConfig = ApiConfig()
    metrics: MetricsConfig = MetricsConfig()
    fib: FibConfig = FibConfig()
    exabgp: ExabgpConfig = ExabgpConfig()
    bfd: BfdGlobalConfig = BfdGlobalConfig()
    cpus: CpusConfig = CpusConfig()
    rpki: RpkiConfig = RpkiConfig()
    backbone: BackboneConfig = BackboneConfig()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    customers: list[CustomerConfig] = []

    @model_validator(mode="after")
    def _unique(self) -> Config:
        names: set[str] = set()
        addrs: dict[IPAddress, str] = {}
        for i, c in enumerate(self.customers):
            if c.name in names:
                raise ValueError(f"customers[{i}].name: duplicate customer name {c.name!r}")
            names.add(c.name)
            for j, p in enumerate(c.peers):
                if p.address in addrs:
                    where = f"customers[{i}].peers[{j}].address"
                    raise ValueError(f"{where}: {p.address} is already a peer of {addrs[p.address]}")
                addrs[p.address] = c.name
        for j, p in enumerate(self.backbone.peers):
            if p.address in addrs:
                raise ValueError(f"backbone.peers[{j}].address: {p.address} is already a peer of {addrs[p.address]}")
            addrs[p.address] = "backbone"
        return self

    def customer_rpki(self, customer: CustomerConfig) -> Literal["reject-invalid", "tag-only", "off"]:
        """The effective RPKI policy of a customer: ``off`` while no cache is configured."""
        if not self.rpki.caches:
            return "off"
        return customer.rpki or self.rpki.policy

    def peers(self) -> list[tuple[CustomerConfig, PeerConfig]]:
        return [(c, p) for c in self.customers for p in c.peers]

    def peers_by_family(self) -> dict[int, int]:
        """Sessions per address family (customers and backbone): each is a neighbour entry."""
        out = {4: 0, 6: 0}
        for p in [p for _c, p in self.peers()] + list(self.backbone.peers):
            out[p.address.version] += 1
        return out

    def peer_bfd(self, customer: CustomerConfig, peer: PeerConfig) -> BfdPeerSettings:
        return effective_bfd(self.bfd, customer.bfd, peer.bfd)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = "import" if part == "import_" else str(part)
            out += f".{name}" if out else name
    return out


def parse_config(data: Any, source: str = "<config>") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        base_dir = Path(source).parent if source != "<config>" else Path.cwd()
        return Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        lines: list[str] = []
        seen: set[str] = set()
        for err in exc.errors():
            where = _loc(tuple(err["loc"]))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required key is missing"
            line = f"{source}: {where}: {msg}" if where else f"{source}: {msg}"
            if line not in seen:
                seen.add(line)
                lines.append(line)
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return config_from_text(text, str(path))


def config_from_text(text: str, source: str = "<request>") -> Config:
    """Parse YAML text (a file's, an API body, later a value from etcd) with ``check``'s error format."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: {where}invalid YAML: {problem}") from None
    return parse_config(data, source)
