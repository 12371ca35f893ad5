"""crgpu: checkpoint and restore (GPU) containers on runc + CRIU and gVisor runsc."""

import os
import sys
import types

__version__ = "0.1.0"

# crgpu uses no pydantic plugin, and a root tool must not load code from any installed package's
# entry points; it also spares each call the scan of every installed distribution.
os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"


def _no_pydantic_plugins() -> types.ModuleType:
    """pydantic's plugin loader, as it behaves with plugins disabled: no plugins. The real one imports
    importlib.metadata (zipfile, email, csv) before it reads PYDANTIC_DISABLE_PLUGINS: 40-60 ms of
    every checkpoint and restore here, for a list that is empty by the line above."""
    loader = types.ModuleType("pydantic.plugin._loader")
    loader.get_plugins = lambda: ()  # type: ignore[attr-defined]
    return loader


# Only if pydantic has not loaded it yet; a pydantic without this module never looks it up.
sys.modules.setdefault("pydantic.plugin._loader", _no_pydantic_plugins())
