"""Config validation: every bad file gives the message an operator needs (file, key path, reason)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from routing.config import ConfigError, PrefixRule, load_config, parse_config

EXAMPLE = Path(__file__).parents[2] / "examples" / "pop.yaml"


def base() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_issue_example_is_valid() -> None:
    c = load_config(EXAMPLE)
    assert c.router.asn == 65000
    assert c.fib.protocol == 200
    assert [str(r) for r in c.customers[0].import_.prefixes] == [
        "203.0.113.0/24", "198.51.100.0/22 le 24", "2001:db8:100::/48",
    ]
    assert c.customers[0].import_.max_prefixes == 100
    assert str(c.api.token_path) == "/run/pop-router/api.token"


def _set(d: dict, path: str, value: object) -> None:
    cur = d
    parts = path.replace("]", "").replace("[", ".").split(".")
    for p in parts[:-1]:
        cur = cur[int(p)] if p.isdigit() else cur[p]
    last = parts[-1]
    if value is _DEL:
        del cur[int(last) if last.isdigit() else last]
    elif last.isdigit():
        cur[int(last)] = value
    else:
        cur[last] = value


_DEL = object()

BAD = [
    ("customers[0].peers[1].address", "10.0.0.300",
     "customers[0].peers[1].address: '10.0.0.300' is not an IPv4 or IPv6 address"),
    ("customers[0].peers[0].local_address", "2001:db8::1",
     "customers[0].peers[0]: address 10.0.1.2 and local_address 2001:db8::1 are of different families"),
    ("customers[0].import.prefixes[1]", "198.51.100.0/22 le 20",
     "customers[0].import.prefixes[1]: '198.51.100.0/22 le 20': need 22 <= ge <= le <= 32"),
    ("customers[0].import.prefixes[0]", "203.0.113.1/24",
     "customers[0].import.prefixes[0]: '203.0.113.1/24' is not a network prefix"),
    ("customers[0].import.prefixes[0]", "203.0.113.0/24 lt 25",
     "customers[0].import.prefixes[0]: expected 'PREFIX [ge N] [le M]'"),
    ("customers[0].import.max_prefix", 5, "customers[0].import.max_prefix: unknown key"),
    ("customers[0].import.max_prefixes", 0, "customers[0].import.max_prefixes: Input should be greater than"),
    ("customers[0].asn", 4294967296, "customers[0].asn: Input should be less than or equal to 4294967295"),
    ("customers[0].name", "bad name", "customers[0].name: String should match pattern"),
    ("customers[0].peers", [], "customers[0].peers: List should have at least 1 item"),
    ("router.router_id", "2001:db8::1", "router.router_id: Input is not a valid IPv4 address"),
    ("router.asn", _DEL, "router.asn: required key is missing"),
    ("router.announce[0]", "192.0.2.0/33", "router.announce[0]: '192.0.2.0/33' is not a network prefix"),
    ("fib.protocol", 3, "fib.protocol: Input should be greater than or equal to 5"),
    ("fib.mpls_local_label_base", 15, "fib.mpls_local_label_base: Input should be greater than or equal to 16"),
    ("fib.xdp", {"interfaces": ["eth1", "a name far too long"]}, "fib.xdp.interfaces[1]: String should match pattern"),
    ("metrics.listen", "localhost:9324", "metrics.listen: 'localhost' is not an IP address"),
    ("metrics.listen", "127.0.0.1", "metrics.listen: expected HOST:PORT"),
    ("api.sockett", "/x", "api.sockett: unknown key"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD, ids=[b[0] + "=" + repr(b[1]) for b in BAD])
def test_bad_config_message(key: str, value: object, message: str, tmp_path: Path) -> None:
    d = base()
    _set(d, key, value)
    f = tmp_path / "pop.yaml"
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert f"{f}: {message}" in str(e.value), str(e.value)


def test_duplicate_peer_across_customers() -> None:
    d = base()
    other = copy.deepcopy(d["customers"][0])
    other["name"] = "globex"
    other["peers"] = [{"address": "10.0.1.2", "local_address": "10.0.1.1"}]
    d["customers"].append(other)
    msg = r"customers\[1\]\.peers\[0\]\.address: 10\.0\.1\.2 is already a peer of acme"
    with pytest.raises(ConfigError, match=msg):
        parse_config(d, "pop.yaml")


def test_duplicate_customer_name() -> None:
    d = base()
    other = copy.deepcopy(d["customers"][0])
    other["peers"] = [{"address": "10.0.9.2", "local_address": "10.0.9.1"}]
    d["customers"].append(other)
    with pytest.raises(ConfigError, match=r"customers\[1\]\.name: duplicate customer name 'acme'"):
        parse_config(d, "pop.yaml")


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    f = tmp_path / "pop.yaml"
    f.write_text("router:\n  asn: [65000\n")
    with pytest.raises(ConfigError, match=rf"{f}: line \d+ column \d+: invalid YAML"):
        load_config(f)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    f = tmp_path / "pop.yaml"
    f.write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(f)


@pytest.mark.parametrize(
    ("rule", "ge", "le"),
    [("10.0.0.0/8", 8, 8), ("10.0.0.0/8 le 24", 8, 24), ("10.0.0.0/8 ge 16", 16, 32),
     ("10.0.0.0/8 ge 16 le 20", 16, 20), ("2001:db8::/32 le 48", 32, 48)],
)
def test_prefix_rule_ranges(rule: str, ge: int, le: int) -> None:
    r = PrefixRule.parse(rule)
    assert (r.ge, r.le) == (ge, le)
    assert str(PrefixRule.parse(str(r))) == str(r)


def test_bfd_inheritance_global_customer_peer() -> None:
    d = base()
    d["bfd"] = {"tx_interval_ms": 100, "multiplier": 5}
    d["customers"][0]["bfd"] = {"rx_interval_ms": 50}
    d["customers"][0]["peers"][1]["bfd"] = {"enabled": False}
    d["customers"][0]["peers"][0]["bfd"] = {"auth": {"type": "meticulous-keyed-sha1", "key_id": 9, "secret": "s"},
                                            "strict": True}
    c = parse_config(d, "pop.yaml")
    cust = c.customers[0]
    b0 = c.peer_bfd(cust, cust.peers[0])
    assert (b0.enabled, b0.tx_interval_ms, b0.rx_interval_ms, b0.multiplier, b0.strict) == (True, 100, 50, 5, True)
    assert b0.auth is not None and b0.auth.type == "meticulous-keyed-sha1"
    assert c.peer_bfd(cust, cust.peers[1]).enabled is False
    d2 = base()
    c2 = parse_config(d2, "pop.yaml")
    assert c2.peer_bfd(c2.customers[0], c2.customers[0].peers[0]).enabled is False  # off unless asked


@pytest.mark.parametrize(
    ("bfd", "message"),
    [
        ({"tx_interval_ms": 0}, "customers[0].bfd.tx_interval_ms: Input should be greater than or equal to 1"),
        ({"multiplier": 256}, "customers[0].bfd.multiplier: Input should be less than or equal to 255"),
        ({"auth": {"type": "md5", "secret": "x"}}, "customers[0].bfd.auth.type: Input should be"),
        ({"auth": {"type": "keyed-md5", "secret": "x" * 17}}, "keyed-md5 secrets are at most 16 characters"),
    ],
)
def test_bad_bfd_blocks(bfd: dict, message: str) -> None:
    d = base()
    d["customers"][0]["bfd"] = bfd
    with pytest.raises(ConfigError) as e:
        parse_config(d, "pop.yaml")
    assert message in str(e.value), str(e.value)


def test_neighbour_table_too_small_for_the_sessions_is_warned_with_the_sysctl() -> None:
    from fib.capabilities import neighbour_table_warnings

    assert neighbour_table_warnings({4: 512, 6: 10}, {4: 1024, 6: 1024}) == []
    (w,) = neighbour_table_warnings({4: 1000, 6: 10}, {4: 1024, 6: 1024})
    assert "1000 IPv4 peers" in w and "net.ipv4.neigh.default.gc_thresh3" in w and "at least 4000" in w
    assert neighbour_table_warnings({4: 1000}, {4: None}) == []  # unreadable: no guess
