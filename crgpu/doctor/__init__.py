"""crgpu doctor: the checks as data, the report, the probe round trip and the busybox bundle it runs; imports crgpu.core and below."""
