"""Signed envelopes on the wire: a model offer's Manifest and an operator's Command (docs/security.md).

Both sign *bytes*: the signer serializes the inner message once and signs those bytes, the verifier
checks the signature over the bytes it received and only then parses them. Nothing is re-encoded
between signing and checking, so no canonical form of protobuf is needed.
"""

from __future__ import annotations

import time

from google.protobuf.message import DecodeError

from edgecut.signing import Keyring, SignatureError, SigningKey
from edgecut.v1 import fleet_pb2 as pb


def now_ms() -> int:
    return int(time.time() * 1000)


def sign_manifest(key: SigningKey, manifest: pb.Manifest) -> tuple[bytes, pb.Signature]:
    manifest.key_id = key.key_id
    data = manifest.SerializeToString()
    return data, pb.Signature(key_id=key.key_id, signature=key.sign(data))


def open_manifest(keyring: Keyring, data: bytes, signature: pb.Signature) -> pb.Manifest:
    """The verified Manifest; SignatureError when unsigned, by an unknown key, or altered."""
    if not data:
        raise SignatureError("the offer carries no signed manifest")
    keyring.verify(data, signature.key_id, signature.signature)
    try:
        manifest = pb.Manifest.FromString(data)
    except DecodeError as exc:  # signed by a trusted key yet not a Manifest: refuse all the same
        raise SignatureError("the signed manifest does not parse") from exc
    if manifest.key_id != signature.key_id:
        raise SignatureError(f"manifest names key {manifest.key_id!r} but is signed by {signature.key_id!r}")
    return manifest


def open_offer(keyring: Keyring, ready: pb.ModelReady) -> pb.Manifest:
    """Verify a ModelReady's manifest and check the offer's plain fields agree with it."""
    manifest = open_manifest(keyring, ready.manifest, ready.signature)
    if ready.artifact_id and ready.artifact_id != manifest.artifact_id:
        raise SignatureError(
            f"offer names artifact {ready.artifact_id[:12]} but its manifest vouches for "
            f"{manifest.artifact_id[:12]}"
        )
    return manifest


def sign_command(key: SigningKey, command: pb.Command, issued_unix_ms: int | None = None) -> pb.Command:
    """The signed form: the inner command (with its issue time) as bytes, plus the operator's signature.

    The plain fields are repeated outside so a human watching the topic can read them; a verifying
    agent ignores them.
    """
    inner = pb.Command()
    inner.CopyFrom(command)
    inner.ClearField("signed")
    inner.ClearField("signature")
    inner.issued_unix_ms = issued_unix_ms if issued_unix_ms is not None else now_ms()
    data = inner.SerializeToString()
    outer = pb.Command()
    outer.CopyFrom(inner)
    outer.signed = data
    outer.signature.CopyFrom(pb.Signature(key_id=key.key_id, signature=key.sign(data)))
    return outer


def open_command(keyring: Keyring, command: pb.Command) -> pb.Command:
    """The verified inner command; SignatureError when unsigned or not by a trusted operator key."""
    if not command.signed:
        raise SignatureError("the command is not signed")
    keyring.verify(command.signed, command.signature.key_id, command.signature.signature)
    try:
        inner = pb.Command.FromString(command.signed)
    except DecodeError as exc:
        raise SignatureError("the signed command does not parse") from exc
    if inner.signed or inner.HasField("signature"):
        raise SignatureError("a signed command may not nest another one")
    return inner
