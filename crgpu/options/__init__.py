"""The validated checkpoint and restore options, the one option table behind parser, docs and routes, the ID and path rules and runsc's flag allow-list; imports only crgpu.host."""
