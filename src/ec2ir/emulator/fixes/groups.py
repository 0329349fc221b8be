"""The EC2 fixes about security groups: per ENI, refused on a multi-ENI instance, never wiped by
an unknown ModifyInstanceAttribute form, never unknown."""

from __future__ import annotations

from typing import Any

from ec2ir.emulator.fixes.fix import Fix, Patch


def _eni_group_set(eni: Any) -> list[Any]:
    return list(eni._group_set)


def _instance_groups_get(instance: Any) -> list[Any]:
    nics = getattr(instance, "nics", None)
    if not nics:
        return list(getattr(instance, "_ec2ir_launch_groups", []))
    groups: list[Any] = []
    for index in sorted(nics):
        groups.extend(g for g in nics[index]._group_set if g not in groups)
    return groups


def _instance_groups_set(instance: Any, groups: list[Any]) -> None:
    nics = getattr(instance, "nics", None)
    if nics and 0 in nics:
        nics[0]._group_set = list(groups)
    instance._ec2ir_launch_groups = list(groups)


def _eni_groups() -> tuple[Patch, ...]:
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface
    from moto.ec2.models.instances import Instance

    return (
        Patch(NetworkInterface, "group_set", property(_eni_group_set)),
        Patch(Instance, "security_groups", property(_instance_groups_get, _instance_groups_set)),
    )


ENI_GROUPS = Fix(
    name="eni-groups",
    moto="an ENI's groups are reported as the union of its own and the instance's",
    aws="groups belong to each ENI; the instance's list is derived from its ENIs",
    why="moto reports an ENI's groups as the union of the ENI's own list and the instance's list, "
    "so a swapped ENI still shows its old group. EC2 keeps groups per ENI; the instance-level list "
    "is derived from its ENIs.",
    build=_eni_groups,
)


def _modify_instance_security_groups(backend: Any, instance_id: str, group_ids: list[str]) -> Any:
    from moto.ec2.exceptions import EC2ClientError

    instance = backend.get_instance(instance_id)
    if len(instance.nics) > 1:
        raise EC2ClientError(
            "InvalidInstanceID",
            f"There are multiple interfaces attached to instance '{instance_id}'. "
            "Please specify an interface ID for the operation instead.",
        )
    instance.security_groups = [backend.get_security_group_from_id(g) for g in group_ids]
    return instance


def _multi_eni_modify_instance() -> tuple[Patch, ...]:
    from moto.ec2.models import EC2Backend

    return (Patch(EC2Backend, "modify_instance_security_groups", _modify_instance_security_groups),)


MULTI_ENI_MODIFY_INSTANCE = Fix(
    name="multi-eni-modify-instance",
    moto="`ModifyInstanceAttribute(Groups)` accepted on a multi-ENI instance",
    aws="rejected with `InvalidInstanceID`",
    why="EC2 rejects ``ModifyInstanceAttribute(Groups)`` on an instance with several ENIs; moto accepts it.",
    build=_multi_eni_modify_instance,
)


def _groups_handler(response: Any) -> bool:
    from moto.ec2.exceptions import EC2ClientError

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


def _modify_instance_fallthrough() -> tuple[Patch, ...]:
    from moto.ec2.responses.instances import InstanceResponse

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

    return (
        Patch(InstanceResponse, "_dot_value_instance_attribute_handler", dot_value_handler),
        Patch(InstanceResponse, "_security_grp_instance_attribute_handler", _groups_handler),
    )


MODIFY_INSTANCE_FALLTHROUGH = Fix(
    name="modify-instance-fallthrough",
    moto="unknown `ModifyInstanceAttribute` forms (e.g. `InstanceInitiatedShutdownBehavior`) wipe the groups",
    aws="the shutdown behaviour is applied; other unknown forms are refused",
    why="moto sends any ModifyInstanceAttribute form it does not know "
    "(``InstanceInitiatedShutdownBehavior`` among them) to its security-group handler with an "
    "empty list, silently wiping the instance's groups. The shutdown behaviour is applied "
    "instead, and any other unknown form is refused.",
    build=_modify_instance_fallthrough,
)


def _refuse_unknown_groups(backend: Any, group_ids: list[str] | None) -> None:
    from moto.ec2.exceptions import EC2ClientError

    for group_id in group_ids or []:
        if backend.get_security_group_from_id(group_id) is None:
            raise EC2ClientError("InvalidGroup.NotFound", f"The security group '{group_id}' does not exist")


def _unknown_group() -> tuple[Patch, ...]:
    from moto.ec2.models import EC2Backend

    original_modify_eni = EC2Backend.modify_network_interface_attribute

    def modify_network_interface_attribute(
        backend: Any, eni_id: str, group_ids: list[str], *args: Any, **kw: Any
    ) -> Any:
        _refuse_unknown_groups(backend, group_ids)
        return original_modify_eni(backend, eni_id, group_ids, *args, **kw)

    return (Patch(EC2Backend, "modify_network_interface_attribute", modify_network_interface_attribute),)


UNKNOWN_GROUP = Fix(
    name="unknown-group",
    moto="`ModifyNetworkInterfaceAttribute` with an unknown group id puts `None` on the ENI",
    aws="refused with `InvalidGroup.NotFound`",
    why="moto accepts an unknown group id in ModifyNetworkInterfaceAttribute and puts ``None`` on "
    "the ENI; EC2 refuses with ``InvalidGroup.NotFound``.",
    build=_unknown_group,
)
