"""The unified options model: validated once, then mapped onto whichever runtime owns the container."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# runc's rule for container IDs (libcontainer: `^[\w+-\.]+$`, never "." or ".."), made stricter: the
# first character is a letter or digit, so an ID can never be read as a flag, and the whole ID fits
# in one file name (NAME_MAX 255). fullmatch: `$` would let a trailing newline through.
PAGE_SERVER_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}", re.ASCII)
ID_MAX_CHARS = 255
CONTAINER_ID_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.+-]{{0,{ID_MAX_CHARS - 1}}}", re.ASCII)
PATH_MAX_BYTES = 4095
NAME_MAX_BYTES = 255

RuntimeName = Literal["runc", "runsc"]
RuntimeChoice = Literal["auto", "runc", "runsc"]
CgroupsMode = Literal["soft", "full", "strict", "ignore"]
Compression = Literal["none", "flate-best-speed"]
CudaMode = Literal["auto", "plugin", "driver-api", "off"]
# What Kubernetes allows in a namespace, pod and container name (DNS-1123, at most 253).
_K8S_PART = r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?"
K8S_REF = re.compile(rf"({_K8S_PART})/({_K8S_PART})/({_K8S_PART})")


def check_container_ref(value: object) -> str:
    """A container as an operator names it: a runtime ID (or an engine's name, which follows the
    same rule), or Kubernetes' NAMESPACE/POD/CONTAINER. Resolved to a strict ID before use."""
    if isinstance(value, str) and K8S_REF.fullmatch(value):
        return value
    return check_container_id(value)


def check_container_id(value: object) -> str:
    """Return the ID when runc would accept it, it cannot pass for a flag and no path can be
    escaped with it; ValueError otherwise. Applied to the command line and to every ID an image holds."""
    if not isinstance(value, str) or not CONTAINER_ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"invalid container ID {value!r}: start with a letter or digit, then letters, digits and "
            f"+ - . _ only, at most {ID_MAX_CHARS} characters"
        )
    return value


def check_path_lengths(value: str) -> str:
    """A path the kernel can take: no NUL, no component over NAME_MAX, not over PATH_MAX."""
    if "\x00" in value:
        raise ValueError("path contains a NUL byte")
    encoded = value.encode("utf-8", "surrogateescape")
    if len(encoded) > PATH_MAX_BYTES:
        raise ValueError(f"path is longer than {PATH_MAX_BYTES} bytes")
    if any(len(part) > NAME_MAX_BYTES for part in encoded.split(b"/")):
        raise ValueError(f"path has a name longer than {NAME_MAX_BYTES} bytes")
    return value


def _absolute(value: Path | None) -> Path | None:
    if value is None:
        return None
    if str(value) == "":
        raise ValueError("path is empty")
    check_path_lengths(str(value))
    return Path(check_path_lengths(str(Path(value).expanduser().absolute())))


