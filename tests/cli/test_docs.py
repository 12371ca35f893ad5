"""Completions, man pages and the README's option table: generated from the app and the option
table, never stale, valid for their shells and groff."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import testbed

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gendocs", ROOT / "scripts" / "gendocs.py")
assert _spec is not None and _spec.loader is not None
docs = importlib.util.module_from_spec(_spec)
sys.modules["gendocs"] = docs  # dataclasses look their module up there
_spec.loader.exec_module(docs)
PAGES = ["crgpu.1", "crgpu-checkpoint.1", "crgpu-restore.1", "crgpu-doctor.1", "crgpu-inspect.1"]


def test_generated_files_are_not_stale() -> None:
    assert docs.main(["--check"]) == 0, "run `.venv/bin/python scripts/gendocs.py` and commit the result"


def test_the_readme_option_table_is_the_option_table() -> None:
    from crgpu.options import table as option_table

    readme = (ROOT / "README.md").read_text()
    assert option_table.readme_table() in readme
    edited = readme.replace("| `--link-remap` | checkpoint |", "| `--link-remap` | restore |")
    assert edited != readme and docs.readme(edited) == readme  # a hand edit is made stale


def test_a_changed_definition_makes_them_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(docs.DESCRIPTIONS, "inspect", "something else")
    assert docs.main(["--check"]) == 1


def _bash_complete(words: list[str], env: dict[str, str]) -> list[str]:
    script = (
        f"source {ROOT / 'completions' / 'crgpu.bash'}; "
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}; "
        '_crgpu; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the `crgpu` of this installation
    env.update(extra)
    return env


def test_bash_completes_a_real_container_id(runc_container: Callable[..., testbed.RuncContainer]) -> None:
    container = runc_container()
    env = _env(CRGPU_RUNC_ROOTS=str(container.root))
    assert container.id in _bash_complete(["crgpu", "checkpoint", container.id[:8]], env)
    assert _bash_complete(["crgpu", "checkpoint", "zz-no-such"], env) == []


def test_bash_completes_commands_options_choices_and_directories(tmp_path: Path) -> None:
    (tmp_path / "ckpt-dir").mkdir()
    (tmp_path / "ckpt-file").write_text("")
    env = _env()
    assert set(_bash_complete(["crgpu", ""], env)) >= {
        "checkpoint",
        "restore",
        "doctor",
        "inspect",
        "--version",
    }
    assert "--link-remap" in _bash_complete(["crgpu", "checkpoint", "--li"], env)
    assert _bash_complete(["crgpu", "checkpoint", "--runtime", "run"], env) == ["runc", "runsc"]
    assert _bash_complete(["crgpu", "checkpoint", "--image-path", str(tmp_path / "ckpt")], env) == [
        str(tmp_path / "ckpt-dir")
    ]
    # inspect, restore -i and export -i/-o take archives too: files and directories (before: directories)
    both = {str(tmp_path / "ckpt-dir"), str(tmp_path / "ckpt-file")}
    assert set(_bash_complete(["crgpu", "inspect", str(tmp_path / "ckpt")], env)) == both
    assert set(_bash_complete(["crgpu", "restore", "-i", str(tmp_path / "ckpt")], env)) == both
    assert set(_bash_complete(["crgpu", "export", "-o", str(tmp_path / "ckpt")], env)) == both
    # export's own choices (before: checkpoint's runsc values `none flate-best-speed`, and no --format)
    assert _bash_complete(["crgpu", "export", "--compression", ""], env) == ["auto", "zstd", "gzip", "none"]
    assert _bash_complete(["crgpu", "export", "--format", ""], env) == ["auto", "podman", "kubernetes", "oci"]


@pytest.mark.parametrize(
    ("shell", "name"), [("zsh", "_crgpu"), ("fish", "crgpu.fish"), ("bash", "crgpu.bash")]
)
def test_completion_files_parse(shell: str, name: str) -> None:
    binary = shutil.which(shell)
    if binary is None:
        testbed.missing(f"{shell} is not installed (apt-get install {shell})")
    assert binary is not None
    done = subprocess.run(
        [binary, "-n", str(ROOT / "completions" / name)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.parametrize("page", PAGES)
def test_man_pages_render_without_warnings(page: str) -> None:
    groff = shutil.which("groff")
    if groff is None:
        testbed.missing("groff is not installed (apt-get install groff-base)")
    assert groff is not None
    done = subprocess.run(
        [groff, "-man", "-ww", "-z", str(ROOT / "man" / page)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    text = (ROOT / "man" / page).read_text()
    for section in (".SH OPTIONS", ".SH ENVIRONMENT", ".SH FILES", ".SH EXIT STATUS", ".SH EXAMPLES"):
        assert section in text, section


def test_checkpoint_page_has_runc_runsc_and_gpu_examples() -> None:
    text = (ROOT / "man" / "crgpu-checkpoint.1").read_text()
    assert "runsc" in text and "cuda\\-checkpoint\\-path" in text and ".SH GPU NOTES" in text


def test_every_help_ends_with_examples() -> None:
    from tests.helpers import crgpu

    for args in ([], ["checkpoint"], ["restore"], ["doctor"], ["inspect"]):
        out = crgpu(*args, "--help").stdout
        assert "Examples:" in out, args


def _as_the_crgpu_command(*args: str, columns: int) -> subprocess.CompletedProcess[str]:
    """crgpu as its installed command runs it: argv[0] `crgpu`, __main__ not a package; the
    imports it made on stderr."""
    call = "import sys; sys.argv[0] = 'crgpu'; from crgpu.__main__ import main; main()"
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-c", call, *args],
        env={**os.environ, "COLUMNS": str(columns)},
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.parametrize("path", [(), ("checkpoint",), ("restore",), ("doctor",), ("cuda", "restore")])
def test_help_prints_what_typer_prints_without_loading_typer(path: tuple[str, ...]) -> None:
    for columns in (80, 132):
        for flag in ("--help", "-h"):
            done = _as_the_crgpu_command(*path, flag, columns=columns)
            assert done.returncode == 0, done.stderr
            assert done.stdout == docs.rendered_help(path, columns)
            assert "| typer" not in done.stderr  # the pre-rendered page


def test_a_narrow_terminal_or_other_words_get_help_from_typer_itself() -> None:
    narrow = _as_the_crgpu_command("checkpoint", "--help", columns=60)
    assert narrow.stdout == docs.rendered_help(("checkpoint",), 60) != docs.rendered_help(("checkpoint",))
    assert "| typer" in narrow.stderr
    configured = _as_the_crgpu_command("--config", "/nonexistent", "checkpoint", "--help", columns=100)
    assert configured.stdout == docs.rendered_help(("checkpoint",), 100)
    assert "| typer" in configured.stderr
    as_module = subprocess.run(
        [sys.executable, "-m", "crgpu", "checkpoint", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )  # fmt: skip
    assert as_module.stdout.startswith("Usage: python -m crgpu checkpoint ")  # click's own name for it


def test_the_readme_names_every_key_of_doctors_json() -> None:
    """Before, `config` was in the document and not in the README."""
    import re

    from crgpu.doctor.report import DoctorReport

    report = DoctorReport(checks=[], ready={}, ok=True, summary="", probe=[{}], config=[{}])
    readme = (ROOT / "README.md").read_text()
    line = next(part for part in readme.split("`doctor --json` prints")[1:2])
    named = set(re.findall(r'"(\w+)"', line.split("`")[1]))
    assert set(report.to_json()) <= named, set(report.to_json()) - named


def test_no_help_shows_typers_placeholder_for_a_value() -> None:
    """Before: `--image-path <str>`, `--cuda <str>`; now DIR, PATH, auto|plugin|driver-api|off."""
    from crgpu.cli.help_text import HELP

    assert not [page for page, text in HELP.items() if "<str>" in text or "<int>" in text]
    assert "--cuda auto|plugin|driver-api|off" in HELP["checkpoint"]
    assert "-i, --image-path PATH" in HELP["restore"]
