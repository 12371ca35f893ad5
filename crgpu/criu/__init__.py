"""CRIU as crgpu knows it: its binary, plugins and config files, its logs' errors and hints, its stats, and what its images grant; imports only crgpu.host."""
