"""Manifests signed with a node-local key, so crgpu can tell its own images from foreign ones.

A manifest crgpu wrote on this node may name the state root and bundle a restore uses; one
from elsewhere, unsigned, or edited after signing may not (the operator names them). The key is
32 random bytes in a root-only file, made on first use; HMAC-SHA256 over the manifest's
canonical JSON (sorted keys, no spaces) without its `signature` member.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from crgpu.host import config
from crgpu.host.errors import ImagePathError, PreconditionError
from crgpu.host.safedirs import make_private_dirs

ALGORITHM = "hmac-sha256"
KEY_BYTES = 32

TrustLevel = Literal["this-node", "other-node", "unsigned", "edited"]

TRUST_WORDS: dict[TrustLevel, str] = {
    "this-node": "signed by this node",
    "other-node": "signed by another node (or before this node's key was replaced)",
    "unsigned": "unsigned",
    "edited": "edited after this node signed it (the signature does not match)",
}


@dataclass(frozen=True)
class Trust:
    level: TrustLevel
    key_id: str | None = None

    @property
    def trusted(self) -> bool:
        return self.level == "this-node"

    def describe(self) -> str:
        return TRUST_WORDS[self.level]


def key_path() -> Path:
    return Path(config.get("node_key").value)


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"crgpu-node-key\0" + key).hexdigest()[:16]


def _read_key(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PreconditionError(
            f"cannot read the node key {path}: {exc.strerror}",
            hint="it must be a regular root-only file (not a link); remove it to have a new one made",
        ) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise PreconditionError(
                f"the node key {path} is not a private file of this user (mode "
                f"{stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid})",
                hint=f"chmod 600 {path} and chown it to root, or remove it to have a new one made",
            )
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise PreconditionError(
            f"the node key {path} is damaged ({len(key)} bytes, not {KEY_BYTES})",
            hint="remove it to have a new one made (images signed with it become foreign)",
        )
    return key


def node_key(create: bool) -> bytes | None:
    """This node's key; made (0600, in a 0700 directory) when `create` and there is none."""
    path = key_path()
    key = _read_key(path)
    if key is not None or not create:
        return key
    try:
        make_private_dirs(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return _read_key(path)  # another crgpu made it meanwhile
    except OSError as exc:
        raise ImagePathError(f"cannot create the node key {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)
        import secrets  # once per node, when the key is made

        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    return _read_key(path)


def check_node_key() -> None:
    """Refuse now, before anything runs, a node key that signing would refuse later (a link, a
    file others can read, a damaged one)."""
    _read_key(key_path())


def canonical(document: dict[str, Any]) -> bytes:
    body = {k: v for k, v in document.items() if k != "signature"}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def sign(document: dict[str, Any]) -> dict[str, str]:
    """The `signature` member for a manifest document, with this node's key (made if needed)."""
    key = node_key(create=True)
    assert key is not None
    digest = hmac.new(key, canonical(document), hashlib.sha256).hexdigest()
    return {"alg": ALGORITHM, "key_id": key_id(key), "value": digest}


def verify(document: dict[str, Any]) -> Trust:
    """Who wrote this manifest document, as far as this node can tell."""
    signature = document.get("signature")
    if not isinstance(signature, dict) or signature.get("alg") != ALGORITHM:
        return Trust("unsigned")
    claimed = signature.get("key_id")
    value = signature.get("value")
    if not isinstance(claimed, str) or not isinstance(value, str):
        return Trust("unsigned")
    key = node_key(create=False)
    if key is None or claimed != key_id(key):
        return Trust("other-node", claimed if claimed.isalnum() else None)
    try:
        expected = hmac.new(key, canonical(document), hashlib.sha256).hexdigest()
    except ValueError:  # NaN or Infinity in the document: nothing crgpu wrote
        return Trust("edited", claimed)
    return Trust("this-node" if hmac.compare_digest(expected, value) else "edited", claimed)
