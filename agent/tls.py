"""TLS contexts for peer traffic: mutual authentication against the cluster CA only.

Both ends present a node certificate issued by the cluster CA and require one from the other end;
the CA file is the only trust anchor (no system store), so a certificate from any other authority
is refused during the handshake. Hostname checking is off on purpose: peers are addressed by
whatever IP or name is configured, and identity is the node id in the certificate's CN, which the
transport checks itself via :func:`peer_node_id`.
"""

from __future__ import annotations

import os
import ssl

StrPath = str | os.PathLike[str]


def _harden(ctx: ssl.SSLContext, ca: StrPath, cert: StrPath, key: StrPath) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=os.fspath(ca))
    ctx.load_cert_chain(certfile=os.fspath(cert), keyfile=os.fspath(key))
    return ctx


def server_context(ca: StrPath, cert: StrPath, key: StrPath) -> ssl.SSLContext:
    """Context for accepting peers: TLS 1.3, client certificate required and checked against
    ``ca``."""
    return _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), ca, cert, key)


def client_context(ca: StrPath, cert: StrPath, key: StrPath) -> ssl.SSLContext:
    """Context for dialing peers: TLS 1.3, server certificate required and checked against ``ca``;
    the caller compares :func:`peer_node_id` with the node it meant to reach."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # must be cleared before verify_mode is set (ssl's rule)
    return _harden(ctx, ca, cert, key)


def peer_node_id(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """The node id (certificate CN) of the authenticated other end of a connection.

    Raises ValueError when there is no verified certificate or it has no single CN: callers treat
    such a connection as unauthenticated and close it.
    """
    if ssl_object is None:
        raise ValueError("connection is not TLS")
    cert = ssl_object.getpeercert()
    if not cert:
        raise ValueError("peer presented no verified certificate")
    subject: tuple[tuple[tuple[str, str], ...], ...] = cert.get("subject", ())  # type: ignore[assignment]
    names = [value for rdn in subject for (attr, value) in rdn if attr == "commonName"]
    if len(names) != 1 or not names[0]:
        raise ValueError("peer certificate must carry exactly one common name")
    return str(names[0])
