"""OpenFlow over TLS (issue 13, item 3): only a switch certified by our CA gets flows.

The controller runs as netmaster runs it (``Controller`` on a real Redis, its
listener from the same endpoint string ``--ofp-tls-*`` produce), and the
switches are the simulated switches of :mod:`contiv_sdn.testing.simswitch`
dialling in over real TLS connections on loopback: one with a certificate from
the lab's CA (:mod:`contiv_sdn.lab.pki`) gets its flows; one without a
certificate, one whose certificate comes from another CA, and one speaking plain
TCP to the TLS port are refused at the handshake, never registered, and get
nothing; the refusal is logged once, not once per retry.  The last class puts a
real OVS on it: the agent's own OVSDB code sets the switch's SSL record and an
``ssl:`` controller, and the switch connects.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Optional

from cryptography import x509
from twisted.internet import defer, reactor, ssl, threads
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import TestCase

from contiv_sdn.agent.registration import host_dpid, host_record
from contiv_sdn.controller.service import Controller
from contiv_sdn.lab.pki import CertificateAuthority
from contiv_sdn.master.options import NetmasterOptions
from contiv_sdn.openflow.protocol import (certificate_names, dpid_str, name_is_dpid,
                                          tls_listen_description)
from contiv_sdn.store import Store
from contiv_sdn.testing import RedisServer, free_tcp_port, require_binary, require_root
from contiv_sdn.testing.simswitch import SimHost, _SwitchFactory
from contiv_sdn.testing.wait import wait_for

HOST = "tls-h1"


def _client_options(ca_pem: str, cert: Optional[str] = None, key: Optional[str] = None) -> Any:
    """What a switch brings to the handshake: the CA it trusts, and maybe its certificate."""
    with open(ca_pem, "rb") as f:
        trust = ssl.Certificate.loadPEM(f.read())
    client = None
    if cert is not None:
        with open(cert, "rb") as c, open(key, "rb") as k:
            client = ssl.PrivateCertificate.loadPEM(k.read() + c.read())
    return ssl.optionsForClientTLS("127.0.0.1", trustRoot=trust, clientCertificate=client)


class TLSSimHost(SimHost):
    """A simulated switch that dials the controller over TLS (``options``) or plain TCP."""

    def __init__(self, *a: Any, options: Any = None, **kw: Any):
        super().__init__(*a, **kw)
        self.options = options
        self.dials = 0

    def _dial(self) -> None:
        self._retry = None
        if self._stopped or self._target is None:
            return
        self.dials += 1
        f = _SwitchFactory(self)
        if self.options is None:
            self._connector = self.reactor.connectTCP(*self._target, f, timeout=10)
        else:
            self._connector = self.reactor.connectSSL(*self._target, f, self.options, timeout=10)


def make_pki(directory: str) -> dict:
    """The lab's CA with the netmaster's OpenFlow certificate and a switch certificate,
    and a foreign CA with a switch certificate of its own."""
    ca = CertificateAuthority(os.path.join(directory, "pki")).ensure()
    server = ca.issue("netmaster", "netmaster", ["127.0.0.1"], server=True)
    switch = ca.issue(f"switch-{HOST}", HOST, client=True)
    foreign = CertificateAuthority(os.path.join(directory, "other"), "someone else's CA").ensure()
    stranger = foreign.issue(f"switch-{HOST}", HOST, client=True)
    return {"ca": ca.cert_path, "server": server, "switch": switch, "stranger": stranger}


class TLSControllerCase(TestCase):
    """A controller on a real Redis whose switch listener is TLS (no tests of its own)."""

    timeout = 60

    async def _setUp(self) -> None:
        require_binary("redis-server")
        self.dir = tempfile.mkdtemp(prefix="sec-ofp-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.pki = make_pki(self.dir)
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.store = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(self.store.close()))
        await self._seed()
        self.events: list = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.port = free_tcp_port()
        listen = tls_listen_description(f"tcp:{self.port}:interface=127.0.0.1",
                                        self.pki["server"].cert, self.pki["server"].key,
                                        self.pki["ca"])
        self.ctl = Controller(self.store, listen=listen)
        self.ctl.startService()
        self.addCleanup(self.ctl.stopService)
        await wait_for(lambda: self.ctl._port is not None, timeout=10, what="TLS listener")

    def setUp(self) -> defer.Deferred:
        return defer.ensureDeferred(self._setUp())

    async def _seed(self) -> None:
        s = self.store
        await s.put_state("obj:global", "global", {"name": "global", "fwdMode": "bridge",
                                                   "arpMode": "proxy"})
        await s.put_state("tenant", "default", {"vrfId": 1})
        await s.put_state("obj:network", "default:net1", {
            "encap": "vxlan", "subnet": "20.1.1.0/24", "tenantName": "default",
            "networkName": "net1"})
        await s.put_state("network", "default:net1", {
            "netId": 3, "encap": "vxlan", "vni": 1001, "vlan": 0, "localVlan": 1,
            "subnet": "20.1.1.0/24", "gateway": ""})
        await s.put_state("host", HOST, host_record(HOST, "192.168.79.1", host_dpid(HOST),
                                                    "br-int", None, 1500))

    def switch(self, options: Any) -> TLSSimHost:
        h = TLSSimHost(HOST, "192.168.79.1", reactor, options=options, max_backoff=0.2)
        h.connect("127.0.0.1", self.port)
        self.addCleanup(h.stop)
        return h

    def refusal_lines(self) -> list:
        return [formatEvent(e) for e in self.events
                if "refused switch" in (e.get("log_format") or "")]

    async def assert_refused_every_time(self, h: TLSSimHost, why: str) -> None:
        """Refused at least twice (it retried), never registered, no flow, said once."""
        await wait_for(lambda: self.ctl.refusals.refused >= 2 and h.dials >= 2, timeout=20,
                       what="two refused attempts")
        self.assertEqual(h.handshakes, 0)
        self.assertEqual(h.table, {})
        self.assertEqual(h.flow_mods + h.bundles, 0)
        self.assertEqual(list(self.ctl.registry.switches()), [])
        lines = self.refusal_lines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("127.0.0.1", lines[0])
        self.assertIn(why, lines[0])
        self.assertNotIn("Traceback", "\n".join(formatEvent(e) or "" for e in self.events))



class OpenFlowTLSTests(TLSControllerCase):
    async def test_certified_switch_gets_flows(self):
        sw = self.pki["switch"]
        h = self.switch(_client_options(self.pki["ca"], sw.cert, sw.key))
        await wait_for(lambda: h.up and len(h.table) > 0, timeout=20, what="flows on the switch")
        self.assertEqual([s.dpid for s in self.ctl.registry.switches()], [host_dpid(HOST)])
        self.assertEqual(self.ctl.refusals.refused, 0)

    async def test_switch_without_certificate_is_refused(self):
        h = self.switch(_client_options(self.pki["ca"]))
        await self.assert_refused_every_time(h, "certificate")

    async def test_switch_with_a_foreign_ca_certificate_is_refused(self):
        st = self.pki["stranger"]
        h = self.switch(_client_options(self.pki["ca"], st.cert, st.key))
        await self.assert_refused_every_time(h, "certificate")

    async def test_plain_tcp_to_the_tls_port_is_refused(self):
        h = self.switch(None)
        await self.assert_refused_every_time(h, "")

    async def test_a_refused_address_that_later_succeeds_is_forgotten(self):
        """The once-only log is per trouble: a success in between makes the next refusal
        said again (a certificate that expires later is not hidden by an old line)."""
        bad = self.switch(_client_options(self.pki["ca"]))
        await wait_for(lambda: len(self.refusal_lines()) == 1, timeout=20, what="first refusal")
        bad.stop()
        sw = self.pki["switch"]
        good = self.switch(_client_options(self.pki["ca"], sw.cert, sw.key))
        await wait_for(lambda: good.up, timeout=20, what="certified switch up")
        good.stop()
        await wait_for(lambda: not self.ctl.registry.switches(), timeout=20, what="switch gone")
        again = self.switch(_client_options(self.pki["ca"]))
        await wait_for(lambda: len(self.refusal_lines()) == 2, timeout=20, what="refusal said again")
        self.assertEqual(again.handshakes, 0)

    async def test_a_certificate_of_another_host_cannot_claim_this_datapath(self):
        """Every certificate of the CA passes the TLS handshake; the one of host tls-h2
        announcing tls-h1's datapath id is dropped at FEATURES: never registered, no
        flow, the refusal said once across its retries (naming what the certificate
        names), and tls-h1's own certificate still gets its flows afterwards."""
        other = CertificateAuthority(os.path.join(self.dir, "pki")).ensure().issue(
            "switch-tls-h2", "tls-h2", client=True)
        h = self.switch(_client_options(self.pki["ca"], other.cert, other.key))
        await wait_for(lambda: self.ctl.refusals.refused >= 2 and h.dials >= 2, timeout=20,
                       what="two refused attempts")
        self.assertEqual(h.table, {})
        self.assertEqual(h.flow_mods + h.bundles, 0)
        self.assertEqual(list(self.ctl.registry.switches()), [])
        lines = self.refusal_lines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(f"announces datapath {dpid_str(host_dpid(HOST))}", lines[0])
        self.assertIn("certificate names tls-h2", lines[0])
        self.assertNotIn("Traceback", "\n".join(formatEvent(e) or "" for e in self.events))
        h.stop()
        sw = self.pki["switch"]
        good = self.switch(_client_options(self.pki["ca"], sw.cert, sw.key))
        await wait_for(lambda: good.up and len(good.table) > 0, timeout=20,
                       what="flows on the certified switch")
        self.assertEqual([s.dpid for s in self.ctl.registry.switches()], [host_dpid(HOST)])


