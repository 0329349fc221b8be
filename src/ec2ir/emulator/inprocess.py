"""The corrected emulator without its socket: for tests, where the wire itself is not under test.

``Emulator`` serves moto's WSGI application on loopback, and each call then pays for HTTP twice
(urllib3 sends it, werkzeug's server parses it) and for a thread hand-off. ``InProcessEmulator``
hands botocore's prepared request straight to the same WSGI application, in the calling thread:
the same routing, the same fidelity fixes (``atomic-requests`` wraps that application's
``__call__``, so concurrent callers are still applied one at a time) and the same state, since
every moto backend is global to the process. A served ``Emulator`` started beside it therefore
sees the same resources.

Only requests to ``endpoint_url`` are taken; any other goes out as usual. The address is on
loopback (the CLI accepts only loopback emulators for seeding) at a port nothing listens on, so a
client built without the hook fails at once rather than reaching something else.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ec2ir.emulator.fixes.apply import apply_fidelity_fixes, require_moto

IN_PROCESS_ENDPOINT = "http://127.0.0.1:1"
_install_lock = threading.Lock()
_installed: list[InProcessEmulator] = []
_sent_on_the_wire: list[Any] = []  # botocore's own HTTP send, once replaced


class InProcessEmulator:
    """Corrected moto behind ``endpoint_url``, answered in this process (see the module's doc)."""

    endpoint_url = IN_PROCESS_ENDPOINT

    def __init__(self) -> None:
        self._app: Any = None

    def start(self) -> InProcessEmulator:
        require_moto()
        from botocore.httpsession import URLLib3Session
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        apply_fidelity_fixes()
        self._app = DomainDispatcherApplication(create_backend_app)
        with _install_lock:
            if not _sent_on_the_wire:
                # The wire itself is replaced, below everything botocore does (its retries, and
                # every ``before-send`` handler: botocore runs them all, so an injected fault's
                # answer there does not stop a handler from also applying the request), for
                # every client, made before or after (the CLI's own among them).
                _sent_on_the_wire.append(URLLib3Session.send)
                URLLib3Session.send = _send  # type: ignore[method-assign, assignment]
            _installed.insert(0, self)
        return self

    def stop(self) -> None:
        with _install_lock:
            if self in _installed:
                _installed.remove(self)

    def reset(self) -> None:
        """Forget every resource, as a fresh emulator would (and as the served one's reset does)."""
        status, _, body = self.dispatch("POST", f"{self.endpoint_url}/moto-api/reset", {}, b"")
        if status != 200:
            raise RuntimeError(f"the emulator's reset failed ({status}): {body[:200]!r}")

    def save(self) -> SavedState:
        """Every resource as it is now, to come back to with ``restore``: for a test that repeats
        one scene many times, rebuilding it through the API each time costs far more."""
        with _backend_lock():
            in_use = list(_registries_in_use())
            # The services' registries stay themselves; only what they hold is copied.
            return SavedState(copy.deepcopy(tuple((bd, dict(bd)) for bd in in_use), _keeping(in_use)))

    def restore(self, saved: SavedState) -> None:
        """Every resource exactly as ``save`` found it (a copy, so one saved state serves many
        restores); a service first used since then is emptied, as a reset would."""
        with _backend_lock():
            in_use = list(_registries_in_use())
            registries = [bd for bd, _ in saved.services]
            fresh = copy.deepcopy(saved.services, _keeping([*in_use, *registries]))
            for registry in in_use:
                if registry not in registries:
                    for account in registry.values():
                        account.reset()
                    dict.clear(registry)
            for registry, accounts in fresh:
                dict.clear(registry)
                dict.update(registry, accounts)
            _registries_in_use()[:] = registries

    def dispatch(
        self, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One HTTP exchange with moto's application, as its server would have made it."""
        from werkzeug.test import EnvironBuilder

        parts = urlsplit(url)
        environ = EnvironBuilder(
            method=method,
            base_url=f"{parts.scheme}://{parts.netloc}",
            path=parts.path or "/",
            query_string=parts.query,
            headers=list(headers.items()),
            data=body,
        ).get_environ()
        _preserve_header_spelling(environ, headers)
        answered: dict[str, Any] = {}

        def start_response(
            status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
        ) -> None:
            answered["status"] = int(status.split(" ", 1)[0])
            answered["headers"] = response_headers

        content = b"".join(self._app(environ, start_response))
        return answered["status"], answered["headers"], content

    def __enter__(self) -> InProcessEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class SavedState:
    """Each service registry in use (moto's ``BackendDict``) with a private copy of its accounts."""

    services: tuple[tuple[Any, dict[str, Any]], ...]


def _backend_lock() -> Any:
    from moto.core.base_backend import backend_lock

    return backend_lock


def _registries_in_use() -> list[Any]:
    """moto's own list of the service registries in use (what its reset empties)."""
    from moto.core.base_backend import BackendDict

    registry_class: Any = BackendDict
    registries: list[Any] = registry_class._instances
    return registries


def _keeping(registries: list[Any]) -> dict[int, Any]:
    """A deepcopy memo that leaves these objects as they are: moto's modules reach every service
    through its registry, so a copy must point at the registry itself, never at a copy of it."""
    return {id(registry): registry for registry in registries}


def _preserve_header_spelling(environ: dict[str, Any], headers: dict[str, str]) -> None:
    """What moto's request handler adds for its server: S3 metadata names keep their underscores."""
    from moto.core.request import (
        PRESERVED_HEADER_NAMES_ENVIRON_KEY,
        environ_key_for_header,
        should_preserve_original_header_name,
    )

    names: dict[str, str] = {}
    for name in headers:
        if should_preserve_original_header_name(name):
            names.setdefault(environ_key_for_header(name), name)
    environ[PRESERVED_HEADER_NAMES_ENVIRON_KEY] = names


def _send(http_session: Any, request: Any) -> Any:
    """botocore's HTTP send: a request for the in-process emulator is answered here, any other
    goes out on the wire."""
    with _install_lock:
        emulator = _installed[0] if _installed else None
    ours = request.url == IN_PROCESS_ENDPOINT or request.url.startswith(IN_PROCESS_ENDPOINT + "/")
    if emulator is None or not ours:
        return _sent_on_the_wire[0](http_session, request)
    from botocore.awsrequest import AWSResponse
    from botocore.compat import HTTPHeaders
    from moto.core.botocore_stubber import MockRawResponse

    headers = {
        name: value.decode() if isinstance(value, bytes) else str(value)
        for name, value in request.headers.items()
    }
    status, response_headers, content = emulator.dispatch(
        request.method, request.url, headers, _body(request.body)
    )
    answer_headers = HTTPHeaders()
    for name, value in response_headers:
        answer_headers[name] = value
    return AWSResponse(request.url, status, answer_headers, MockRawResponse(content))


def _body(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    if hasattr(body, "read"):  # a stream: S3 uploads, aws-chunked checksums
        data = body.read()
        return data.encode() if isinstance(data, str) else bytes(data)
    return b"".join(chunk.encode() if isinstance(chunk, str) else chunk for chunk in body)
