"""The embedded emulator: moto's server on loopback, corrected where moto differs from EC2.

Tests that pass on plain moto prove nothing where moto is wrong, so every gap that ec2ir relies on
is corrected here, in one reversible patch set (see DESIGN.md, "moto ... what differs from EC2"):

* ``eni-groups``: moto reports an ENI's groups as the union of the ENI's own list and the
  instance's list, so a swapped ENI still shows its old group. EC2 keeps groups per ENI; the
  instance-level list is derived from its ENIs.
* ``multi-eni-modify-instance``: EC2 rejects ``ModifyInstanceAttribute(Groups)`` on an instance
  with several ENIs; moto accepts it.
* ``modify-instance-fallthrough``: moto sends any ModifyInstanceAttribute form it does not know
  (``InstanceInitiatedShutdownBehavior`` among them) to its security-group handler with an empty
  list, silently wiping the instance's groups. The shutdown behaviour is applied instead, and any
  other unknown form is refused.
* ``unknown-group``: moto accepts an unknown group id in ModifyNetworkInterfaceAttribute and puts
  ``None`` on the ENI; EC2 refuses with ``InvalidGroup.NotFound``.
* ``simulate-principal-policy``: moto has no IAM policy simulator (it answers HTTP 500). moto
  authorises every call, so the corrected emulator answers "allowed" for every action, which is
  exactly what its callers will then experience.
* ``atomic-requests``: moto's threaded server runs requests side by side with no atomicity, so
  two racing requests can both pass a check that AWS applies atomically (a DynamoDB condition,
  a security-group name that must be unique in its VPC). Requests are applied one at a time.
* ``describe-pagination``: with ``InstanceIds``, EC2 returns every named instance in one response;
  moto truncates at 100 reservations and hands back a ``NextToken``.

moto is imported only here, and only by ``ec2ir demo`` and ``ec2ir emulator``: it is an optional
extra (``pip install 'ec2ir[emulator]'``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ec2ir.errors import UsageError

DEMO_REGION = "us-east-1"
_lock = threading.Lock()
_applied: list[tuple[object, str, Any]] = []
_ABSENT = object()
_request_lock = threading.Lock()  # the attribute was an instance attribute, not on the class


def _require_moto() -> None:
    try:
        import moto  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            "the embedded emulator needs moto, which is not installed",
            "pip install 'ec2ir[emulator]'",
        ) from exc


def _patches() -> list[tuple[str, object, str, Any]]:
    """Every correction as (name, owner, attribute, replacement)."""
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import EC2Backend
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface
    from moto.ec2.models.instances import Instance
    from moto.ec2.responses.instances import InstanceResponse
    from moto.iam.responses import IamResponse
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    def eni_group_set(eni: Any) -> list[Any]:
        return list(eni._group_set)

    def instance_groups_get(instance: Any) -> list[Any]:
        nics = getattr(instance, "nics", None)
        if not nics:
            return list(getattr(instance, "_ec2ir_launch_groups", []))
        groups: list[Any] = []
        for index in sorted(nics):
            groups.extend(g for g in nics[index]._group_set if g not in groups)
        return groups

    def instance_groups_set(instance: Any, groups: list[Any]) -> None:
        nics = getattr(instance, "nics", None)
        if nics and 0 in nics:
            nics[0]._group_set = list(groups)
        instance._ec2ir_launch_groups = list(groups)

    def modify_instance_security_groups(backend: Any, instance_id: str, group_ids: list[str]) -> Any:
        instance = backend.get_instance(instance_id)
        if len(instance.nics) > 1:
            raise EC2ClientError(
                "InvalidInstanceID",
                f"There are multiple interfaces attached to instance '{instance_id}'. "
                "Please specify an interface ID for the operation instead.",
            )
        instance.security_groups = [backend.get_security_group_from_id(g) for g in group_ids]
        return instance

    def simulate_principal_policy(response: Any) -> Any:
        actions = response._get_param("ActionNames", [])
        return ActionResult(
            {
                "EvaluationResults": [
                    {"EvalActionName": action, "EvalResourceName": "*", "EvalDecision": "allowed"}
                    for action in actions
                ],
                "IsTruncated": False,
            }
        )

    original_dispatch = DomainDispatcherApplication.__call__

    def atomic_dispatch(app: Any, environ: dict[str, Any], start_response: Any) -> Any:
        with _request_lock:
            # Flask builds the whole response inside the call, so the lock covers the change.
            return list(original_dispatch(app, environ, start_response))

    original_modify_eni = EC2Backend.modify_network_interface_attribute

    def modify_network_interface_attribute(
        backend: Any, eni_id: str, group_ids: list[str], *args: Any, **kw: Any
    ) -> Any:
        for group_id in group_ids or []:
            if backend.get_security_group_from_id(group_id) is None:
                raise EC2ClientError(
                    "InvalidGroup.NotFound", f"The security group '{group_id}' does not exist"
                )
        return original_modify_eni(backend, eni_id, group_ids, *args, **kw)

    original_dot_handler = InstanceResponse._dot_value_instance_attribute_handler

    def dot_value_handler(response: Any) -> bool:
        value = response._get_param("InstanceInitiatedShutdownBehavior.Value")
        if value is None:
            return bool(original_dot_handler(response))
        response.error_on_dryrun()
        response.ec2_backend.modify_instance_attribute(
            response._get_param("InstanceId"), "instance_initiated_shutdown_behavior", value
        )
        return True

    def groups_handler(response: Any) -> bool:
        if not response._get_param("Groups", []):
            raise EC2ClientError(
                "InvalidParameterCombination",
                "ec2ir emulator: this ModifyInstanceAttribute form is not emulated",
            )
        response.error_on_dryrun()
        response.ec2_backend.modify_instance_security_groups(
            response._get_param("InstanceId"), response._get_param("Groups", [])
        )
        return True

    original_describe = InstanceResponse.describe_instances

    def describe_instances(response: Any) -> Any:
        instance_ids = response._get_param("InstanceIds", [])
        if not instance_ids or response._get_param("MaxResults") is not None:
            return original_describe(response)
        response.error_on_dryrun()
        # EC2 answers a request that names instances with all of them in one page.
        reservations = response.ec2_backend.get_reservations_by_instance_ids(
            instance_ids, filters=response._filters_from_querystring()
        )
        return ActionResult({"Reservations": reservations, "NextToken": None})

    return [
        ("simulate-principal-policy", IamResponse, "simulate_principal_policy", simulate_principal_policy),
        ("atomic-requests", DomainDispatcherApplication, "__call__", atomic_dispatch),
        ("eni-groups", NetworkInterface, "group_set", property(eni_group_set)),
        (
            "unknown-group",
            EC2Backend,
            "modify_network_interface_attribute",
            modify_network_interface_attribute,
        ),
        (
            "eni-groups",
            Instance,
            "security_groups",
            property(instance_groups_get, instance_groups_set),
        ),
        (
            "multi-eni-modify-instance",
            EC2Backend,
            "modify_instance_security_groups",
            modify_instance_security_groups,
        ),
        (
            "modify-instance-fallthrough",
            InstanceResponse,
            "_dot_value_instance_attribute_handler",
            dot_value_handler,
        ),
        (
            "modify-instance-fallthrough",
            InstanceResponse,
            "_security_grp_instance_attribute_handler",
            groups_handler,
        ),
        ("describe-pagination", InstanceResponse, "describe_instances", describe_instances),
    ]


FIXES = (
    "eni-groups",
    "multi-eni-modify-instance",
    "modify-instance-fallthrough",
    "describe-pagination",
    "unknown-group",
    "simulate-principal-policy",
    "atomic-requests",
)


def apply_fidelity_fixes(only: tuple[str, ...] = FIXES) -> None:
    """Correct moto in this process (idempotent). ``only`` picks fixes, for the fidelity tests."""
    _require_moto()
    with _lock:
        if _applied:
            return
        for name, owner, attribute, replacement in _patches():
            if name in only:
                _applied.append((owner, attribute, vars(owner).get(attribute, _ABSENT)))
                setattr(owner, attribute, replacement)


def revert_fidelity_fixes() -> None:
    with _lock:
        while _applied:
            owner, attribute, original = _applied.pop()
            if original is _ABSENT:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)


@contextmanager
def fidelity(enabled: bool = True) -> Iterator[None]:
    """Plain moto (``enabled=False``) or corrected moto for the block; the prior state returns after."""
    was_applied = bool(_applied)
    revert_fidelity_fixes()
    if enabled:
        apply_fidelity_fixes()
    try:
        yield
    finally:
        revert_fidelity_fixes()
        if was_applied:
            apply_fidelity_fixes()


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
        _require_moto()
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
        with urllib.request.urlopen(request, timeout=10):
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
