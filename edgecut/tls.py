"""TLS options shared by the agent and the server: gRPC credentials, MQTT TLS, the peer's identity.

Certificates and keys are files given by path (docs/security.md has the provisioning steps). A
missing or unreadable file is a ConfigError naming the setting and the path. With mutual TLS the
identity of a caller is its client certificate's common name (else its first subject alternative
name): the fleet server takes that as the device id and never the id a request claims.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
import paho.mqtt.client as mqtt

from edgecut.errors import ConfigError


def read(path: Path | None, setting: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from exc


def server_credentials(
    cert: Path | None, key: Path | None, client_ca: Path | None = None
) -> grpc.ServerCredentials | None:
    """TLS for a gRPC server (None = plaintext); with `client_ca`, clients must present a certificate it signed."""
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError("grpc_client_ca needs grpc_tls_cert and grpc_tls_key (mutual TLS is TLS first)")
        return None
    if cert is None or key is None:
        raise ConfigError("grpc_tls_cert and grpc_tls_key go together: set both or neither")
    pair = [(read(key, "grpc_tls_key") or b"", read(cert, "grpc_tls_cert") or b"")]
    ca = read(client_ca, "grpc_client_ca")
    return grpc.ssl_server_credentials(pair, root_certificates=ca, require_client_auth=ca is not None)


def channel_credentials(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    if (cert is None) != (key is None):
        raise ConfigError("grpc_cert_file and grpc_key_file go together: set both or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=read(ca, "grpc_ca_file"),
        private_key=read(key, "grpc_key_file"),
        certificate_chain=read(cert, "grpc_cert_file"),
    )


def peer_identity(context: grpc.ServicerContext) -> str:
    """The client certificate's common name (else first SAN), or "" without mutual TLS."""
    auth = context.auth_context()
    for prop in ("x509_common_name", "x509_subject_alternative_name"):
        values = auth.get(prop) or []
        if values:
            return bytes(values[0]).decode(errors="replace")
    return ""


def mqtt_tls(client: mqtt.Client, ca: Path | None, cert: Path | None = None, key: Path | None = None) -> None:
    """Server-verified TLS on a paho client; with cert + key, the broker can authenticate us by certificate."""
    if (cert is None) != (key is None):
        raise ConfigError("mqtt_cert_file and mqtt_key_file go together: set both or neither")
    for path, setting in ((ca, "mqtt_ca_file"), (cert, "mqtt_cert_file"), (key, "mqtt_key_file")):
        read(path, setting)  # a clear error now rather than an ssl traceback at connect time
    client.tls_set(
        ca_certs=str(ca) if ca else None,
        certfile=str(cert) if cert else None,
        keyfile=str(key) if key else None,
        cert_reqs=ssl.CERT_REQUIRED,
    )
