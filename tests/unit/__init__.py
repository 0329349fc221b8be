"""Unit tests: no emulator, no AWS; pure functions and the package's shape."""
