"""Hand-made archives for the tests: the engines' metadata and whatever members a test adds."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

SPEC = json.dumps({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["sh"]}}).encode()
CONFIG = json.dumps({"id": "c1", "name": "web", "runtime": "runc"}).encode()
PODMAN_SPEC = Path(__file__).parent / "fixtures" / "engines" / "podman-5.4-spec.dump.json"

# A header alone, (name, data), or (header, data) for a file with its own mode and owner.
Member = tarfile.TarInfo | tuple[str, bytes] | tuple[tarfile.TarInfo, bytes]


def archive(path: Path, *members: Member, spec: bytes = SPEC) -> Path:
    """An archive with the engines' metadata (config.dump, spec.dump) and these members."""
    return tar(path, ("config.dump", CONFIG), ("spec.dump", spec), *members)


def tar(path: Path, *members: Member) -> Path:
    with tarfile.open(path, "w") as out:
        for member in members:
            if isinstance(member, tuple):
                head, data = member
                info = head if isinstance(head, tarfile.TarInfo) else tarfile.TarInfo(head)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
            else:
                out.addfile(member)
    return path


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info
