"""The per-cluster certificate authority: create it, issue node certificates, write them safely.

Peer traffic between agents is mutually authenticated TLS. ``cluster init`` creates one CA per
cluster; every node gets a leaf certificate whose CN is its node id, and an agent trusts exactly
that CA and nothing else. A node's identity on the wire is therefore whatever its certificate's CN
says, which is why the CN must be the node id and nothing more clever.

Private keys are written with mode 0600 from the moment the file exists (``os.open`` with a mode,
then an atomic rename), inside a 0700 directory: there is no window in which another local user
could read a key.

Run as ``python -m shell.pki init-ca DIR --name NAME`` or
``python -m shell.pki issue DIR --ca CADIR --node ID --address A [A ...]`` for scripts and tests.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=3650)
NODE_VALIDITY = datetime.timedelta(days=5 * 365)
CLOCK_SKEW = datetime.timedelta(minutes=5)
"""Certificates start a little in the past so a node whose clock lags still accepts them."""

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
NODE_CERT_FILE = "node.pem"
NODE_KEY_FILE = "node-key.pem"


class PKIError(ValueError):
    """A CA or certificate on disk is missing, unreadable or inconsistent."""


@dataclass(frozen=True, slots=True)
class CertKey:
    """A certificate and its private key, both PEM-encoded (key as unencrypted PKCS#8)."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True, slots=True)
class ClusterIdentity:
    """What a cluster CA's subject says: the human name and the random id that tells apart two
    clusters that happen to share a name."""

    name: str
    cluster_id: str


@dataclass(frozen=True, slots=True)
class TLSPaths:
    """Where a node's TLS material lives; the agent's ``agent.tls`` contexts load these."""

    ca: Path
    cert: Path
    key: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_ca(cluster_name: str) -> CertKey:
    """Create a self-signed ECDSA P-256 CA for a new cluster, valid for ten years.

    The subject carries the cluster name (O) and a fresh random cluster id (OU), so certificates
    of two clusters called "prod" still never verify against each other's CA.
    """
    if not cluster_name or len(cluster_name) > 64:
        raise ValueError("cluster name must be 1 to 64 characters")
    cluster_id = secrets.token_hex(8)
    key = _new_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, cluster_id),
            x509.NameAttribute(NameOID.COMMON_NAME, f"shoal cluster CA {cluster_id}"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
    return CertKey(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _check_node_id(node_id: str) -> None:
    # The id becomes the CN (at most 64 characters in X.509) and a DNS SAN (ASCII only).
    if not node_id or len(node_id) > 64:
        raise ValueError("node id must be 1 to 64 characters")
    if not node_id.isascii() or not node_id.isprintable() or any(c.isspace() for c in node_id):
        raise ValueError(f"node id {node_id!r} must be printable ASCII without spaces")


def _san_entries(node_id: str, addresses: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(node_id)]
    for address in addresses:
        try:
            general: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(address))
        except ValueError:
            if not address or not address.isascii() or any(c.isspace() for c in address):
                raise ValueError(f"address {address!r} is neither an IP address nor a hostname")
            general = x509.DNSName(address)
        if general not in names:
            names.append(general)
    return names


def _load_pair(pair: CertKey) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(pair.cert_pem)
        key = serialization.load_pem_private_key(pair.key_pem, password=None)
    except ValueError as exc:
        raise PKIError(f"not a PEM certificate and key: {exc}")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError("the CA key is not an EC key")
    if cert.public_key() != key.public_key():
        raise PKIError("the CA key does not belong to the CA certificate")
    return cert, key


def issue_node_cert(ca: CertKey, node_id: str, addresses: Sequence[str]) -> CertKey:
    """Issue a node's leaf certificate: CN and DNS SAN = node id, IP/DNS SANs for its addresses.

    The certificate is good for both ends of a TLS connection (serverAuth and clientAuth) because
    every agent both accepts peer connections and dials its peers. It never outlives the CA.
    """
    _check_node_id(node_id)
    ca_cert, ca_key = _load_pair(ca)
    key = _new_key()
    now = _now()
    not_after = min(now + NODE_VALIDITY, ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    subject_attrs = [
        attr
        for attr in ca_cert.subject
        if attr.oid in (NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME)
    ]
    subject_attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, node_id))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject_attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(_san_entries(node_id, addresses)), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return CertKey(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def cluster_identity(cert_pem: bytes) -> ClusterIdentity:
    """Read the cluster name and id from a CA certificate or a node certificate it issued."""
    cert = x509.load_pem_x509_certificate(cert_pem)

    def attr(oid: x509.ObjectIdentifier) -> str:
        values = cert.subject.get_attributes_for_oid(oid)
        if not values:
            raise PKIError("certificate does not name a shoal cluster")
        value = values[0].value
        return value if isinstance(value, str) else value.decode()

    return ClusterIdentity(attr(NameOID.ORGANIZATION_NAME), attr(NameOID.ORGANIZATIONAL_UNIT_NAME))


def node_id_of(cert_pem: bytes) -> str:
    """The node id (CN) a node certificate was issued for."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        raise PKIError("certificate has no common name")
    value = values[0].value
    return value if isinstance(value, str) else value.decode()


def verify_issued_by(cert_pem: bytes, ca: CertKey) -> bool:
    """Whether ``cert_pem`` carries a valid signature of this CA (no time or usage checks)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# --- files --------------------------------------------------------------------------------------


def _private_dir(directory: Path) -> None:
    """Create ``directory`` as 0700, or tighten an existing one: it holds private keys."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` atomically with ``mode`` set before any byte of it exists on disk.

    A temporary file is created with O_EXCL and the final mode (fchmod undoes a umask that would
    have made it stricter than asked, never looser), filled, fsynced and renamed over ``path``:
    readers see the old file or the new one, and a key is never readable by others, not even
    while it is being written.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp uses 0600
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_ca(directory: str | os.PathLike[str], ca: CertKey, *, overwrite: bool = False) -> Path:
    """Store a CA as ``ca.pem`` (0644) and ``ca-key.pem`` (0600) in a 0700 directory.

    Refuses to replace an existing CA unless ``overwrite``: losing a cluster's CA key means no
    new node can ever join that cluster.
    """
    path = Path(directory)
    if not overwrite and ((path / CA_CERT_FILE).exists() or (path / CA_KEY_FILE).exists()):
        raise PKIError(f"{path} already holds a CA; refusing to overwrite it")
    _private_dir(path)
    _write_file(path / CA_KEY_FILE, ca.key_pem, 0o600)
    _write_file(path / CA_CERT_FILE, ca.cert_pem, 0o644)
    return path


def load_ca(directory: str | os.PathLike[str]) -> CertKey:
    """Load the CA written by :func:`write_ca`, checking that the key belongs to the certificate."""
    path = Path(directory)
    try:
        pair = CertKey((path / CA_CERT_FILE).read_bytes(), (path / CA_KEY_FILE).read_bytes())
    except OSError as exc:
        raise PKIError(f"cannot read the CA in {path}: {exc.strerror or exc}")
    cert, _ = _load_pair(pair)
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise PKIError(f"{path / CA_CERT_FILE} is not a CA certificate")
    if not constraints.ca:
        raise PKIError(f"{path / CA_CERT_FILE} is not a CA certificate")
    return pair


def write_node_tls(directory: str | os.PathLike[str], ca: CertKey, node: CertKey) -> TLSPaths:
    """Store what an agent needs for peer TLS: the CA certificate (never its key), the node's
    certificate and the node's key (0600) in a 0700 directory."""
    path = Path(directory)
    _private_dir(path)
    paths = TLSPaths(path / CA_CERT_FILE, path / NODE_CERT_FILE, path / NODE_KEY_FILE)
    _write_file(paths.key, node.key_pem, 0o600)
    _write_file(paths.cert, node.cert_pem, 0o644)
    _write_file(paths.ca, ca.cert_pem, 0o644)
    return paths


def node_tls_paths(directory: str | os.PathLike[str]) -> TLSPaths:
    """The paths :func:`write_node_tls` uses in ``directory`` (whether or not they exist yet)."""
    path = Path(directory)
    return TLSPaths(path / CA_CERT_FILE, path / NODE_CERT_FILE, path / NODE_KEY_FILE)


# --- command line -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shell.pki", description="Manage a shoal cluster's certificate authority."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init-ca", help="create a cluster CA in DIR")
    init.add_argument("directory", metavar="DIR")
    init.add_argument("--name", required=True, help="the cluster's name")
    init.add_argument("--force", action="store_true", help="replace an existing CA in DIR")
    issue = sub.add_parser("issue", help="issue a node certificate into DIR")
    issue.add_argument("directory", metavar="DIR")
    issue.add_argument("--ca", required=True, metavar="CADIR", help="directory made by init-ca")
    issue.add_argument("--node", required=True, metavar="ID", help="the node id (certificate CN)")
    issue.add_argument(
        "--address",
        action="extend",
        nargs="+",
        default=[],
        metavar="A",
        help="IP address or hostname the node is reached at (repeatable)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 1 failed, 2 bad usage)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "init-ca":
            ca = create_ca(args.name)
            write_ca(args.directory, ca, overwrite=args.force)
            ident = cluster_identity(ca.cert_pem)
            print(
                f"created CA for cluster {ident.name} (id {ident.cluster_id}) in {args.directory}"
            )
        else:
            ca = load_ca(args.ca)
            node = issue_node_cert(ca, args.node, args.address)
            paths = write_node_tls(args.directory, ca, node)
            print(f"issued certificate for node {args.node} in {paths.cert.parent}")
    except (PKIError, ValueError, OSError) as exc:
        print(f"shell.pki: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
