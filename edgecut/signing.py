"""Ed25519 keys and signatures shared by the fleet server (signs), the operator (signs) and the agent (verifies).

Formats (docs/security.md):
- a private key is a PEM (PKCS#8) file, created with mode 0600 and never logged;
- a public key is written `ed25519:<base64 of the raw 32 bytes>` (one line, easy to paste into a
  config) or given as a PEM file;
- a key id is the first 16 hex digits of sha256(raw public key); a signature names its key id, so a
  verifier holding several keys (rotation) picks the right one without trying them all.

No protobuf here: callers wrap `(key_id, signature)` into `edgecut.v1.Signature` themselves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgecut.errors import ConfigError, EdgecutError

PREFIX = "ed25519:"
SIGNATURE_BYTES = 64


class SignatureError(EdgecutError):
    """A signature is missing, made by an unknown key, or does not verify."""

    exit_code = 1


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def public_text(public: Ed25519PublicKey) -> str:
    """`ed25519:BASE64`: the one-line form used in agent configs."""
    return PREFIX + base64.b64encode(_raw(public)).decode()


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public)

    @property
    def public_text(self) -> str:
        return public_text(self.public)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def __repr__(self) -> str:  # never print key material, even by accident in a log line
        return f"SigningKey(key_id={self.key_id})"


def generate(path: Path) -> SigningKey:
    """Create a new key at `path` (mode 0600, refusing to overwrite one)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"{path} already exists: refusing to overwrite a key") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return SigningKey(key)


def load_signing_key(path: Path) -> SigningKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read signing key {path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return SigningKey(key)


def load_or_generate(path: Path) -> tuple[SigningKey, bool]:
    """The key at `path`, generated first when the file does not exist; True when it was just made."""
    if Path(path).exists():
        return load_signing_key(path), False
    return generate(Path(path)), True


def parse_public_key(text: str, where: str = "public key") -> Ed25519PublicKey:
    """`ed25519:BASE64` or a PEM public key block."""
    text = text.strip()
    if text.startswith(PREFIX):
        try:
            raw = base64.b64decode(text[len(PREFIX) :], validate=True)
            return Ed25519PublicKey.from_public_bytes(raw)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"{where}: {text[:24]}... is not ed25519:<base64 of 32 bytes>") from exc
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise ConfigError(f"{where}: not a valid PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{where}: a {type(key).__name__}, not an Ed25519 key")
        return key
    raise ConfigError(f"{where}: expected ed25519:<base64> or a PEM public key, got {text[:24]!r}")


def read_public_keys(path: Path) -> list[Ed25519PublicKey]:
    """Every key in a file: one `ed25519:...` per line (`#` comments allowed) or one PEM block."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    if "-----BEGIN" in text:
        return [parse_public_key(text, str(path))]
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    keys = [parse_public_key(ln, f"{path}") for ln in lines if ln]
    if not keys:
        raise ConfigError(f"key file {path} holds no key")
    return keys


class Keyring:
    """Trusted public keys by key id; several at once so keys can be rotated without a gap."""

    def __init__(self, keys: list[Ed25519PublicKey] | None = None) -> None:
        self._keys = {key_id_of(k): k for k in keys or []}

    @classmethod
    def from_config(cls, inline: list[str], files: list[Path], what: str) -> Keyring:
        keys = [parse_public_key(t, what) for t in inline]
        for f in files:
            keys += read_public_keys(f)
        return cls(keys)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def verify(self, data: bytes, key_id: str, signature: bytes) -> None:
        """Raise SignatureError unless `signature` is a valid one over `data` by the trusted key `key_id`."""
        if not signature:
            raise SignatureError("not signed")
        key = self._keys.get(key_id)
        if key is None:
            known = ", ".join(self.key_ids) or "none configured"
            raise SignatureError(
                f"signed by key {key_id[:16]!r}, which is not trusted here (trusted: {known})"
            )
        if len(signature) != SIGNATURE_BYTES:
            raise SignatureError(f"signature is {len(signature)} bytes, not {SIGNATURE_BYTES}")
        try:
            key.verify(signature, data)
        except InvalidSignature as exc:
            raise SignatureError(
                f"signature by key {key_id} does not verify: the content was altered"
            ) from exc
