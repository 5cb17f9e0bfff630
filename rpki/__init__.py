"""RPKI route origin validation for pop-router: RTR client (RFC 8210/6810) and RFC 6811 validation.

Layers, leaf first (no module imports one to its right)::

    model (Vrp, Validity)  <-  pdu (codec)  <-  session (sans-IO state machine)  <-  client (asyncio)
                     ^---------- vrp (VrpTable, Validator, affected) <--------------------'

Nothing here imports ``routing/``; the RIB and policy call in (see ``rpki/INTEGRATION.md``).
"""
