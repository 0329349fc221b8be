"""The two ways to move a single-ENI instance into a security group, and the choice between them.

EC2 meters ``ModifyNetworkInterfaceAttribute`` with a token bucket of its own (100, then 5 a
second), while ``ModifyInstanceAttribute(Groups)`` draws on the shared mutating bucket (50, then 5
a second). On a single-ENI instance both set the same groups, so sending each swap down whichever
lane is less busy nearly doubles the swap rate of a large run, which is what sets the time to
contain a fleet (docs/design.md). A multi-ENI instance always goes per ENI: EC2 rejects
``ModifyInstanceAttribute(Groups)`` there.

While an ENI sits in the allow-all group (all traffic, both ways) it is more open than before
ec2ir touched it, so its next swap is the most urgent call of the run (``SwapLanes.untrack``):
it is retried at once on whichever lane can take it, new allow-all swaps wait while it is being
throttled, and it has a deadline. Past the deadline, or on an error that retrying will not fix,
the ENI goes back to the groups it had before the run, and the failure is raised.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ec2ir.aws.session import Aws, patiently, translated
from ec2ir.core.errors import AllowAllWindowExceeded, AwsError, Ec2irError, PermissionDenied, Throttled

ENI_LANE, INSTANCE_LANE = "network-interface", "instance"
DEFAULT_UNTRACK_DEADLINE = 5.0  # seconds an ENI may spend in the allow-all group
# Errors after which the same call may succeed a moment later: throttling and EC2's own trouble.
RETRYABLE_CODES = frozenset({"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable"})
URGENT_PAUSE = (0.02, 0.1)  # seconds between urgent attempts: a token arrives every 0.1 s or so


def retryable(error: Ec2irError) -> bool:
    return isinstance(error, Throttled) or (isinstance(error, AwsError) and error.code in RETRYABLE_CODES)


def retryable_or_unknown(error: Ec2irError) -> bool:
    """Whether EC2 may have applied a call that failed: a 5xx, or an answer that never came
    (botocore's own errors, translated with their class name as the code)."""
    return retryable(error) or not isinstance(error, AwsError) or error.code.endswith(("Error", "Timeout"))


@dataclass
class UntrackTimes:
    """How long each ENI spent in the allow-all group in this run, by the run's own clock."""

    windows: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float) -> None:
        with self.lock:
            self.windows.append(seconds)


def set_eni_groups(aws: Aws, eni_id: str, group_ids: Sequence[str], patient: bool = True) -> None:
    def modify() -> None:
        with translated("ec2", "ModifyNetworkInterfaceAttribute"):
            aws.ec2().modify_network_interface_attribute(NetworkInterfaceId=eni_id, Groups=list(group_ids))

    patiently(modify, sleep=aws.sleep) if patient else modify()


def set_instance_groups(aws: Aws, instance_id: str, group_ids: Sequence[str], patient: bool = True) -> None:
    """Set a single-ENI instance's groups: EC2 applies them to its one ENI."""

    def modify() -> None:
        with translated("ec2", "ModifyInstanceAttribute"):
            aws.ec2().modify_instance_attribute(InstanceId=instance_id, Groups=list(group_ids))

    patiently(modify, sleep=aws.sleep) if patient else modify()


