"""Figures read from the shim's call log: when the last ENI was isolated, and the least time EC2's
token buckets allow for the calls that were made."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence

from benchmarks.shim import CREATE_TAGS, MODIFY_ENI, MODIFY_INSTANCE, BucketSpec, CallRecord


def first_call(records: Sequence[CallRecord]) -> float | None:
    return min((record.start for record in records), default=None)


def last_success(records: Sequence[CallRecord], actions: Collection[str]) -> float | None:
    """When the last call of ``actions`` that succeeded came back, or None if none did."""
    return max(
        (record.end for record in records if record.action in actions and record.status == 200),
        default=None,
    )


def successes(records: Sequence[CallRecord], actions: Collection[str]) -> int:
    return sum(record.action in actions and record.status == 200 for record in records)


def swapped_eni(record: CallRecord, instance_enis: Mapping[str, tuple[str, ...]]) -> str | None:
    """The ENI whose groups a successful call set: a ModifyNetworkInterfaceAttribute's, or a
    ModifyInstanceAttribute(Groups)'s on an instance with one ENI; None for any other call."""
    if record.status != 200:
        return None
    if record.action == MODIFY_INSTANCE and record.instance_id is not None:
        enis = instance_enis.get(record.instance_id, ())
        return enis[0] if len(enis) == 1 else None
    return record.eni_id if record.action == MODIFY_ENI else None


def isolation_moment(
    records: Sequence[CallRecord], targets: Mapping[str, str], instance_enis: Mapping[str, tuple[str, ...]]
) -> float | None:
    """When the last ENI of ``targets`` (ENI id -> isolation group id) was isolated.

    An ENI counts as isolated when a call that sets its groups to exactly its isolation group has
    come back successfully: the moment the caller knows. That call is a
    ModifyNetworkInterfaceAttribute, or a ModifyInstanceAttribute(Groups) on an instance whose one
    ENI it is (``instance_enis``: instance id -> its ENIs). None if any ENI never got there.
    """
    isolated_at: dict[str, float] = {}
    for record in records:
        eni_id = swapped_eni(record, instance_enis)
        if eni_id is None or eni_id not in targets:
            continue
        if record.group_ids == (targets[eni_id],):
            isolated_at[eni_id] = min(record.end, isolated_at.get(eni_id, record.end))
    if set(isolated_at) != set(targets):
        return None
    return max(isolated_at.values(), default=None)


def swaps_per_bucket(records: Sequence[CallRecord], until: float) -> Counter[str]:
    """The accepted group swaps sent no later than ``until``, by the bucket each drew on."""
    return Counter(
        record.bucket
        for record in records
        if record.bucket is not None
        and not record.throttled
        and record.start <= until
        and (record.action == MODIFY_ENI or (record.action == MODIFY_INSTANCE and record.group_ids))
    )


def accepted_calls_per_bucket(records: Sequence[CallRecord], until: float) -> Counter[str]:
    """EC2 calls that took a token (were not throttled) and were sent no later than ``until``."""
    return Counter(
        record.bucket
        for record in records
        if record.bucket is not None and not record.throttled and record.start <= until
    )


# The calls that cut an instance's credentials: its profile's disassociation, and IMDS turned off.
CREDENTIAL_ACTIONS = ("DisassociateIamInstanceProfile", "ModifyInstanceMetadataOptions")
# Every call a containment step makes to change an instance or its surroundings (the evidence's
# calls are not among them): with the credential calls and the swaps, ``protect``'s
# ModifyInstanceAttribute forms, the Auto Scaling detach, the load balancers' deregistrations,
# revoke-sessions' deny policy and the instance's tags (a CreateTags that names an instance).
CONTAINMENT_ACTIONS = frozenset(
    {
        MODIFY_ENI,
        MODIFY_INSTANCE,
        *CREDENTIAL_ACTIONS,
        "DetachInstances",
        "DeregisterTargets",
        "DeregisterInstancesFromLoadBalancer",
        "PutRolePolicy",
        CREATE_TAGS,
    }
)


def is_containment(record: CallRecord) -> bool:
    if record.action == CREATE_TAGS:
        return record.instance_id is not None  # a snapshot's or a group's tags are not containment
    return record.action in CONTAINMENT_ACTIONS


