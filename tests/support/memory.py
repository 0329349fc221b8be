"""Shared test helpers (moved from tests/integration/test_memory.py)."""

from __future__ import annotations

CASE = "IR-MEM"
ACCOUNT = "123456789012"  # moto's
FAKE_AVML = """#!/bin/sh
case "$1" in
  --version) echo "avml 0.20.0" ;;
  acquire) shift; while [ $# -gt 1 ]; do shift; done; printf 'not really memory\\n' > "$1" ;;
  *) exit 2 ;;
esac
"""
