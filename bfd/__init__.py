"""BFD (RFC 5880 single-hop per RFC 5881, multihop per RFC 5883) for pop-router.

The package is the BFD side of the picture in ``DESIGN.md``, and it runs in its own process (like
FRR's bfdd) so that a full-table ingest on the routing loop never delays a BFD packet:

- :mod:`bfd.packet` — the control packet codec, its layout declared once; bad input from the wire
  is a typed error that the transport counts and drops;
- :mod:`bfd.auth` — the authentication sections (simple password, keyed/meticulous MD5 and SHA1);
- :mod:`bfd.session` — the sans-IO session state machine (a transition table with the RFC rule on
  each row, time passed in, actions out);
- :mod:`bfd.transport` — the only module that touches sockets and the loop (one timer over a heap);
- :mod:`bfd.process` — the BFD process: sessions requested by the daemon, transitions reported
  back with the monotonic time they were detected;
- :mod:`bfd.gaps` — rolling maxima of packet and timer gaps, to tell whose stall caused a Down.

The daemon's side (:mod:`routing.bfd_link`: requests that outlive a BFD process restart, and BFD
Down fed into the failover lane, which moves the affected nexthop groups to their backups) lives
beside the daemon in ``routing/``.
"""
