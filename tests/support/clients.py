"""One botocore client class per service for the whole test session.

botocore builds a new class for every client it makes: about 700 methods for EC2, some 35 ms of
the 50 ms that one EC2 client costs. Tests make hundreds of clients (every ``Aws`` has its own, as
in production, where each lane needs its own rate limiter and connection pool), so they reuse the
class, which depends only on the service: every boto3 session registers the same handlers for
``creating-client-class``. Each client is still its own object with its own events, so a fault
injected into one client reaches no other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.client import ClientCreator


def reuse_client_classes() -> Callable[[], None]:
    """Build each service's client class once; returns the function that puts botocore back."""
    creator_class: Any = ClientCreator  # a private method of botocore's, so untyped
    original = creator_class._create_client_class
    built: dict[tuple[str, str], Any] = {}

    def create_client_class(creator: ClientCreator, service_name: str, service_model: Any) -> Any:
        key = (service_name, service_model.api_version)
        if key not in built:
            built[key] = original(creator, service_name, service_model)
        return built[key]

    creator_class._create_client_class = create_client_class

    def undo() -> None:
        creator_class._create_client_class = original

    return undo
