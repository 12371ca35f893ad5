"""Runtime adapters: detection, capability discovery and the option mapping per runtime."""
