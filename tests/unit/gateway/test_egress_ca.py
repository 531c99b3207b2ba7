"""The egress CA (``sandbox_gateway.egress.certs``) with a CA made elsewhere: the chart's, which
Helm generates, identifies its key by a truncated SHA-256 rather than SHA-1.  A leaf minted from
it must still chain to it in a real TLS handshake."""

from __future__ import annotations

import datetime
import hashlib
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sandbox_gateway.egress.certs import EgressCA

pytestmark = pytest.mark.unit


def _foreign_ca(directory: Path) -> None:
    """A CA whose key identifier is not the SHA-1 of its key (as Go's x509 now derives it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "demo egress CA")])
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, True, False, False, False), critical=True
        )
        .add_extension(
            x509.SubjectKeyIdentifier(hashlib.sha256(point).digest()[:20]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir()
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


def test_a_leaf_of_a_ca_made_elsewhere_chains_to_it(tmp_path: Path) -> None:
    _foreign_ca(tmp_path / "ca")
    ca = EgressCA(tmp_path / "ca")
    server_side, client_side = socket.socketpair()
    server = ca.server_context("allowed.test")

    def serve() -> None:
        try:
            with server.wrap_socket(server_side, server_side=True) as tls:
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = ssl.create_default_context(cafile=str(tmp_path / "ca" / "ca.pem"))
    with client.wrap_socket(client_side, server_hostname="allowed.test") as tls:
        assert tls.recv(2) == b"ok"
    thread.join(10)
