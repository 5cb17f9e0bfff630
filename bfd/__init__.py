"""BFD (RFC 5880/5881/5883) for pop-router — not implemented yet.

This package is reserved for the sans-IO BFD core, its transport and the BFD process described in
``DESIGN.md``; the work is tracked as its own issue. Nothing in pop-router uses it today: session
failure is detected by BGP hold timers only.
"""
