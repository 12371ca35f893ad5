"""Entry point. `crgpu __complete ids` (shell completion) answers without loading the CLI stack."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:3] == ["__complete", "ids"]:
        from crgpu.roots import container_ids

        try:
            ids = container_ids()
        except Exception:  # completion must never print a traceback into a shell prompt
            return
        sys.stdout.write("".join(f"{cid}\n" for cid in ids))
        return
    from crgpu.cli.app import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
