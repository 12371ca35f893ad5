"""crgpu: checkpoint and restore (GPU) containers on runc + CRIU and gVisor runsc."""

import os

__version__ = "0.1.0"

# crgpu uses no pydantic plugin, and a root tool must not load code from any installed package's
# entry points; it also spares each call the scan of every installed distribution.
os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
