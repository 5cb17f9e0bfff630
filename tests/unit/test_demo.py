"""`make demo`'s idea of converged, on documents shaped like `show peers --json`."""

from __future__ import annotations

from labs.demo import convergence


def _peer(addr: str, state: str = "established", eor: list[str] | None = None) -> dict:
    return {"peer": addr, "state": state, "eor": eor or []}


def test_established_is_not_enough_without_end_of_rib() -> None:
    """The dual-homed customer's second session is up but has sent nothing yet (the `rcvd 0` case)."""
    peers = [_peer("10.0.1.2", eor=["ipv4"]), _peer("10.0.2.2"), _peer("2001:db8:1::2", eor=["ipv6"])]
    done, what = convergence(peers, kernel_routes=4)
    assert not done and "no End-of-RIB yet from 10.0.2.2" in what and "2/3 with End-of-RIB" in what


def test_end_of_rib_must_be_for_the_sessions_own_family() -> None:
    done, _ = convergence([_peer("2001:db8:1::2", eor=["ipv4"])], kernel_routes=1)
    assert not done
    done, what = convergence([_peer("2001:db8:1::2", eor=["ipv6"]), _peer("10.0.1.2", eor=["ipv4"])], 3)
    assert done and what == "2/2 sessions Established, 2/2 with End-of-RIB, 3 routes in the kernel"


def test_a_session_down_or_an_empty_kernel_is_not_converged() -> None:
    assert not convergence([_peer("10.0.1.2", state="active", eor=["ipv4"])], 3)[0]
    assert not convergence([_peer("10.0.1.2", eor=["ipv4"])], 0)[0]
    assert not convergence([], 3)[0]
