"""Every option of `checkpoint` and `restore`, declared once: flags, help, kind, default, the verbs
that take it, and how it reaches runc and runsc.

The Typer parameters (cli/params.py), the runtime routes (runtimes/runc.py, runtimes/runsc.py), the
shell completions, the man pages and the README's option table are made from this table; the
pydantic models in options.py stay the options object, and a test holds the two together. Adding an
option is one entry here, plus code only where its route is not a plain flag. Plain data: shell
completion and --help load it without pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Verb = Literal["checkpoint", "restore"]
Kind = Literal["flag", "switch", "dir", "file", "id", "int", "float", "choice", "text", "list"]
RunscKind = Literal["flag", "sandbox", "refused", "custom"]
BOTH: tuple[Verb, ...] = ("checkpoint", "restore")
CHECKPOINT: tuple[Verb, ...] = ("checkpoint",)
RESTORE: tuple[Verb, ...] = ("restore",)


@dataclass(frozen=True)
class RunscRoute:
    """How an option reaches runsc: a flag of the verb (`value`: its name), handled inside the
    sandbox or refused (`value`: what crgpu tells the operator), or code of the adapter's own."""

    kind: RunscKind = "custom"
    value: str = ""


@dataclass(frozen=True)
class Option:
    name: str  # the options model's field
    flags: tuple[str, ...]
    help: str | Mapping[str, str]  # one text, or one per verb
    kind: Kind
    verbs: tuple[Verb, ...]
    default: object = None
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    # A boolean option's runc flag (used where this runc's help has it), else its CRIU config key.
    runc_flag: str | None = None
    criu_key: str | None = None
    runc_refused: bool = False  # a runsc-only option: refused on runc
    runsc: RunscRoute = field(default_factory=RunscRoute)
    # The README's columns: runc 1.1/1.2, runc 1.3+, runsc ("" keeps the option out of the table).
    readme: tuple[str, str, str] = ("", "", "")
    required: tuple[Verb, ...] = ()  # the verbs that cannot run without it

    def help_for(self, verb: str) -> str:
        return self.help if isinstance(self.help, str) else self.help[verb]

    @property
    def long(self) -> str:
        return next(flag for flag in self.flags if flag.startswith("--"))


def _sandbox(message: str) -> RunscRoute:
    return RunscRoute("sandbox", message)


def _refused(message: str) -> RunscRoute:
    return RunscRoute("refused", message)


def _flag(name: str) -> RunscRoute:
    return RunscRoute("flag", name)