def credential_cut_moment(records: Sequence[CallRecord], expected: Mapping[str, int]) -> float | None:
    """When the last credential call came back, once ``expected`` (action -> how many instances
    need it) have all succeeded; None if one never did."""
    if any(successes(records, (action,)) < count for action, count in expected.items()):
        return None
    return last_success(records, [action for action, count in expected.items() if count])


def containment_moment(records: Sequence[CallRecord]) -> float | None:
    """When the last containment call that succeeded came back: every step done, evidence aside."""
    return max((r.end for r in records if r.status == 200 and is_containment(r)), default=None)


def calls_per_bucket_of(records: Sequence[CallRecord], wanted: Callable[[CallRecord], bool]) -> Counter[str]:
    """The accepted EC2 calls that ``wanted`` picks, by the bucket each drew on."""
    return Counter(
        record.bucket
        for record in records
        if record.bucket is not None and not record.throttled and wanted(record)
    )


def is_swap(record: CallRecord) -> bool:
    """A group swap: a ModifyNetworkInterfaceAttribute, or a ModifyInstanceAttribute(Groups)."""
    return record.action == MODIFY_ENI or (record.action == MODIFY_INSTANCE and bool(record.group_ids))


def needed_calls_per_bucket(
    records: Sequence[CallRecord], isolated: float | None, actions: Collection[str], until: float
) -> Counter[str]:
    """The accepted EC2 calls that a moment after the cut needs, by bucket: every group swap sent
    no later than ``isolated`` (ec2ir cuts every instance off before anything else starts, so
    these come first) and every call of ``actions`` sent no later than ``until``."""
    return calls_per_bucket_of(
        records,
        lambda r: (
            (r.action in actions and r.start <= until)
            or (isolated is not None and r.start <= isolated and is_swap(r))
        ),
    )


def token_bucket_lower_bound(
    calls_per_bucket: Mapping[str, int],
    buckets: Mapping[str, BucketSpec],
    speedup: float,
    round_trip_s: float,
) -> float:
    """The least time in which EC2 admits these calls, starting with every bucket full.

    Each bucket admits its size at once and then ``refill x speedup`` calls a second, so it needs
    ``max(0, calls - size) / (refill x speedup)`` seconds; the slowest bucket sets the bound. At
    least one round trip is added, since even a single call takes one.
    """
    drain_s = 0.0
    for bucket, calls in calls_per_bucket.items():
        spec = buckets.get(bucket)
        if spec is None or spec.refill_per_s <= 0:
            continue
        drain_s = max(drain_s, max(0, calls - spec.size) / (spec.refill_per_s * speedup))
    return drain_s + round_trip_s


def sequential_chain(records: Sequence[CallRecord], until: float) -> list[CallRecord]:
    """The longest chain of calls, each sent after the one before it came back, that ends with
    a call answered at ``until``: how many round trips the caller waited for one after another.

    Each call in the chain takes at least one round trip and none overlap, so the chain's length
    is the least number of round trips in which this sequence of calls could have been made;
    the measured time over it is the emulator's and the client's CPU time. Quadratic: meant for
    small runs (N = 1)."""
    calls = sorted((record for record in records if record.end <= until), key=lambda r: r.end)
    longest: list[list[CallRecord]] = []
    for index, call in enumerate(calls):
        before = [longest[j] for j in range(index) if calls[j].end <= call.start]
        longest.append([*max(before, key=len, default=[]), call])
    ending = [chain for chain in longest if chain[-1].end == until]
    return max(ending, key=len, default=[])


def allow_all_windows(
    records: Sequence[CallRecord], allow_all: Collection[str], instance_enis: Mapping[str, tuple[str, ...]]
) -> tuple[list[float], int]:
    """How long each ENI spent in an allow-all group, and how many were still there at the end.

    A window runs from the moment the request that moved the ENI in reached EC2 to the moment the
    answer to the request that moved it out came back: an upper bound, as each change takes
    effect somewhere inside its own round trip."""
    swaps: list[tuple[float, float, str, tuple[str, ...]]] = []
    for record in records:
        eni_id = swapped_eni(record, instance_enis)
        if eni_id is not None and record.group_ids:
            swaps.append((record.start, record.end, eni_id, record.group_ids))
    entered: dict[str, float] = {}
    windows: list[float] = []
    for start, end, eni_id, groups in sorted(swaps):
        if set(groups) & set(allow_all):
            entered.setdefault(eni_id, start)
        elif eni_id in entered:
            windows.append(end - entered.pop(eni_id))
    return windows, len(entered)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]
