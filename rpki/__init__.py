"""RPKI route origin validation for pop-router: RTR client (RFC 8210/6810) and RFC 6811 validation.

Layers, leaf first (no module imports one to its right)::

    model (Vrp, Validity)  <-  pdu (codec)  <-  session (sans-IO state machine)  <-  client (asyncio)
                     ^---------- vrp (VrpTable, Validator, affected) <--------------------'

Nothing here imports ``routing/``; the routing side calls in: ``routing/rpki_link.py`` (the clients on
the daemon's control lane, VRP snapshots to the core), ``routing/rov.py`` (re-validation jobs),
``routing/rib.py`` (state before import policy) and ``routing/policy.py`` (``rpki_invalid``).
"""
