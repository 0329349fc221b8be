"""The embedded emulator: moto's server on loopback, corrected where moto differs from EC2.

``Emulator`` serves moto's application with every fidelity fix applied (``ec2ir.emulator.fixes``,
each fix declared with what moto gets wrong and what AWS does; see docs/design.md, "The
emulator"). moto is imported only by ``ec2ir.emulator``, and only by ``ec2ir demo``, ``ec2ir
emulator`` and the tests: it is an optional extra (``pip install 'ec2ir[emulator]'``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ec2ir.core.errors import UsageError
from ec2ir.emulator.fixes.apply import apply_fidelity_fixes, require_moto

DEMO_REGION = "us-east-1"
RESET_TIMEOUT = 300.0  # seconds: local, so only a wedged emulator takes this long


@dataclass
class Emulator:
    """A corrected moto server on loopback, in this process."""

    port: int = 0
    host: str = "127.0.0.1"
    _server: Any = None

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def start(self) -> Emulator:
        require_moto()
        from moto.server import ThreadedMotoServer

        apply_fidelity_fixes()
        # One log line per request would bury the demo's output.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        try:
            self._server.start()
        except OSError as exc:
            raise UsageError(f"cannot serve the emulator on {self.host}:{self.port}: {exc}") from exc
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def reset(self) -> None:
        """Forget every resource, as a fresh emulator would."""
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        # The reset waits behind every request in flight (the emulator applies them one at a time,
        # see "atomic-requests"); on a loaded machine that can take far longer than a call would,
        # and a test that fails for it fails at random.
        with urllib.request.urlopen(request, timeout=RESET_TIMEOUT):
            pass

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def use_emulator_credentials(setdefault: Callable[[str, str], object] = os.environ.setdefault) -> None:
    """The emulator accepts any credentials; make sure boto3 finds some and a region."""
    setdefault("AWS_ACCESS_KEY_ID", "ec2ir-emulator")
    setdefault("AWS_SECRET_ACCESS_KEY", "ec2ir-emulator")
    setdefault("AWS_DEFAULT_REGION", DEMO_REGION)
