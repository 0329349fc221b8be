"""The two ways to move a single-ENI instance into a security group, and the choice between them.

EC2 meters ``ModifyNetworkInterfaceAttribute`` with a token bucket of its own (100, then 5 a
second), while ``ModifyInstanceAttribute(Groups)`` draws on the shared mutating bucket (50, then 5
a second). On a single-ENI instance both set the same groups, so sending each swap down whichever
lane is less busy nearly doubles the swap rate of a large run, which is what sets the time to
contain a fleet (../shared/DESIGN.md). A multi-ENI instance always goes per ENI: EC2 rejects
``ModifyInstanceAttribute(Groups)`` there.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ec2ir.aws import Aws, patiently, translated
from ec2ir.errors import Ec2irError, PermissionDenied

ENI_LANE, INSTANCE_LANE = "network-interface", "instance"


def set_eni_groups(aws: Aws, eni_id: str, group_ids: Sequence[str]) -> None:
    def modify() -> None:
        with translated("ec2", "ModifyNetworkInterfaceAttribute"):
            aws.ec2().modify_network_interface_attribute(NetworkInterfaceId=eni_id, Groups=list(group_ids))

    patiently(modify)


def set_instance_groups(aws: Aws, instance_id: str, group_ids: Sequence[str]) -> None:
    """Set a single-ENI instance's groups: EC2 applies them to its one ENI."""

    def modify() -> None:
        with translated("ec2", "ModifyInstanceAttribute"):
            aws.ec2().modify_instance_attribute(InstanceId=instance_id, Groups=list(group_ids))

    patiently(modify)


class SwapLanes:
    """Sends each ENI swap of one run down the less busy lane.

    A lane's busy count is its calls in flight. botocore's adaptive rate limiter is per client,
    so the instance lane has a client of its own: when the mutating bucket runs dry, that lane's
    calls wait and pile up, and new swaps go to the other lane until it catches up. Ties go to
    the ENI lane, so a run of one instance never builds the second lane's clients."""

    def __init__(self, aws: Aws, instance_aws: Aws) -> None:
        self._aws = aws
        self._instance_aws = instance_aws  # clients of its own (a sibling of ``aws``)
        self._busy = {ENI_LANE: 0, INSTANCE_LANE: 0}
        self._instance_lane_open = True
        self._lock = threading.Lock()
        self.chosen = {ENI_LANE: 0, INSTANCE_LANE: 0}

    def swap(self, instance_id: str, eni_id: str, group_ids: Sequence[str], single_eni: bool) -> None:
        lane = self._enter(single_eni)
        try:
            if lane == INSTANCE_LANE:
                try:
                    set_instance_groups(self._instance_aws, instance_id, group_ids)
                    return
                except Ec2irError as error:
                    # A second ENI attached since discovery, or no right to this call: the ENI
                    # lane can still make the change, so the cut never depends on this lane.
                    if isinstance(error, PermissionDenied):
                        self._instance_lane_open = False
            set_eni_groups(self._aws, eni_id, group_ids)
        finally:
            with self._lock:
                self._busy[lane] -= 1

    def _enter(self, single_eni: bool) -> str:
        with self._lock:
            busy = self._busy
            spare = single_eni and self._instance_lane_open and busy[INSTANCE_LANE] < busy[ENI_LANE]
            lane = INSTANCE_LANE if spare else ENI_LANE
            busy[lane] += 1
            self.chosen[lane] += 1
            return lane