class _CommonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Required, except for a checkpoint handed off to an engine (the plan fills it in then).
    image_path: Path | None = None
    runtime: RuntimeChoice = "auto"
    root: Path | None = None
    work_path: Path | None = None
    tcp_established: bool = False
    tcp_close: bool = False
    file_locks: bool = False
    ext_unix_sk: bool = False
    shell_job: bool = False
    manage_cgroups_mode: CgroupsMode | None = None
    # crgpu's own: how long to wait for another crgpu holding the container (None: not at all).
    wait: float | None = Field(default=None, ge=0, le=86400)
    # runsc global flags the operator passes (they win over the sandbox's and the image's).
    runtime_flags: tuple[str, ...] = ()
    runtime_debug: bool = False
    lazy_pages: bool = False
    # ADDRESS:PORT of CRIU's page server (lazy migration): served at checkpoint, fetched at restore.
    page_server: str | None = None

    @field_validator("page_server", mode="after")
    @classmethod
    def _address_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not PAGE_SERVER_HOST.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not ADDRESS:PORT (an IPv4 address or host name, a port 1-65535)")
        return value

    @field_validator("runtime_flags", mode="after")
    @classmethod
    def _runtime_flags_ok(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from crgpu.options.runsc_flags import check_operator_flag

        return tuple(check_operator_flag(flag) for flag in value)

    @field_validator("root", "work_path", mode="after")
    @classmethod
    def _paths_absolute(cls, value: Path | None) -> Path | None:
        return _absolute(value)

    @field_validator("image_path", mode="after")
    @classmethod
    def _image_absolute(cls, value: Path | None) -> Path | None:
        return _absolute(value)

    @property
    def image_dir(self) -> Path:
        """The image directory; the validators make sure there is one by the time it is used."""
        if self.image_path is None:
            raise ValueError("no image path")
        return self.image_path

    @model_validator(mode="after")
    def _tcp_modes_exclusive(self) -> _CommonOptions:
        # CRIU either dumps established connections in repair mode or drops them: not both.
        if self.tcp_established and self.tcp_close:
            raise ValueError("--tcp-established and --tcp-close contradict each other: choose one")
        return self


class CheckpointOptions(_CommonOptions):
    container_id: str
    leave_running: bool = False
    # Write the image where the owning engine (podman, Docker) restores it from.
    hand_off: bool = False
    skip_in_flight: bool = False
    link_remap: bool = False
    # runsc only: refused on runc with a message naming the runtime.
    compression: Compression | None = None
    direct: bool = False
    exclude_committed_zero_pages: bool = False
    cuda_checkpoint_path: str | None = None
    cuda_checkpoint_sequential: bool = False
    keep_failed: bool = False
    pre_dump: int = Field(default=0, ge=0, le=16)
    parent_path: str | None = Field(default=None, min_length=1, max_length=4095)
    status_fd: int | None = Field(default=None, ge=0, le=1 << 20)
    cuda: CudaMode = "auto"
    cuda_lock_timeout_ms: int = Field(default=10_000, ge=0, le=3_600_000)

    @field_validator("container_id", mode="after")
    @classmethod
    def _id_ok(cls, value: str) -> str:
        return check_container_ref(value)

    @model_validator(mode="after")
    def _one_parent(self) -> CheckpointOptions:
        if self.image_path is None and not self.hand_off:
            raise ValueError("give --image-path DIR (or --hand-off for a podman or Docker container)")
        if self.image_path is not None and self.hand_off:
            raise ValueError("--hand-off writes the image where the engine looks for it: drop --image-path")
        if self.hand_off and self.leave_running:
            raise ValueError("--hand-off stops the container for its engine to restore: drop --leave-running")
        if self.pre_dump and self.parent_path:
            raise ValueError("--pre-dump chooses the parent itself: drop --parent-path or --pre-dump")
        if self.lazy_pages and not self.page_server:
            raise ValueError("--lazy-pages needs --page-server ADDRESS:PORT to serve the pages from")
        if (self.page_server or self.status_fd is not None) and not self.lazy_pages:
            raise ValueError("--page-server and --status-fd are for a --lazy-pages checkpoint")
        if self.lazy_pages and (self.pre_dump or self.leave_running):
            raise ValueError("--lazy-pages cannot be combined with --pre-dump or --leave-running")
        return self


class RestoreOptions(_CommonOptions):
    container_id: str | None = None
    bundle: Path | None = None
    detach: bool = True
    pid_file: Path | None = None
    direct: bool = False
    force: bool = False
    # Take the state root and bundle from an image this node did not sign.
    trust_image: bool = False
    # An archive's image root filesystem (the archive holds only the writable layer).
    rootfs: Path | None = None
    console_socket: Path | None = None
    # An archive's container restored into this network namespace instead of a new one.
    netns: Path | None = None

    @field_validator("container_id", mode="after")
    @classmethod
    def _id_ok(cls, value: str | None) -> str | None:
        return None if value is None else check_container_id(value)

    @model_validator(mode="after")
    def _page_server_is_lazy(self) -> RestoreOptions:
        if self.image_path is None:
            raise ValueError("give --image-path: the checkpoint directory or archive")
        if self.page_server and not self.lazy_pages:
            raise ValueError(
                "--page-server is where a --lazy-pages restore fetches its pages: add --lazy-pages"
            )
        return self

    @field_validator("bundle", "pid_file", "console_socket", "rootfs", "netns", mode="after")
    @classmethod
    def _more_paths_absolute(cls, value: Path | None) -> Path | None:
        return _absolute(value)


def validation_messages(error: ValidationError) -> list[str]:
    """One line per bad value, named as the operator typed it (`--cuda-lock-timeout`, CONTAINER_ID),
    in crgpu's words rather than pydantic's (`'x' is not one of ...`)."""
    from crgpu.options.table import OPTIONS

    typed = {option.name: _typed_name(option.name, option.flags) for option in OPTIONS}
    lines: list[str] = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        name = typed.get(field, f"--{field.replace('_', '-')}") if field else ""
        message = _in_our_words(item)
        lines.append(f"{name}: {message}" if name else message)
    return lines


def _typed_name(name: str, flags: tuple[str, ...]) -> str:
    long = [flag.split("/")[0] for flag in flags if flag.startswith("--")]
    return long[0] if long else name.upper()  # a positional argument: CONTAINER_ID


def _in_our_words(item: Any) -> str:
    kind, ctx, given = item.get("type"), item.get("ctx") or {}, item.get("input")
    words: dict[str, Callable[[], str]] = {
        "literal_error": lambda: f"{given!r} is not one of {ctx.get('expected')}",
        "int_parsing": lambda: f"{given!r} is not a whole number",
        "int_type": lambda: f"{given!r} is not a whole number",
        "int_from_float": lambda: f"{given!r} is not a whole number",
        "greater_than_equal": lambda: f"{given!r} is below the least allowed, {ctx.get('ge')}",
        "less_than_equal": lambda: f"{given!r} is above the most allowed, {ctx.get('le')}",
        "greater_than": lambda: f"{given!r} must be more than {ctx.get('gt')}",
        "less_than": lambda: f"{given!r} must be less than {ctx.get('lt')}",
        "bool_parsing": lambda: f"{given!r} is neither true nor false",
        "string_too_long": lambda: f"is longer than {ctx.get('max_length')} characters",
        "too_long": lambda: f"has more than {ctx.get('max_length')} values",
        "missing": lambda: "is required",
        "extra_forbidden": lambda: "is not an option of this command",
    }
    chosen = words.get(str(kind))
    return chosen() if chosen else str(item.get("msg", "")).removeprefix("Value error, ")
