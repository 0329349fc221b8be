"""The in-process emulator's saved states and its speed-ups: tools for tests that must give moto's
own answers, exactly."""

from __future__ import annotations

from typing import Any

from ec2ir.emulator.fixes.apply import apply_fidelity_fixes, fidelity, revert_fidelity_fixes
from ec2ir.emulator.fixes.speed import SPEEDUPS
from ec2ir.emulator.inprocess import InProcessEmulator
from tests.support.fleets import Fleet


def group_names(fleet: Fleet) -> set[str]:
    return {group["GroupName"] for group in fleet.ec2.describe_security_groups()["SecurityGroups"]}


def test_a_restored_state_is_exactly_the_saved_one_each_time(
    emulator: InProcessEmulator, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    kept = fleet.group(vpc, "kept")
    instance = fleet.instance(vpc, [kept])
    saved_groups = group_names(fleet)
    saved_enis = fleet.eni_groups([instance])
    saved = emulator.save()

    for _ in range(2):  # one saved state serves many restores: each is a copy of its own
        fleet.group(vpc, "added since")
        fleet.ec2.modify_network_interface_attribute(
            NetworkInterfaceId=next(iter(saved_enis)), Groups=[fleet.group(vpc, "swapped")]
        )
        fleet.aws.client("s3").create_bucket(Bucket="first-used-since")  # a service new since the save

        emulator.restore(saved)

        assert group_names(fleet) == saved_groups
        assert fleet.eni_groups([instance]) == saved_enis
        assert fleet.aws.client("s3").list_buckets()["Buckets"] == []

    # and the restored state is live: it changes as any other does
    fleet.group(vpc, "after the restore")
    assert group_names(fleet) == saved_groups | {"after the restore"}


def test_the_speed_ups_give_moto_s_own_answers() -> None:
    """Each speed-up answers as the moto function it replaces (it reads once what moto read on
    each request), and comes with any choice of fidelity fixes."""
    import moto.backends
    import moto.core.responses
    from moto.ec2.responses import EC2Response
    from moto.s3.responses import S3Response

    responses: Any = moto.core.responses  # moto imports the function there without re-exporting it
    classes = (EC2Response, S3Response)
    with fidelity(False):  # plain moto: no fix and no speed-up
        plain_listing = moto.backends.list_of_moto_modules
        listed = list(plain_listing())
        names = [set(responses.method_names_from_class(c)) for c in classes]
    try:
        revert_fidelity_fixes()
        apply_fidelity_fixes(only=())  # no fidelity fix chosen: the speed-ups still come
        assert moto.backends.list_of_moto_modules is not plain_listing
        for _ in range(2):  # the second answer comes from what the first read
            assert list(moto.backends.list_of_moto_modules()) == listed
            assert [set(responses.method_names_from_class(c)) for c in classes] == names
    finally:
        revert_fidelity_fixes()
        apply_fidelity_fixes()
    assert "ec2" in listed and "describe_instances" in names[0]
    assert {fix.name for fix in SPEEDUPS} == {"moto-modules-once", "method-names-once"}