class CertificateNameTests(TestCase):
    """Which certificate names stand for a datapath (host names, or the dpid in hex)."""

    def test_names(self):
        dpid = host_dpid(HOST)
        self.assertTrue(name_is_dpid(HOST, dpid))
        self.assertFalse(name_is_dpid("tls-h2", dpid))
        self.assertTrue(name_is_dpid(f"{dpid:016x}", dpid))
        self.assertTrue(name_is_dpid(f"0x{dpid:x}", dpid))
        self.assertTrue(name_is_dpid(":".join(f"{dpid:016x}"[i:i + 2] for i in range(0, 16, 2)),
                                     dpid))
        self.assertFalse(name_is_dpid(f"{dpid + 1:016x}", dpid))
        self.assertFalse(name_is_dpid("", dpid))

    def test_cn_and_dns_names_are_read(self):
        d = tempfile.mkdtemp(prefix="sec-ofp-names-")
        self.addCleanup(shutil.rmtree, d, True)
        issued = CertificateAuthority(d).ensure().issue("sw", "h1", ["h1.example", "10.0.0.1"],
                                                        client=True)
        with open(issued.cert, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        self.assertEqual(certificate_names(cert), ["h1", "h1.example"])


class OptionsTests(TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sec-ofp-opt-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.pki = make_pki(self.dir)

    def parse(self, *args: str) -> NetmasterOptions:
        o = NetmasterOptions()
        o.parseOptions(["--state-dir", self.dir, *args])
        return o

    def test_without_the_options_the_listener_is_plain_tcp(self):
        self.assertEqual(self.parse()["ofp-endpoint"], "tcp:6653")

    def test_all_three_make_a_tls_listener_that_names_its_ca(self):
        s = self.pki["server"]
        o = self.parse("--ofp-listen", "127.0.0.1:7653", "--ofp-tls-cert", s.cert,
                       "--ofp-tls-key", s.key, "--ofp-tls-ca", self.pki["ca"])
        self.assertTrue(o["ofp-endpoint"].startswith("ssl:7653:interface=127.0.0.1:"),
                        o["ofp-endpoint"])
        self.assertIn("clientCA=", o["ofp-endpoint"])

    def test_a_missing_one_is_named(self):
        s = self.pki["server"]
        with self.assertRaises(usage.UsageError) as e:
            self.parse("--ofp-tls-cert", s.cert, "--ofp-tls-key", s.key)
        self.assertIn("missing --ofp-tls-ca", str(e.exception))

    def test_a_key_that_is_not_a_key_is_refused_at_start(self):
        s = self.pki["server"]
        with self.assertRaises(usage.UsageError) as e:
            self.parse("--ofp-tls-cert", s.cert, "--ofp-tls-key", self.pki["ca"],
                       "--ofp-tls-ca", self.pki["ca"])
        self.assertIn("not a PEM private key", str(e.exception))

    def test_a_key_of_another_certificate_is_refused_at_start(self):
        s, sw = self.pki["server"], self.pki["switch"]
        with self.assertRaises(usage.UsageError) as e:
            self.parse("--ofp-tls-cert", s.cert, "--ofp-tls-key", sw.key,
                       "--ofp-tls-ca", self.pki["ca"])
        self.assertIn(s.cert, str(e.exception))


class PkiTests(TestCase):
    def test_keys_are_0600_and_a_second_run_keeps_what_is_valid(self):
        d = tempfile.mkdtemp(prefix="sec-pki-")
        self.addCleanup(shutil.rmtree, d, True)
        ca = CertificateAuthority(d).ensure()
        a = ca.issue("sw", "h1", client=True)
        for path in (ca.key_path, a.key):
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o600, path)
        with open(a.cert, "rb") as f:
            first = f.read()
        again = CertificateAuthority(d).ensure().issue("sw", "h1", client=True)
        with open(again.cert, "rb") as f:
            self.assertEqual(f.read(), first)
        renamed = CertificateAuthority(d).ensure().issue("sw", "h2", client=True)
        with open(renamed.cert, "rb") as f:
            self.assertNotEqual(f.read(), first)


class AgentOptionsTests(TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sec-ofp-agt-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.pki = make_pki(self.dir)

    def parse(self, *args: str) -> Any:
        from contiv_sdn.agent.options import Options
        o = Options()
        o.parseOptions(["--host", HOST, "--vtep-ip", "192.168.79.1",
                        "--state-dir", self.dir, *args])
        return o

    def tls_args(self) -> list:
        sw = self.pki["switch"]
        return ["--ofp-tls-cert", sw.cert, "--ofp-tls-key", sw.key, "--ofp-tls-ca", self.pki["ca"]]

    def test_tls_turns_tcp_controllers_into_ssl(self):
        o = self.parse("--controller", "tcp:10.0.0.1:6653", "--controller", "ssl:10.0.0.2:6653",
                       *self.tls_args())
        self.assertEqual(o["controllers"], ["ssl:10.0.0.1:6653", "ssl:10.0.0.2:6653"])
        self.assertEqual(o["ofp-tls"]["ofp-tls-ca"], self.pki["ca"])

    def test_without_tls_nothing_changes(self):
        o = self.parse("--controller", "tcp:10.0.0.1:6653")
        self.assertEqual(o["controllers"], ["tcp:10.0.0.1:6653"])
        self.assertIsNone(o["ofp-tls"])

    def test_an_ssl_controller_without_a_certificate_is_refused(self):
        with self.assertRaises(usage.UsageError) as e:
            self.parse("--controller", "ssl:10.0.0.1:6653")
        self.assertIn("--ofp-tls-cert", str(e.exception))

    def test_a_missing_one_is_named(self):
        with self.assertRaises(usage.UsageError) as e:
            self.parse(*self.tls_args()[:4])
        self.assertIn("missing --ofp-tls-ca", str(e.exception))


class RealSwitchTLSTests(TLSControllerCase):
    """A real OVS set up by the agent's own OVSDB code: SSL record + ``ssl:`` target."""

    timeout = 120

    async def _setUp(self) -> None:
        require_root()
        require_binary("ovs-vswitchd", "ovsdb-server")
        await super()._setUp()
        from contiv_sdn.lab.ovs import OvsInstance
        self.ovs = OvsInstance(os.path.join(self.dir, "ovs"))
        await threads.deferToThread(self.ovs.start)
        self.addCleanup(lambda: threads.deferToThread(self.ovs.stop, remove=True))
        from contiv_sdn.agent.ovsdb import Ovsdb
        self.ovsdb = Ovsdb(f"unix:{self.ovs.db_sock}")
        self.addCleanup(self.ovsdb.close)
        await self.ovsdb.connect()

    def spec(self, cert: Any, controllers: tuple) -> Any:
        from contiv_sdn.agent.ovsdb import BridgeSpec, SslSpec
        return BridgeSpec("br-int", "netdev", host_dpid(HOST), controllers,
                          ssl=SslSpec(cert.key, cert.cert, self.pki["ca"]) if cert else None)

    async def test_certified_switch_gets_flows(self):
        sw = self.pki["switch"]
        target = f"ssl:127.0.0.1:{self.port}"
        result = await self.ovsdb.ensure_bridge(self.spec(sw, (target,)))
        self.assertTrue(result["created"])
        await wait_for(lambda: [s.dpid for s in self.ctl.registry.switches()] == [host_dpid(HOST)],
                       timeout=30, what="the real switch registered over TLS")
        ctrl = await threads.deferToThread(self.ovs.vsctl, "get-controller", "br-int")
        self.assertEqual(ctrl.strip(), target)
        self.assertEqual(await self.ovsdb.get_ssl(), {
            "private_key": sw.key, "certificate": sw.cert, "ca_cert": self.pki["ca"]})
        # restart safety: the same spec again changes nothing (no flush, no reconnect)
        again = await self.ovsdb.ensure_bridge(self.spec(sw, (target,)))
        self.assertEqual(again, {"created": False, "changed": []})
        self.assertEqual(self.ctl.refusals.refused, 0)

    async def test_switch_with_a_foreign_ca_certificate_is_refused(self):
        st = self.pki["stranger"]
        await self.ovsdb.ensure_bridge(self.spec(st, (f"ssl:127.0.0.1:{self.port}",)))
        await wait_for(lambda: self.ctl.refusals.refused >= 1, timeout=30, what="refusal")
        self.assertEqual(list(self.ctl.registry.switches()), [])
        self.assertEqual(len(self.refusal_lines()), 1)

    async def test_plain_tcp_to_the_tls_port_is_refused(self):
        await self.ovsdb.ensure_bridge(self.spec(None, (f"tcp:127.0.0.1:{self.port}",)))
        await wait_for(lambda: self.ctl.refusals.refused >= 1, timeout=30, what="refusal")
        self.assertEqual(list(self.ctl.registry.switches()), [])
