"""Integration tests: the engine, the CLI in process and the handlers, against the corrected emulator
in process."""
