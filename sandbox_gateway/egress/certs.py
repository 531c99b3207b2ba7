"""The platform's egress CA: the enforcement point ends a kernel's TLS with a certificate it
mints for the name the kernel asked for, so that it reads every request's Host (a fronted
request names another host than the SNI) before anything leaves.

Kernels trust this CA alone for egress (their CA bundle is the platform's, mounted read-only);
the enforcement point verifies every origin against the system's CAs (and, for test hosts, the
CA file the operator names).  One P-256 key serves every minted certificate: minting
is then a signature, not a key generation.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sandbox_gateway.egress.policy import normalise_name

CA_NAME: Final = "mini-jupyter-sandbox egress CA"
LEAF_DAYS: Final = 7
CACHE_SIZE: Final = 512
ALPN: Final = ["http/1.1"]  # the requests are read, so HTTP/2 is never offered to a kernel


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


class EgressCA:
    """The CA (created in ``directory`` on first use, kept there) and the certificates it mints."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.cert_path = directory / "ca.pem"
        key_path = directory / "ca.key"
        if key_path.exists() and self.cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self._key = key
            self._cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        else:
            self._key, self._cert = _new_ca()
            _write_private(key_path, _pem_key(self._key))
            self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        # load_cert_chain reads files only: minted certificates live in a private directory.
        self._leaves = Path(tempfile.mkdtemp(prefix="egress-leaves-"))
        self._key_file = self._leaves / "leaf.key"
        _write_private(self._key_file, _pem_key(self._leaf_key))
        self._contexts: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self._names: dict[int, str] = {}

    @property
    def pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def server_context(self, name: str) -> ssl.SSLContext:
        """A server context presenting a certificate for ``name`` and refusing a handshake
        whose SNI is anything else (or absent)."""
        context = self._contexts.get(name)
        if context is not None:
            self._contexts.move_to_end(name)
            return context
        cert_file = self._leaves / f"{len(self._contexts)}-{os.urandom(6).hex()}.pem"
        cert_file.write_bytes(self._mint(name).public_bytes(serialization.Encoding.PEM))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_file, self._key_file)
        cert_file.unlink()
        context.set_alpn_protocols(ALPN)

        def only_this_name(_obj: object, server_name: str | None, _ctx: object) -> int | None:
            if server_name is None or server_name.lower().rstrip(".") != name:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            return None

        context.sni_callback = only_this_name
        self._contexts[name] = context
        self._names[id(context)] = name
        while len(self._contexts) > CACHE_SIZE:
            _, dropped = self._contexts.popitem(last=False)
            self._names.pop(id(dropped), None)
        return context

    def dispatch_context(self) -> ssl.SSLContext:
        """A server context that answers each handshake with the certificate of the name its
        SNI asks for (none: refused); :meth:`name_of` tells, after the handshake, which."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(ALPN)

        def by_name(obj: ssl.SSLObject, server_name: str | None, _ctx: object) -> int | None:
            normal = normalise_name(server_name or "")
            if normal is None:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            obj.context = self.server_context(normal)
            return None

        context.sni_callback = by_name
        return context

    def name_of(self, context: ssl.SSLContext) -> str | None:
        """The name a context of :meth:`server_context` presents a certificate for."""
        return self._names.get(id(context))

    def _mint(self, name: str) -> x509.Certificate:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(self._leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(self._authority_key_id(), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    def _authority_key_id(self) -> x509.AuthorityKeyIdentifier:
        """The CA's own key identifier: a CA made elsewhere (the chart's, by Helm) may derive it
        another way than from the key's SHA-1, and a leaf whose identifier differs from its CA's
        is not chained to it by OpenSSL."""
        try:
            own = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(own.value)


def _new_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def origin_context(extra_ca: str | None = None) -> ssl.SSLContext:
    """How the enforcement point verifies origins: the system's CAs, plus the operator's (a file,
    or PEM text: a compose variable can carry it)."""
    context = ssl.create_default_context()
    if extra_ca and extra_ca.lstrip().startswith("-----BEGIN"):
        context.load_verify_locations(cadata=extra_ca)
    elif extra_ca:
        context.load_verify_locations(cafile=extra_ca)
    context.set_alpn_protocols(ALPN)
    return context
