"""`crgpu gc`: what an archive's restore unpacked and mounted under the work root, taken back
once the container restored from it is gone.

An archive's restore keeps its unpacked images and the container's overlay (the bundle's rootfs)
for as long as the container exists: CRIU and the container use them. Each import directory
records the state root and ID it was restored under (owner.json, written before unpacking). An
import is removed when that container no longer exists there (or no longer runs from this
bundle); one whose restore is still going on holds the container's lock and is left alone, and
so is an import without an owner record whose overlay is still mounted (an older crgpu's).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from crgpu.host import config
from crgpu.host.errors import BusyError
from crgpu.host.locks import container_lock
from crgpu.host.mounts import mount_points_below, unmount
from crgpu.host.safedirs import tree_bytes
from crgpu.image.archive_restore import OWNER_NAME
from crgpu.options.models import check_container_id
from crgpu.runtimes.state import read_small_json, state_labels

OWNER_MAX_BYTES = 4096


@dataclass
class Import:
    path: Path
    container_id: str
    bytes: int
    why: str  # removed: why it may go; kept: why it stays


@dataclass
class GcResult:
    dry_run: bool
    removed: list[Import] = field(default_factory=list)
    kept: list[Import] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(item.bytes for item in self.removed)

    def to_json(self) -> dict[str, object]:
        def rows(items: list[Import]) -> list[dict[str, object]]:
            return [
                {"path": str(i.path), "container_id": i.container_id, "bytes": i.bytes, "why": i.why}
                for i in items
            ]

        return {
            "ok": True,
            "dry_run": self.dry_run,
            "work_root": str(Path(config.get("work_root").value)),
            "removed": rows(self.removed),
            "kept": rows(self.kept),
            "freed_bytes": self.freed_bytes,
        }


def _owner(path: Path) -> tuple[Path, str] | None:
    data = read_small_json(path / OWNER_NAME, OWNER_MAX_BYTES)
    root, container_id = data.get("root"), data.get("id")
    if not isinstance(root, str) or not root.startswith("/") or not isinstance(container_id, str):
        return None
    try:
        return Path(root), check_container_id(container_id)
    except ValueError:
        return None


def _in_use(path: Path, root: Path, container_id: str) -> bool:
    """The container restored from this import still exists, from this import's bundle."""
    state = read_small_json(root / container_id / "state.json", 16 * 1024 * 1024)
    if not state:
        return False
    bundle = state_labels(state.get("config") or {}).get("bundle")
    return not bundle or Path(bundle).resolve() == (path / "bundle").resolve()


def _imports() -> list[tuple[Path, str]]:
    work_root = Path(config.get("work_root").value)
    found = []
    try:
        ids = sorted(entry for entry in os.listdir(work_root))
    except OSError:
        return []
    for container_id in ids:
        directory = work_root / container_id
        if directory.is_symlink() or not directory.is_dir():
            continue
        for name in sorted(os.listdir(directory)):
            path = directory / name
            if name.startswith("import-") and not path.is_symlink() and path.is_dir():
                found.append((path, container_id))
    return found


def collect(dry_run: bool) -> GcResult:
    result = GcResult(dry_run)
    for path, dir_id in _imports():
        owner = _owner(path)
        size = tree_bytes(path)
        if owner is None:
            if (path / "bundle" / "rootfs").is_mount() or mount_points_below(path):
                result.kept.append(Import(path, dir_id, size, "no owner record and still mounted"))
            else:
                _take(result, Import(path, dir_id, size, "no owner record and nothing mounted"), dry_run)
            continue
        root, container_id = owner
        if _in_use(path, root, container_id):
            result.kept.append(
                Import(path, container_id, size, f"container {container_id} exists under {root}")
            )
            continue
        try:
            with container_lock("runc", root, container_id):  # a restore under way holds it
                if _in_use(path, root, container_id):
                    result.kept.append(Import(path, container_id, size, f"container {container_id} exists"))
                    continue
                _take(
                    result,
                    Import(path, container_id, size, f"no container {container_id} under {root}"),
                    dry_run,
                )
        except BusyError:
            result.kept.append(Import(path, container_id, size, "a crgpu restore of it is under way"))
    return result


def _take(result: GcResult, item: Import, dry_run: bool) -> None:
    if dry_run:
        result.removed.append(item)
        return
    for point in mount_points_below(item.path):
        unmount(point, detach=True)
    if mount_points_below(item.path):
        item.why = "a mount below it could not be taken away"
        result.kept.append(item)
        return
    shutil.rmtree(item.path, ignore_errors=True)
    try:
        os.rmdir(item.path.parent)  # the ID's directory, when nothing else is in it
    except OSError:
        pass
    result.removed.append(item)