class SwapLanes:
    """Sends each ENI swap of one run down the less busy lane.

    A lane's busy count is its calls in flight. botocore's adaptive rate limiter is per client,
    so the instance lane has a client of its own: when the mutating bucket runs dry, that lane's
    calls wait and pile up, and new swaps go to the other lane until it catches up. Ties go to
    the ENI lane, so a run of one instance never builds the second lane's clients."""

    def __init__(
        self,
        aws: Aws,
        instance_aws: Aws,
        urgent_aws: Aws | None = None,
        deadline: float = DEFAULT_UNTRACK_DEADLINE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._aws = aws
        self._instance_aws = instance_aws  # clients of its own (a sibling of ``aws``)
        # Clients without botocore's own retries, so that an urgent call is never held inside
        # botocore's backoff past the deadline: its retries are ``_urgently``'s, with short pauses.
        self._urgent_aws = urgent_aws or aws
        self._busy = {ENI_LANE: 0, INSTANCE_LANE: 0}
        self._instance_lane_open = True
        self._lock = threading.Lock()
        self.chosen = {ENI_LANE: 0, INSTANCE_LANE: 0}
        self.deadline = deadline
        self._clock = clock
        self._sleep = sleep
        # urgent swaps being throttled right now: new allow-all swaps wait until there are none
        self._pressed = 0
        self._calm = threading.Condition(self._lock)
        self.times = UntrackTimes()

    def untrack(
        self,
        instance_id: str,
        eni_id: str,
        allow_all: str,
        isolation: Sequence[str],
        before: Sequence[str],
        single_eni: bool,
    ) -> None:
        """Swap the ENI into the allow-all group, so that EC2 stops tracking its flows, then at
        once into ``isolation``, which drops them. It never stays in allow-all: if the second swap
        cannot be made within the deadline, the ENI goes back to ``before``, its groups before this
        run, and AllowAllWindowExceeded (or the error that cannot be retried) is raised."""
        with self._calm:
            while self._pressed:  # an ENI already in allow-all goes ahead of any new one
                self._calm.wait()
        try:
            self.swap(instance_id, eni_id, (allow_all,), single_eni)
        except Ec2irError as error:
            if isinstance(error, Throttled | PermissionDenied) or not retryable_or_unknown(error):
                raise  # EC2 said no: the ENI never moved
            # A 5xx or a lost answer: the swap may have been applied all the same, so the ENI
            # goes back to where it was (a no-op if it never moved) before the error is reported.
            self._urgently(instance_id, eni_id, before, single_eni, self._clock() + self.deadline)
            raise
        self.isolate_from_allow_all(instance_id, eni_id, isolation, before, single_eni)

    def isolate_from_allow_all(
        self,
        instance_id: str,
        eni_id: str,
        isolation: Sequence[str],
        before: Sequence[str],
        single_eni: bool,
    ) -> None:
        """The swap out of allow-all, for an ENI this run put there or found there (a crashed
        run's); on failure, back to ``before`` at once."""
        entered = self._clock()
        try:
            self._urgently(instance_id, eni_id, isolation, single_eni, entered + self.deadline)
        except Ec2irError as error:
            try:
                self._urgently(instance_id, eni_id, before, single_eni, self._clock() + self.deadline)
            except Ec2irError as undo_error:
                raise AllowAllWindowExceeded(
                    f"{eni_id} is STILL in the allow-all group: the swap into isolation failed "
                    f"({error}) and so did the swap back to {list(before)} ({undo_error})",
                    "run `ec2ir status --check --repair` at once",
                ) from undo_error
            if isinstance(error, AllowAllWindowExceeded):
                raise AllowAllWindowExceeded(
                    f"{eni_id} could not be isolated within {self.deadline:g} s of entering the "
                    f"allow-all group, so it went back to {list(before)}",
                    "run isolate again; raise --untrack-deadline if EC2 is this slow for you",
                ) from error
            raise AllowAllWindowExceeded(
                f"{eni_id} went back to {list(before)} after the swap into isolation failed: {error}"
            ) from error
        finally:
            self.times.add(self._clock() - entered)

    def _urgently(
        self, instance_id: str, eni_id: str, group_ids: Sequence[str], single_eni: bool, until: float
    ) -> None:
        """One swap, retried at once (alternating lanes for a single-ENI instance) until ``until``."""
        lanes = [INSTANCE_LANE, ENI_LANE] if single_eni and self._instance_lane_open else [ENI_LANE]
        attempt = 0
        pressed = False
        try:
            while True:
                lane = lanes[attempt % len(lanes)]
                try:
                    if lane == INSTANCE_LANE:
                        set_instance_groups(self._urgent_aws, instance_id, group_ids, patient=False)
                    else:
                        set_eni_groups(self._urgent_aws, eni_id, group_ids, patient=False)
                    return
                except Ec2irError as error:
                    if lane == INSTANCE_LANE and not retryable(error):
                        lanes = [ENI_LANE]  # the ENI lane can make the same change
                        continue
                    if not retryable(error):
                        raise
                    if not pressed:
                        pressed = True
                        with self._lock:
                            self._pressed += 1
                attempt += 1
                pause = random.uniform(*URGENT_PAUSE)
                if self._clock() + pause >= until:
                    raise AllowAllWindowExceeded(f"{eni_id}: no swap within the deadline")
                self._sleep(pause)
        finally:
            if pressed:
                with self._calm:
                    self._pressed -= 1
                    self._calm.notify_all()

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
