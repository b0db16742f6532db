"""The cluster CA: certificates it issues authenticate peers to each other and nobody else does."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.tls import client_context, peer_node_id, server_context
from shell import pki

REPO = Path(__file__).resolve().parents[2]


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[str, str]:
    """Run a TLS handshake in memory; return (node id the server saw, node id the client saw)."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_side=False)
    done = {"srv": False, "cli": False}
    for _ in range(20):
        for name, obj in (("cli", cli), ("srv", srv)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return peer_node_id(srv), peer_node_id(cli)
    raise AssertionError("handshake did not finish")


def _node_dir(tmp_path: Path, ca: pki.CertKey, node: str, name: str | None = None) -> pki.TLSPaths:
    cert = pki.issue_node_cert(ca, node, ["127.0.0.1"])
    return pki.write_node_tls(tmp_path / (name or node), ca, cert)


def _contexts(paths: pki.TLSPaths) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return (
        server_context(paths.ca, paths.cert, paths.key),
        client_context(paths.ca, paths.cert, paths.key),
    )


def test_nodes_of_one_cluster_authenticate_each_other(tmp_path: Path) -> None:
    ca = pki.create_ca("prod")
    a_server, _ = _contexts(_node_dir(tmp_path, ca, "node1"))
    _, b_client = _contexts(_node_dir(tmp_path, ca, "node2"))
    assert _handshake(a_server, b_client) == ("node2", "node1")


def test_client_from_another_cluster_is_refused(tmp_path: Path) -> None:
    ours, theirs = pki.create_ca("prod"), pki.create_ca("prod")  # same name, different cluster
    a_server, _ = _contexts(_node_dir(tmp_path, ours, "node1"))
    intruder = pki.issue_node_cert(theirs, "node2", [])
    # The intruder trusts our CA, so only the server's check of its certificate can stop it.
    paths = pki.write_node_tls(tmp_path / "intruder", ours, intruder)
    _, intruder_client = _contexts(paths)
    with pytest.raises(ssl.SSLError):
        _handshake(a_server, intruder_client)


def test_server_from_another_cluster_is_refused(tmp_path: Path) -> None:
    ours, theirs = pki.create_ca("prod"), pki.create_ca("prod")
    _, a_client = _contexts(_node_dir(tmp_path, ours, "node1"))
    impostor = pki.write_node_tls(
        tmp_path / "impostor", ours, pki.issue_node_cert(theirs, "node2", [])
    )
    impostor_server, _ = _contexts(impostor)
    with pytest.raises(ssl.SSLError):
        _handshake(impostor_server, a_client)


def test_client_without_certificate_is_refused(tmp_path: Path) -> None:
    ca = pki.create_ca("prod")
    paths = _node_dir(tmp_path, ca, "node1")
    server, _ = _contexts(paths)
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cafile=paths.ca)
    with pytest.raises(ssl.SSLError):
        _handshake(server, anonymous)


def test_node_certificate_names_the_node_and_its_addresses() -> None:
    ca = pki.create_ca("prod")
    pair = pki.issue_node_cert(ca, "web1", ["10.0.0.5", "fd00::5", "web1.example.com"])
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "web1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["web1", "web1.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("fd00::5"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=4 * 365) < lifetime < datetime.timedelta(days=6 * 365)
    assert pki.verify_issued_by(pair.cert_pem, ca)
    assert not pki.verify_issued_by(pair.cert_pem, pki.create_ca("prod"))
    assert pki.node_id_of(pair.cert_pem) == "web1"
    assert pki.cluster_identity(pair.cert_pem) == pki.cluster_identity(ca.cert_pem)


def test_ca_is_a_ten_year_ca_naming_its_cluster() -> None:
    first, second = pki.create_ca("prod"), pki.create_ca("prod")
    cert = x509.load_pem_x509_certificate(first.cert_pem)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime >= datetime.timedelta(days=3650)
    one, two = pki.cluster_identity(first.cert_pem), pki.cluster_identity(second.cert_pem)
    assert one.name == two.name == "prod"
    assert one.cluster_id != two.cluster_id


@pytest.mark.parametrize("bad", ["", "has space", "x" * 65, "nön-ascii"])
def test_unusable_node_ids_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        pki.issue_node_cert(pki.create_ca("prod"), bad, [])


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_node_files_have_private_permissions(tmp_path: Path) -> None:
    ca = pki.create_ca("prod")
    existing = tmp_path / "tls"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    old_umask = os.umask(0)  # even a permissive umask must not widen a key's mode
    try:
        paths = pki.write_node_tls(existing, ca, pki.issue_node_cert(ca, "node1", []))
    finally:
        os.umask(old_umask)
    assert _mode(existing) == 0o700
    assert _mode(paths.key) == 0o600
    assert _mode(paths.cert) == 0o644
    assert _mode(paths.ca) == 0o644
    assert paths == pki.node_tls_paths(existing)
    assert b"PRIVATE KEY" not in paths.ca.read_bytes()  # the CA key never reaches a node


def test_key_is_never_readable_by_others_while_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, int] = {}
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen[Path(dst).name] = _mode(Path(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    ca = pki.create_ca("prod")
    pki.write_ca(tmp_path / "ca", ca)
    pki.write_node_tls(tmp_path / "node", ca, pki.issue_node_cert(ca, "node1", []))
    assert seen["ca-key.pem"] == 0o600
    assert seen["node-key.pem"] == 0o600


def test_ca_round_trips_and_is_not_overwritten(tmp_path: Path) -> None:
    ca = pki.create_ca("prod")
    directory = pki.write_ca(tmp_path / "ca", ca)
    assert _mode(directory) == 0o700
    assert _mode(directory / "ca-key.pem") == 0o600
    assert pki.load_ca(directory) == ca
    with pytest.raises(pki.PKIError):
        pki.write_ca(directory, pki.create_ca("other"))
    assert pki.load_ca(directory) == ca


def test_load_ca_rejects_a_key_that_does_not_match(tmp_path: Path) -> None:
    ca, other = pki.create_ca("prod"), pki.create_ca("prod")
    pki.write_ca(tmp_path, pki.CertKey(ca.cert_pem, other.key_pem))
    with pytest.raises(pki.PKIError, match="does not belong"):
        pki.load_ca(tmp_path)
    with pytest.raises(pki.PKIError, match="cannot read"):
        pki.load_ca(tmp_path / "missing")


def test_cli_creates_a_ca_and_issues_a_working_node_cert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cadir, a_dir, b_dir = tmp_path / "ca", tmp_path / "a", tmp_path / "b"
    assert pki.main(["init-ca", str(cadir), "--name", "lab"]) == 0
    assert "cluster lab" in capsys.readouterr().out
    assert pki.main(["init-ca", str(cadir), "--name", "lab"]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    args = ["issue", str(a_dir), "--ca", str(cadir), "--node", "a", "--address", "127.0.0.1"]
    assert pki.main(args) == 0
    assert pki.main(["issue", str(b_dir), "--ca", str(cadir), "--node", "b"]) == 0
    a_paths, b_paths = pki.node_tls_paths(a_dir), pki.node_tls_paths(b_dir)
    a_server, _ = _contexts(a_paths)
    _, b_client = _contexts(b_paths)
    assert _handshake(a_server, b_client) == ("b", "a")
    assert pki.main(["issue", str(a_dir), "--ca", str(tmp_path / "nope"), "--node", "a"]) == 1


def test_cli_runs_as_a_module(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shell.pki", "init-ca", str(tmp_path / "ca"), "--name", "lab"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ca" / "ca.pem").exists()
