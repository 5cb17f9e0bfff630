"""What every BIRD that the labs and benchmarks start must have in its configuration.

Why a log file: this machine has no syslog daemon (no ``/dev/log``), so BIRD's ``syslog()`` falls back
to ``/dev/console``, here a 16550 serial port written synchronously at 115,200 baud inside the kernel,
with the CPU held. During the failover soak's Down storms the soak BIRD's log lines held the CPU it
shares with our BFD process for 80-380 ms at a time (bpftrace: ``uart_write`` / ``n_tty_write`` under
the waiting real-time tasks; ``benchmarks/RESULTS.md``, "failover", 2026-12-01), and both sides went
silent.
"""

from __future__ import annotations

from pathlib import Path


def logging_to_file(conf: str, log: Path) -> str:
    """``conf`` with every class of BIRD's messages sent to ``log`` instead of syslog."""
    return f'log "{log}" all;\n' + conf
