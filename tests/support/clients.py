"""Cheaper botocore clients for the whole test session: the same clients, without redoing work.

Tests make hundreds of clients (every ``Aws`` has its own, as in production, where each lane needs
its own rate limiter and connection pool), and building one repeats work whose answer depends
only on botocore's own code:

- botocore builds a new class for every client it makes: about 700 methods for EC2, some 35 ms
  of the 50 ms that one EC2 client costs. The class depends only on the service: every boto3
  session registers the same handlers for ``creating-client-class``.
- Every handler registered (about 130 per session, 30 more per client) is checked for a
  ``**kwargs`` parameter through ``inspect.getfullargspec``: a fact of the function's code.
- Every client builds an endpoint provider from its service's endpoint rules: an object of a few
  thousand parts, about a fifth of a client's cost, made from the same rules each time (the
  process's one loader hands out one copy of them), which only answers questions about them.
- Every client copies its session's event aliaser with an empty cache, so it works out again,
  on its first use of each event, the alias of every event name (splitting and joining strings
  for each of botocore's aliases): a fact of the name and of botocore's fixed alias table.

Each client is still its own object with its own events, so a fault injected into one client
reaches no other.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

import botocore.hooks
import botocore.regions
from botocore.client import ClientCreator
from botocore.utils import EVENT_ALIASES


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


def check_each_handler_once() -> Callable[[], None]:
    """Remember, per function, whether a handler takes ``**kwargs``; returns the undo."""
    hooks: Any = botocore.hooks  # botocore imports the function there, without re-exporting it
    original = hooks.accepts_kwargs

    @functools.cache
    def accepts_kwargs_of_code(code: types.CodeType) -> bool:
        return bool(code.co_flags & inspect.CO_VARKEYWORDS)

    def accepts_kwargs(func: Any) -> bool:
        # A bound method's **kwargs are its function's, and a plain function's are its code's:
        # keyed on the code object, the cache keeps no closure (and nothing it holds) alive.
        underlying = getattr(func, "__func__", func)
        if type(underlying) is types.FunctionType and not hasattr(underlying, "__signature__"):
            return accepts_kwargs_of_code(underlying.__code__)
        return bool(original(func))  # partials, callable objects, signatures of their own: botocore

    hooks.accepts_kwargs = accepts_kwargs

    def undo() -> None:
        hooks.accepts_kwargs = original

    return undo


def share_event_aliases() -> Callable[[], None]:
    """One cache of event-name aliases for every aliaser that uses botocore's own alias table."""
    aliaser_class: Any = botocore.hooks.EventAliaser  # private state of botocore's, so untyped
    original_init = aliaser_class.__init__
    shared: dict[str, str] = {}

    def __init__(aliaser: Any, event_emitter: Any, event_aliases: Any = None) -> None:
        original_init(aliaser, event_emitter, event_aliases)
        # compared once, when the aliaser is made: a copy of the table caches the same answers
        if aliaser._event_aliases == EVENT_ALIASES:
            aliaser._alias_name_cache = shared

    aliaser_class.__init__ = __init__

    def undo() -> None:
        aliaser_class.__init__ = original_init

    return undo


def share_endpoint_providers() -> Callable[[], None]:
    """One endpoint provider per set of endpoint rules; returns the undo."""
    regions: Any = botocore.regions  # botocore imports the class there, without re-exporting it
    original = regions.EndpointProvider
    shared: dict[tuple[int, int, frozenset[str]], tuple[Any, Any, Any]] = {}

    def provider(ruleset_data: Any, partition_data: Any, excluded_params: Any = None) -> Any:
        key = (id(ruleset_data), id(partition_data), frozenset(excluded_params or ()))
        kept = shared.get(key)
        # the rules themselves are kept with the provider, so that their ids stay theirs
        if kept is None or kept[0] is not ruleset_data or kept[1] is not partition_data:
            kept = (ruleset_data, partition_data, original(ruleset_data, partition_data, excluded_params))
            shared[key] = kept
        return kept[2]

    regions.EndpointProvider = provider

    def undo() -> None:
        regions.EndpointProvider = original

    return undo


def cheaper_clients() -> Callable[[], None]:
    """Every saving above at once; returns the function that puts botocore back."""
    undoes = (
        reuse_client_classes(),
        check_each_handler_once(),
        share_event_aliases(),
        share_endpoint_providers(),
    )

    def undo() -> None:
        for each in reversed(undoes):
            each()

    return undo
