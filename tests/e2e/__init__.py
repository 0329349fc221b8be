"""End-to-end tests: subprocesses, the emulator served over HTTP, a real browser."""