OPTIONS: tuple[Option, ...] = (
    Option(
        "container_id",
        (),
        {
            "checkpoint": "The container to checkpoint: its ID, its podman or Docker name, or NAMESPACE/POD/CONTAINER.",
            "restore": "ID for the restored container (default: the checkpointed one).",
        },
        "id",
        BOTH,
        required=CHECKPOINT,
    ),
    Option(
        "image_path",
        ("--image-path", "-i"),
        {
            "checkpoint": "Directory for the checkpoint; must be new or empty.",
            "restore": "The checkpoint directory, or an archive (crgpu export's, podman's --export, the kubelet's).",
        },
        "dir",
        BOTH,
        readme=("`--image-path`", "`--image-path`", "`--image-path`"),
    ),
    Option(
        "work_path",
        ("--work-path",),
        {
            "checkpoint": "Directory for CRIU's logs and stats (default: the image path).",
            "restore": "Directory for CRIU's restore log and stats (default: a new dir under /var/lib/crgpu/work).",
        },
        "dir",
        BOTH,
        readme=(
            "`--work-path` (default: image dir)",
            "same",
            "crgpu's own log dir; runsc ignores `--work-path` (said)",
        ),
    ),
    Option(
        "bundle",
        ("--bundle", "-b"),
        "The container's bundle (default: from crgpu.json).",
        "dir",
        RESTORE,
        readme=("`--bundle`", "same", "`--bundle`"),
    ),
    Option(
        "detach",
        ("--detach/--no-detach", "-d"),
        "Return once the container runs (default), or wait for it to exit.",
        "switch",
        RESTORE,
        default=True,
        readme=("`--detach`", "same", "`--detach`"),
    ),
    Option(
        "pid_file",
        ("--pid-file",),
        "Write the restored container's PID here.",
        "file",
        RESTORE,
        readme=("`--pid-file`", "same", "`--pid-file`"),
    ),
    Option(
        "console_socket",
        ("--console-socket",),
        "A unix socket that receives the restored container's terminal (terminal: true containers).",
        "file",
        RESTORE,
        metavar="SOCKET",
        runc_flag="console-socket",
        runsc=_flag("console-socket"),
        readme=("`--console-socket`", "same", "`--console-socket`"),
    ),
    Option(
        "leave_running",
        ("--leave-running",),
        "Keep the container running after the checkpoint.",
        "flag",
        CHECKPOINT,
        runc_flag="leave-running",
        runsc=RunscRoute("custom"),
        readme=("`--leave-running`", "same", "`--leave-running`"),
    ),
    Option(
        "tcp_established",
        ("--tcp-established",),
        {
            "checkpoint": "Checkpoint established TCP connections.",
            "restore": "Restore established TCP connections.",
        },
        "flag",
        BOTH,
        runc_flag="tcp-established",
        readme=(
            "`--tcp-established`",
            "same",
            "global `--allow-connected-on-save` (2026-05+), else `--net-disconnect-ok=false`, else refused",
        ),
    ),
    Option(
        "skip_in_flight",
        ("--skip-in-flight", "--tcp-skip-in-flight"),
        "Skip half-open (in-flight) TCP connections.",
        "flag",
        CHECKPOINT,
        # runc 1.3+: a flag, and always sent over RPC; 1.1/1.2: only the config file reaches CRIU.
        runc_flag="tcp-skip-in-flight",
        criu_key="skip-in-flight",
        runsc=_sandbox(
            "--skip-in-flight: no runsc flag; the sandbox's own network stack saves in-flight connections"
        ),
        readme=(
            "CRIU config `skip-in-flight`",
            "`--tcp-skip-in-flight`",
            "handled inside the sandbox (said)",
        ),
    ),
    Option(
        "link_remap",
        ("--link-remap",),
        "Link deleted-but-open files back so they can be dumped.",
        "flag",
        CHECKPOINT,
        runc_flag="link-remap",
        criu_key="link-remap",
        runsc=_sandbox("--link-remap: no runsc flag; gVisor saves deleted-but-open files inside the sandbox"),
        readme=("CRIU config `link-remap`", "`--link-remap`", "handled inside the sandbox (said)"),
    ),
    Option(
        "tcp_close",
        ("--tcp-close",),
        {
            "checkpoint": "Drop established TCP connections (restore with --tcp-close too).",
            "restore": "Restore connected TCP sockets closed (as dumped with --tcp-close).",
        },
        "flag",
        BOTH,
        # No runc has --tcp-close and none sends it over RPC.
        criu_key="tcp-close",
        runsc=_sandbox(
            "--tcp-close: no runsc flag; dropping connections on save is runsc's default behaviour"
        ),
        readme=("CRIU config `tcp-close`", "CRIU config `tcp-close`", "runsc's default behaviour (said)"),
    ),
    Option(
        "file_locks",
        ("--file-locks",),
        {"checkpoint": "Checkpoint file locks.", "restore": "Restore file locks."},
        "flag",
        BOTH,
        runc_flag="file-locks",
        runsc=_sandbox(
            "--file-locks: no runsc flag; file locks live in the sandbox's kernel and are saved with it"
        ),
        readme=("`--file-locks`", "same", "kept in the sandbox's state (said)"),
    ),
    Option(
        "ext_unix_sk",
        ("--ext-unix-sk",),
        "Allow external unix sockets.",
        "flag",
        BOTH,
        runc_flag="ext-unix-sk",
        runsc=_refused(
            "--ext-unix-sk is a CRIU option; runsc has no external unix socket support in checkpoints"
        ),
        readme=("`--ext-unix-sk`", "same", "refused"),
    ),
    Option(
        "shell_job",
        ("--shell-job",),
        {"checkpoint": "Allow shell jobs (a controlling terminal).", "restore": "Allow shell jobs."},
        "flag",
        BOTH,
        runc_flag="shell-job",
        runsc=_refused(
            "--shell-job is a CRIU option; runsc restores a terminal through --console-socket instead"
        ),
        readme=("`--shell-job`", "same", "refused"),
    ),
    Option(
        "manage_cgroups_mode",
        ("--manage-cgroups-mode",),
        "soft|full|strict|ignore (ignore: runc 1.2+).",
        "choice",
        BOTH,
        choices=("soft", "full", "strict", "ignore"),
        runsc=_refused("--manage-cgroups-mode is a CRIU option; runsc manages the sandbox's cgroups itself"),
        readme=("`soft`, `full`, `strict` (`ignore`: refused on 1.1)", "all four", "refused"),
    ),
    Option(
        "compression",
        ("--compression",),
        "runsc only: none|flate-best-speed.",
        "choice",
        CHECKPOINT,
        choices=("none", "flate-best-speed"),
        runc_refused=True,
        runsc=_flag("compression"),
        readme=("refused", "refused", "`--compression`"),
    ),
    Option(
        "direct",
        ("--direct",),
        {
            "checkpoint": "runsc only: write pages with O_DIRECT.",
            "restore": "runsc only: read pages with O_DIRECT.",
        },
        "flag",
        BOTH,
        runc_refused=True,
        runsc=_flag("direct"),
        readme=("refused", "refused", "`--direct`"),
    ),
    Option(
        "exclude_committed_zero_pages",
        ("--exclude-committed-zero-pages",),
        "runsc only: leave zero pages out.",
        "flag",
        CHECKPOINT,
        runc_refused=True,
        runsc=_flag("exclude-committed-zero-pages"),
        readme=("refused", "refused", "`--exclude-committed-zero-pages`"),
    ),
    Option(
        "cuda_checkpoint_path",
        ("--cuda-checkpoint-path",),
        "runsc GPU containers: cuda-checkpoint's path inside the container.",
        "text",
        CHECKPOINT,
        runc_refused=True,
        runsc=_flag("cuda-checkpoint-path"),
        readme=(
            "refused",
            "refused",
            "passed where runsc has it (release-20260608+); a GPU sandbox on an older runsc is refused",
        ),
    ),
    Option(
        "cuda_checkpoint_sequential",
        ("--cuda-checkpoint-sequential",),
        "runsc GPU containers: run cuda-checkpoint for one process at a time.",
        "flag",
        CHECKPOINT,
        runc_refused=True,
        runsc=_flag("cuda-checkpoint-sequential"),
        readme=("refused", "refused", "passed where runsc has it (release-20260608+)"),
    ),
    Option(
        "pre_dump",
        ("--pre-dump",),
        "runc: N pre-dump rounds first, to shorten the final freeze.",
        "int",
        CHECKPOINT,
        default=0,
        metavar="N",
        runsc=_refused("--pre-dump is a CRIU option; runsc has no pre-dumps"),
        readme=("`--pre-dump` rounds, then `--parent-path`", "same", "refused"),
    ),
    Option(
        "parent_path",
        ("--parent-path",),
        "runc: the pre-dump image this checkpoint only adds to, relative to the image path (as CRIU takes it).",
        "text",
        CHECKPOINT,
        metavar="DIR",
        runc_flag="parent-path",
        runsc=_refused("--parent-path is a CRIU option; runsc has no pre-dumps"),
        readme=("`--parent-path`", "same", "refused"),
    ),
    Option(
        "cuda",
        ("--cuda",),
        "runc GPU containers: auto, plugin (CRIU's), driver-api (crgpu drives the driver) or off.",
        "choice",
        CHECKPOINT,
        default="auto",
        choices=("auto", "plugin", "driver-api", "off"),
    ),
    Option(
        "cuda_lock_timeout_ms",
        ("--cuda-lock-timeout",),
        "How long to wait for each CUDA process to lock (0: as long as it takes, driver-api only).",
        "int",
        CHECKPOINT,
        default=10_000,
        metavar="MS",
    ),
    Option(
        "hand_off",
        ("--hand-off",),
        "For a podman or Docker container: write the image where the engine restores it "
        "(`podman container restore NAME`, `docker start --checkpoint NAME`) instead of --image-path.",
        "flag",
        CHECKPOINT,
    ),
    Option(
        "keep_failed",
        ("--keep-failed",),
        "Keep the partial image of a failed checkpoint (default: remove it, keep its logs).",
        "flag",
        CHECKPOINT,
    ),
    Option(
        "force",
        ("--force",),
        "Proceed past the image checks (missing crgpu.json, runtime mismatch).",
        "flag",
        RESTORE,
    ),
    Option(
        "rootfs",
        ("--rootfs",),
        "For an archive: the image's root filesystem (e.g. what `podman image mount IMAGE` prints); "
        "crgpu lays the archive's writable layer over it.",
        "dir",
        RESTORE,
    ),
    Option(
        "netns",
        ("--netns",),
        "For an archive whose container was in its engine's network (a pod's, a bridge's): the network "
        "namespace to restore it into (default: a new one of its own, loopback only).",
        "file",
        RESTORE,
        metavar="PATH",
    ),
    Option(
        "trust_image",
        ("--trust-image",),
        "Let an image this node did not sign choose the state root and bundle.",
        "flag",
        RESTORE,
    ),
    Option(
        "lazy_pages",
        ("--lazy-pages",),
        {
            "checkpoint": "runc: dump all but memory, then serve the pages from --page-server until a lazy restore has them.",
            "restore": "Run the container at once; memory pages follow (runc: CRIU lazy-pages).",
        },
        "flag",
        BOTH,
        runsc=RunscRoute("custom"),
        readme=(
            "checkpoint: `--lazy-pages --page-server` `--status-fd`; restore: `--lazy-pages` + CRIU's lazy-pages daemon",
            "same",
            "checkpoint: refused; restore: `--background`",
        ),
    ),
    Option(
        "page_server",
        ("--page-server",),
        {
            "checkpoint": "With --lazy-pages: ADDRESS:PORT where the memory pages are served.",
            "restore": "With --lazy-pages: fetch the memory pages from the page server at ADDRESS:PORT.",
        },
        "text",
        BOTH,
        metavar="ADDRESS:PORT",
        runsc=_refused("--page-server is a CRIU option; runsc has no page server"),
        readme=(
            "checkpoint: `--page-server`; restore: the daemon's `--page-server --address --port`",
            "same",
            "refused",
        ),
    ),
    Option(
        "status_fd",
        ("--status-fd",),
        "With --lazy-pages: crgpu writes one NUL byte to this file descriptor once the image can be restored.",
        "int",
        CHECKPOINT,
        metavar="FD",
        runsc=_refused("--status-fd is for lazy pages, which runsc has no page server for"),
        readme=("crgpu's own, after `crgpu.json` is written (runc gets crgpu's pipe)", "same", "refused"),
    ),
    Option(
        "wait",
        ("--wait",),
        "Wait this long for another crgpu holding the container.",
        "float",
        BOTH,
        metavar="SECONDS",
    ),
    Option(
        "runtime",
        ("--runtime",),
        {
            "checkpoint": "runc, runsc or auto (detect from the state roots).",
            "restore": "runc, runsc or auto (from crgpu.json).",
        },
        "choice",
        BOTH,
        default="auto",
        choices=("auto", "runc", "runsc"),
    ),
    Option(
        "root",
        ("--root",),
        {
            "checkpoint": "The runtime's state root (default: search the known roots).",
            "restore": "The runtime's state root (default: from crgpu.json).",
        },
        "dir",
        BOTH,
    ),
    Option(
        "runtime_debug",
        ("--runtime-debug",),
        "Run the runtime with its own --debug (its debug lines go to crgpu's output log).",
        "flag",
        BOTH,
        readme=("global `--debug`", "same", "global `--debug=true`"),
    ),
    Option(
        "runtime_flags",
        ("--runtime-flag",),
        "runsc: a global flag to pass (--name=value; repeatable); wins over the sandbox's and the image's.",
        "list",
        BOTH,
        metavar="FLAG",
        readme=("refused", "refused", "a global flag, after the allow-listed ones"),
    ),
)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


def options_for(verb: str) -> tuple[Option, ...]:
    return tuple(option for option in OPTIONS if verb in option.verbs)


def readme_table() -> str:
    """The README's table of how each option reaches each runtime."""
    rows = [
        "| crgpu option | verbs | runc 1.1 / 1.2 | runc 1.3+ | runsc |",
        "|---|---|---|---|---|",
    ]
    for option in OPTIONS:
        if not any(option.readme):
            continue
        flag = option.long.split("/")[0]
        verbs = "both" if option.verbs == BOTH else option.verbs[0]
        rows.append(f"| `{flag}` | {verbs} | " + " | ".join(option.readme) + " |")
    return "\n".join(rows)
