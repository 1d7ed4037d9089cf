"""The writer agent's self-signed certificate, and the fingerprint a worker pins.

No certificate authority is involved: whoever configures the destination copies the agent's
SHA-256 fingerprint into the endpoint, and the worker refuses any other certificate before it
sends anything (the transfer token included).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_FILE = "writer-cert.pem"
KEY_FILE = "writer-key.pem"


@dataclass(frozen=True)
class AgentCertificate:
    cert_file: Path
    key_file: Path
    fingerprint: str  # sha256 of the DER certificate, lowercase hex with colons


def fingerprint_of_der(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def normalise_fingerprint(value: str) -> str:
    """Accept 'AB:CD:…' or 'abcd…'; return the colon form in lowercase."""
    digest = value.replace(":", "").strip().lower()
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise ValueError("a certificate fingerprint is 64 hexadecimal digits (SHA-256)")
    return ":".join(digest[i:i + 2] for i in range(0, 64, 2))


def _subject_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def ensure_certificate(folder: Path, hosts: list[str]) -> AgentCertificate:
    """Load the agent's certificate from ``folder``, creating it (and its key, mode 0600) on
    first start."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_file, key_file = folder / CERT_FILE, folder / KEY_FILE
    if not cert_file.exists() or not key_file.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coriolis-writer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=3650))
                .add_extension(x509.SubjectAlternativeName(_subject_names(hosts)),
                               critical=False)
                .sign(key, hashes.SHA256()))
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return AgentCertificate(cert_file, key_file,
                            fingerprint_of_der(cert.public_bytes(serialization.Encoding.DER)))
