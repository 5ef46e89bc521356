"""Test certificates: a throw-away CA (trustme) and a certificate it signs, and the SPKI hash Chromium's
--ignore-certificate-errors-spki-list takes, so a headless browser accepts the certificate without installing the CA."""

from __future__ import annotations

import base64
import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

STUDY_HOST = "study.example.org"  # the name the browser tests reach the server by (--host-resolver-rules)


@dataclass(frozen=True)
class TestCertificates:
    cafile: Path
    certfile: Path
    keyfile: Path
    spki: str  # base64 SHA-256 of the certificate's public key


def spki_hash(cert_der: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a DER certificate, as Chromium's SPKI flags want it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_der_x509_certificate(cert_der).public_key()
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def make_certificates(directory: Path, *hosts: str) -> TestCertificates:
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert(*(hosts or (STUDY_HOST, "127.0.0.1", "localhost")))
    cafile, certfile, keyfile = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(cafile))
    cert.private_key_pem.write_to_path(str(keyfile))
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(certfile), append=i > 0)
    leaf_der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    return TestCertificates(cafile, certfile, keyfile, spki_hash(leaf_der))
