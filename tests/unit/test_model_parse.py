"""The IPv4 fast path of ``parse_prefix`` accepts and rejects exactly what :mod:`ipaddress` does."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.model import Prefix4, parse_prefix


def reference(text: str) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        return None


def ours(text: str) -> ipaddress.IPv4Network | None:
    try:
        return parse_prefix(text)  # type: ignore[return-value]
    except ValueError:
        return None


@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_valid_prefixes_equal_ipaddress(ip: int, plen: int) -> None:
    text = f"{ipaddress.IPv4Address(ip)}/{plen}"
    p = parse_prefix(text)
    assert isinstance(p, Prefix4) and p == reference(text) and hash(p) == hash(reference(text))


@given(st.text(alphabet="0123456789./: x", max_size=20))
def test_any_text_is_accepted_or_refused_like_ipaddress(text: str) -> None:
    if ":" in text:
        return  # IPv6 goes to ipaddress itself
    assert ours(text) == reference(text)


@pytest.mark.parametrize("text", ["10.0.0.1/24", "01.2.3.4/8", "1.2.3/8", "256.1.1.1/8", "1.2.3.4/33",
                                  "1.2.3.4/", "1.2.3.4", "1.2.3.4/08", " 1.2.3.4/8", "1.2.3.4/8 "])
def test_edge_cases_match(text: str) -> None:
    assert ours(text) == reference(text)
