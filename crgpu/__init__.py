"""crgpu: checkpoint and restore (GPU) containers on runc + CRIU and gVisor runsc."""

__version__ = "0.1.0"
