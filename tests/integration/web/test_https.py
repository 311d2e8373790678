"""The dashboard over HTTPS, and with mutual TLS: a client without a certificate of the CA is refused."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edgecut.errors import ConfigError
from edgecut.server.app import build_server
from tests.support.certs import TestCA
from tests.support.fleet_server import settings
from tests.support.onnx_engine import OnnxTestEngine

pytestmark = pytest.mark.integration


def get(url: str, context: ssl.SSLContext) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10, context=context) as r:
        doc: dict[str, object] = json.load(r)
    return doc


def test_https_and_mutual_tls(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    server_pair, client_pair = ca.issue("fleet.local", server=True), ca.issue("operator-alice")
    s = settings(
        tmp_path / "fleet",
        http="127.0.0.1:0",
        http_tls_cert=server_pair.cert,
        http_tls_key=server_pair.key,
        http_client_ca=ca.path,
    )
    with build_server(s, OnnxTestEngine(tmp_path / "engine")) as server:
        url = server.http_url + "/api/v1/devices"
        assert url.startswith("https://127.0.0.1:")
        anonymous = ssl.create_default_context(cafile=str(ca.path))
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            get(url, anonymous)  # no client certificate: the handshake fails
        trusted = ssl.create_default_context(cafile=str(ca.path))
        trusted.load_cert_chain(str(client_pair.cert), str(client_pair.key))
        assert get(url, trusted)["devices"] == []
        stranger = TestCA(tmp_path / "other").issue("mallory")
        foreign = ssl.create_default_context(cafile=str(ca.path))
        foreign.load_cert_chain(str(stranger.cert), str(stranger.key))
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            get(url, foreign)  # a certificate from another CA


def test_a_missing_certificate_file_is_a_clear_error(tmp_path: Path) -> None:
    s = settings(
        tmp_path / "fleet",
        http="127.0.0.1:0",
        http_tls_cert=tmp_path / "nope.pem",
        http_tls_key=tmp_path / "k",
    )
    with pytest.raises(ConfigError, match=r"nope\.pem does not exist"):
        build_server(s, OnnxTestEngine(tmp_path / "engine")).start()
