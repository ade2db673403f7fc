"""Service discovery over DNS (issue 10).

* :mod:`~contiv_sdn.dns.names` — the naming rules, pure, over the stored records;
* :mod:`~contiv_sdn.dns.resolver` — a query's answer, and the view that follows Redis;
* :mod:`~contiv_sdn.dns.wire` — parsing and answering on the wire (dnspython + a fast path);
* :mod:`~contiv_sdn.dns.upstream` — forwarding the rest, with TCP fallback;
* :mod:`~contiv_sdn.dns.server` — the Twisted UDP/TCP server and its scopes (who asks);
* :mod:`~contiv_sdn.dns.service` — the child service netmaster/netplugin run.
"""
