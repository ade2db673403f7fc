"""Cisco ACI: intent mirrored into an APIC, kept there by a level-triggered reconciler.

* :mod:`drivers.aci.mo` — the APIC classes we write, DN arithmetic, the ownership mark;
* :mod:`drivers.aci.mapping` — intent (Redis records) -> desired MO tree, a pure function;
* :mod:`drivers.aci.client` — APIC REST client on Twisted (login, refresh, re-login);
* :mod:`drivers.aci.reconciler` — the netmaster child service converging the APIC;
* :mod:`drivers.aci.standin` — a stand-in APIC (NOT an APIC) for the lab and tests.

Active with ``twistd netmaster --infra aci --apic-url ...`` (see
:func:`make_reconciler`).  Contiv did this through ``aci-gw``, a separate Python 2
container on Cisco's cobra SDK; here the netmaster talks REST itself.
"""

from __future__ import annotations

from typing import Any, Optional


def make_reconciler(store: Any, settings: dict, reactor: Optional[Any] = None) -> Any:
    """The reconciler service for ``settings`` (built by the netmaster's options:
    ``urls``, ``user``, ``password`` or ``cert_key`` (PEM bytes) + ``cert_name``,
    ``audit``, ``challenge``)."""
    from drivers.aci.client import ApicClient
    from drivers.aci.reconciler import Reconciler

    key = None
    if settings.get("cert_key"):
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(settings["cert_key"], password=None)
    client = ApicClient(settings["urls"], settings["user"], password=settings.get("password"),
                        cert_key=key, cert_name=settings.get("cert_name"),
                        challenge=bool(settings.get("challenge")), reactor=reactor)
    return Reconciler(store, client, audit_interval=float(settings.get("audit") or 30.0),
                      reactor=reactor)
