"""A small certificate authority for the lab's secure mode (and for the tests).

Why the lab makes its own: ``lab up --secure`` must turn on TLS on every channel
(REST, OpenFlow) with nothing installed beforehand, and a CA made per lab root
is also the trust anchor nobody else shares: a certificate from another lab (or
another test's CA) is refused.  Keys are ECDSA P-256 (instant to make, and
Open vSwitch and Twisted both speak it); every private key file is written 0600
before any byte of it lands on disk.

Layout under a directory (``<lab root>/pki/``): ``ca.pem``/``ca.key``, then
``NAME.pem``/``NAME.key`` per certificate issued.  Making again is idempotent:
an existing, still valid file set signed by the same CA is kept (so a restart of
the lab does not re-key switches that OVS already holds).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: How long the lab's certificates stay valid (a lab lives hours, not years).
VALIDITY = datetime.timedelta(days=30)
#: Margin for clocks of the parties that are a little behind.
BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Issued:
    """Paths of one issued certificate (PEM) and its private key (PEM, 0600)."""

    cert: str
    key: str


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "contiv-sdn"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_private(path: str, data: bytes) -> None:
    """Write a secret: created 0600 (never readable by others, not even briefly)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_public(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _sans(names: Iterable[str]) -> list:
    out = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


class CertificateAuthority:
    """A CA whose key and certificate live in ``directory`` (made on first use)."""

    def __init__(self, directory: str, name: str = "contiv-sdn lab CA"):
        self.dir = os.path.abspath(directory)
        self.name = name
        self.cert_path = os.path.join(self.dir, "ca.pem")
        self.key_path = os.path.join(self.dir, "ca.key")
        self._cert: Optional[x509.Certificate] = None
        self._key: Optional[ec.EllipticCurvePrivateKey] = None

    def ensure(self) -> "CertificateAuthority":
        """Load the CA, or make it when it is missing or expired."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if os.path.exists(self.cert_path) and os.path.exists(self.key_path):
            with open(self.cert_path, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
            with open(self.key_path, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), None)
            if _valid_for_a_day(cert) and isinstance(key, ec.EllipticCurvePrivateKey):
                self._cert, self._key = cert, key
                return self
        now = datetime.datetime.now(datetime.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(self.name))
                .issuer_name(_name(self.name)).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE).not_valid_after(now + VALIDITY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                             crl_sign=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        _write_private(self.key_path, _key_pem(key))
        _write_public(self.cert_path, cert.public_bytes(serialization.Encoding.PEM))
        self._cert, self._key = cert, key
        return self

    def issue(self, name: str, common_name: str, alt_names: Sequence[str] = (),
              server: bool = False, client: bool = False) -> Issued:
        """``NAME.pem``/``NAME.key`` signed by this CA (kept when already valid and ours).

        ``alt_names`` are IP addresses or DNS names (subjectAltName: what a TLS client
        checks a server against); ``server``/``client`` set the extended key usage.
        """
        if self._cert is None:
            self.ensure()
        assert self._cert is not None and self._key is not None
        paths = Issued(os.path.join(self.dir, f"{name}.pem"), os.path.join(self.dir, f"{name}.key"))
        if self._still_good(paths, common_name, alt_names):
            return paths
        now = datetime.datetime.now(datetime.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [u for u, on in ((ExtendedKeyUsageOID.SERVER_AUTH, server),
                                  (ExtendedKeyUsageOID.CLIENT_AUTH, client)) if on]
        builder = (x509.CertificateBuilder().subject_name(_name(common_name))
                   .issuer_name(self._cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - BACKDATE).not_valid_after(now + VALIDITY)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True))
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(_sans(alt_names)),
                                            critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        _write_private(paths.key, _key_pem(key))
        _write_public(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
        return paths

    def _still_good(self, paths: Issued, common_name: str, alt_names: Sequence[str]) -> bool:
        if not (os.path.exists(paths.cert) and os.path.exists(paths.key)):
            return False
        try:
            with open(paths.cert, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
        except ValueError:
            return False
        assert self._cert is not None
        if cert.issuer != self._cert.subject or not _valid_for_a_day(cert):
            return False
        try:
            self._cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                           ec.ECDSA(cert.signature_hash_algorithm))
        except Exception:  # noqa: BLE001 - any failure: not signed by this CA, re-issue
            return False
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cns or cns[0].value != common_name:
            return False
        try:
            have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have_names = {str(v) for v in have.get_values_for_type(x509.IPAddress)}
            have_names |= set(have.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            have_names = set()
        return {str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in alt_names} == have_names


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _valid_for_a_day(cert: x509.Certificate) -> bool:
    now = datetime.datetime.now(datetime.timezone.utc)
    return cert.not_valid_after_utc - now > datetime.timedelta(days=1)
