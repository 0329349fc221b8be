"""Outbreak scale (issue 17): one case over R Regions x N instances each, every Region with its own
EC2 token buckets, as AWS meters them (per account and Region).

Run from the repository root:

    .venv/bin/python -m benchmarks.outbreak          # 4 Regions x 250, 3 repeats: outbreak-results.md
    .venv/bin/python -m benchmarks.outbreak --quick  # 2 Regions x 10, one repeat; prints only

Three contenders, each isolating its fleet with ``Options(evidence=False)`` under the same latency
and per-Region buckets (benchmarks/shim.py), interleaved in every repeat:

- **single Region**: ec2ir isolating N instances in one Region alone: the bound an outbreak is
  judged against, since a place's buckets are its own whatever the other places do;
- **outbreak**: ``Outbreak`` isolating the R x N instances in one command (bare ids for the home
  Region, ARNs for the others), one engine per Region, side by side;
- **baseline, Region by Region**: the post's sequential loop (benchmarks/run.py) over each
  Region's fleet in turn.

Each isolation time is read from the shim's log as benchmarks/run.py reads it: from the first
call of the run to the moment the last ENI's swap into its isolation group came back. A fourth
measurement takes the buckets and the latency away: how many AWS calls one ec2ir process gets
served a second on this machine, which sets the outbreak size at which one machine, not EC2,
becomes the bottleneck (the arithmetic is in the report and in docs/scale.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.figures import first_call, isolation_moment, swaps_per_bucket, token_bucket_lower_bound
from benchmarks.run import (
    AMI,
    CASE,
    OFFICE_CIDR,
    REPO_ROOT,
    WARM_UP_CASE,
    Fleet,
    Outcome,
    Prepared,
    instance_profile,
    instances_not_isolated,
    machine,
    prepare_baseline,
    seed_place,
    served_shim,
)
from benchmarks.shim import EC2_BUCKETS, MODIFY_ENI, MUTATING, CallRecord, RemoteShim
from ec2ir.aws.session import Aws, AwsSettings
from ec2ir.containment.steps import Options
from ec2ir.core.models import Place
from ec2ir.engine.facade import Engine
from ec2ir.engine.outbreak import Outbreak
from ec2ir.engine.places import Places
from ec2ir.engine.runtime import DEFAULT_CONCURRENCY
from ec2ir.store.state import StateStore

# The home Region first: the state table lives there, and its instances are named by bare id.
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2", "us-west-2", "eu-central-1", "ap-northeast-1")
DEFAULT_PLACES, DEFAULT_PER_PLACE = 4, 250
QUICK_PLACES, QUICK_PER_PLACE = 2, 10
DEFAULT_CEILING_PER_PLACE = 100
OPTIONS = Options(evidence=False)
TARGET_RATIO = 1.25  # issue 17: the outbreak within 1.25x of one Region alone
SINGLE, OUTBREAK, BASELINE = (
    "ec2ir, one Region alone",
    "ec2ir Outbreak, one command",
    "baseline, Region by Region",
)
# Sustained per place while the buckets bind (docs/design.md, benchmarks/shim.py): the two swap
# buckets refill 5 + 5 a second after a burst of 100 + 50; the shared mutating bucket 5 a second.
SWAP_REFILL_PER_S = EC2_BUCKETS[MODIFY_ENI].refill_per_s + EC2_BUCKETS[MUTATING].refill_per_s
SWAP_BURST = EC2_BUCKETS[MODIFY_ENI].size + EC2_BUCKETS[MUTATING].size


# -- the fleets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlaceFleet:
    region: str
    aws: Aws
    fleet: Fleet


def seed_outbreak(home: Aws, regions: Sequence[str], size: int) -> list[PlaceFleet]:
    """``size`` instances in each Region of one account; IAM is global, so its profile is made once."""
    profile_arn = instance_profile(home)
    fleets = []
    for region in regions:
        aws = home if region == home.region() else home.elsewhere(region)
        fleets.append(PlaceFleet(region, aws, seed_place(aws, size, profile_arn)))
    return fleets


def reference(home: Aws, region: str, instance_id: str) -> str:
    """How the case names an instance: a bare id in the home Region, an ARN anywhere else."""
    if region == home.region():
        return instance_id
    return f"arn:{home.partition()}:ec2:{region}:{home.account()}:instance/{instance_id}"


# -- the contenders ------------------------------------------------------------------------------


def prepare_outbreak(home: Aws, fleets: Sequence[PlaceFleet], concurrency: int) -> Prepared:
    """As benchmarks/run.py prepares ec2ir: one canary per VPC in every Region is isolated first,
    so the state table and every Region's groups exist, and every place's engine has built its
    clients before the clock starts. A one-Region fleet is the one-place engine's run."""
    outbreak = Outbreak(home, StateStore(home), concurrency=concurrency, places=Places(home))
    canaries = []
    for place in fleets:
        ec2 = place.aws.ec2()
        for subnet in place.fleet.subnets.values():
            launched = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, SubnetId=subnet)
            canaries.append(reference(home, place.region, launched["Instances"][0]["InstanceId"]))
    warm_up = outbreak.isolate(canaries, WARM_UP_CASE, office_cidr=OFFICE_CIDR, options=OPTIONS)
    if warm_up.failed:
        raise RuntimeError(f"the ec2ir warm-up failed: {[r.as_dict() for r in warm_up.failed]}")
    isolation: dict[str, str] = {}
    allow_all: set[str] = set()
    for place in fleets:
        engine: Engine = outbreak.engine_at(Place(home.account(), place.region))
        engine.lanes_aws.ec2()  # built now, not among the cuts (see benchmarks/README.md)
        engine.urgent_aws.ec2()
        isolation |= groups_of_role(place.aws, "isolation")
        allow_all |= set(groups_of_role(place.aws, "allow-all").values())
    references = [reference(home, p.region, i) for p in fleets for i in p.fleet.instance_ids]

    def isolate() -> Outcome:
        report = outbreak.isolate(references, CASE, office_cidr=OFFICE_CIDR, options=OPTIONS)
        return Outcome({result.instance_id for result in report.failed})

    return Prepared(isolation, isolate, frozenset(allow_all))


def groups_of_role(aws: Aws, role: str) -> dict[str, str]:
    """ec2ir's groups of ``role`` in ``aws``'s Region, by VPC id."""
    found = aws.ec2().describe_security_groups(Filters=[{"Name": "tag:ec2ir:role", "Values": [role]}])
    return {group["VpcId"]: group["GroupId"] for group in found["SecurityGroups"]}


def prepare_baseline_by_region(_home: Aws, fleets: Sequence[PlaceFleet], _concurrency: int) -> Prepared:
    """The post's loop (benchmarks/run.py), over each Region's fleet in turn."""
    prepared = [prepare_baseline(place.aws, place.fleet, 0) for place in fleets]

    def isolate() -> Outcome:
        failed: set[str] = set()
        for each in prepared:
            failed |= each.isolate().failed
        return Outcome(failed)

    isolation = {vpc: group for each in prepared for vpc, group in each.isolation_groups.items()}
    return Prepared(isolation, isolate)


CONTENDERS: dict[str, Callable[[Aws, Sequence[PlaceFleet], int], Prepared]] = {
    SINGLE: prepare_outbreak,
    OUTBREAK: prepare_outbreak,
    BASELINE: prepare_baseline_by_region,
}


# -- one measured run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    latency_s: float
    speedup: float
    concurrency: int
    max_attempts: int


@dataclass(frozen=True)
class RunFigures:
    contender: str
    places: int
    per_place: int
    isolation_s: float | None  # first call of the run -> the last ENI of every Region isolated
    place_isolation_s: tuple[float | None, ...]  # the same moment for each Region's own ENIs
    swap_bound_s: float | None  # the slowest Region's bound for the swaps it took (run.py's swap bound)
    wall_s: float
    accepted_calls: int
    throttled_calls: int
    failed: int
    client_cpu_s: float  # this process's CPU time during the run (ec2ir and its botocore)
    server_cpu_s: float | None  # the shim and emulator's process
    swaps_until_isolation: int = 0  # accepted group swaps sent until the last isolation
    calls_until_isolation: int = 0  # accepted calls of every service sent until then
    mutating_calls: int = 0  # accepted calls on the shared mutating bucket, the whole run

    @property
    def instances(self) -> int:
        return self.places * self.per_place


def make_home(shim: RemoteShim, settings: Settings) -> Aws:
    return Aws(
        AwsSettings(
            region=REGIONS[0],
            endpoint_url=shim.endpoint_url,
            retry_mode="adaptive",
            max_attempts=settings.max_attempts,
            max_pool_connections=max(50, 2 * settings.concurrency),
        )
    )


def measure_once(
    shim: RemoteShim, contender: str, places: int, per_place: int, settings: Settings, throttling: bool = True
) -> RunFigures:
    shim.reset_emulator()
    shim.configure(latency=False, throttling=False)
    home = make_home(shim, settings)
    fleets = seed_outbreak(home, REGIONS[:places], per_place)
    prepared = CONTENDERS[contender](home, fleets, settings.concurrency)
    targets = {
        eni: prepared.isolation_groups[vpc] for place in fleets for eni, vpc in place.fleet.eni_vpcs.items()
    }
    shim.configure(
        latency=throttling, throttling=throttling, speedup=settings.speedup, latency_s=settings.latency_s
    )
    shim.clear_log()
    cpu, server_cpu, started = time.process_time(), emulator_cpu_s(), time.perf_counter()
    outcome = prepared.isolate()
    wall_s = time.perf_counter() - started
    client_cpu_s, server_after = time.process_time() - cpu, emulator_cpu_s()
    records = shim.records()
    shim.configure(latency=False, throttling=False)
    failed = set(outcome.failed)
    for place in fleets:
        failed |= instances_not_isolated(place.aws, place.fleet, targets)
    moments = place_moments(records, fleets, targets, settings)
    throttled = sum(record.throttled for record in records)
    reached = [moment[0] for moment in moments.values() if moment is not None]
    isolation_s = max(reached) if reached and len(reached) == len(moments) else None
    swaps, calls = spend_until(records, isolation_s)
    return RunFigures(
        contender=contender,
        places=places,
        per_place=per_place,
        isolation_s=isolation_s,
        place_isolation_s=tuple(None if m is None else m[0] for m in moments.values()),
        swap_bound_s=max((m[1] for m in moments.values() if m is not None), default=None),
        wall_s=wall_s,
        accepted_calls=len(records) - throttled,
        throttled_calls=throttled,
        failed=len(failed),
        client_cpu_s=client_cpu_s,
        server_cpu_s=None if server_cpu is None or server_after is None else server_after - server_cpu,
        swaps_until_isolation=swaps,
        calls_until_isolation=calls,
        mutating_calls=sum(not r.throttled and r.bucket == MUTATING for r in records),
    )


def spend_until(records: Sequence[CallRecord], isolation_s: float | None) -> tuple[int, int]:
    """The accepted group swaps, and the accepted calls of every service, sent until the last
    isolation (``isolation_s`` after the run's first call)."""
    began = first_call(records)
    if began is None or isolation_s is None:
        return (0, 0)
    until = began + isolation_s
    calls = sum(not record.throttled and record.start <= until for record in records)
    return (sum(swaps_per_bucket(records, until=until).values()), calls)


def place_moments(
    records: Sequence[CallRecord], fleets: Sequence[PlaceFleet], targets: dict[str, str], settings: Settings
) -> dict[str, tuple[float, float] | None]:
    """Per Region: when its last ENI was isolated (from the run's first call, any Region's) and the
    least time its own buckets allow for the swaps it took until then; None if one never was."""
    began = first_call(records)
    round_trip_s = settings.latency_s / settings.speedup
    moments: dict[str, tuple[float, float] | None] = {}
    for place in fleets:
        mine = [record for record in records if record.region == place.region]
        own = {eni: targets[eni] for eni in place.fleet.eni_vpcs}
        isolated = isolation_moment(mine, own, place.fleet.instance_enis)
        if began is None or isolated is None:
            moments[place.region] = None
            continue
        swaps = swaps_per_bucket(mine, until=isolated)
        bound = token_bucket_lower_bound(swaps, EC2_BUCKETS, settings.speedup, round_trip_s)
        moments[place.region] = (isolated - began, bound)
    return moments


def emulator_cpu_s() -> float | None:
    """CPU seconds (user + system) of this process's children: the shim and emulator's server."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, found = 0, False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # ppid; utime and stime follow at 11 and 12
            total += int(fields[11]) + int(fields[12])
            found = True
    return total / ticks if found else None


# -- the process's ceiling -----------------------------------------------------------------------


@dataclass(frozen=True)
class Ceiling:
    places: int
    per_place: int
    calls: int  # every call the shim served (all services)
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float | None

    @property
    def per_wall_s(self) -> float:
        return self.calls / self.wall_s

    @property
    def emulator_s_per_call(self) -> float | None:
        return None if self.server_cpu_s is None else self.server_cpu_s / self.calls

    @property
    def per_client_cpu_s(self) -> float:
        """What one ec2ir process could be served a second if its CPU were all it waited for: one
        Python process runs its botocore on one core at a time (the GIL)."""
        return self.calls / self.client_cpu_s


def measure_ceiling(shim: RemoteShim, places: int, per_place: int, settings: Settings) -> Ceiling:
    """The Outbreak with no latency and no bucket: only CPU, ec2ir's and the emulator's, paces it."""
    run = measure_once(shim, OUTBREAK, places, per_place, settings, throttling=False)
    return Ceiling(places, per_place, run.accepted_calls, run.wall_s, run.client_cpu_s, run.server_cpu_s)


# -- medians and the report ----------------------------------------------------------------------


def median_or_none(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


@dataclass(frozen=True)
class Row:
    contender: str
    runs: Sequence[RunFigures]

    @property
    def first(self) -> RunFigures:
        return self.runs[0]

    def median(self, figure: Callable[[RunFigures], float | None]) -> float | None:
        return median_or_none([figure(run) for run in self.runs])


def paired_ratio(row: Row, reference_row: Row) -> float | None:
    """The median, over the repeats, of this contender's isolation time over the single Region's
    measured in the same repeat (machine noise then falls on both alike)."""
    ratios = [
        mine.isolation_s / theirs.isolation_s
        for mine, theirs in zip(row.runs, reference_row.runs, strict=False)
        if mine.isolation_s is not None and theirs.isolation_s
    ]
    return statistics.median(ratios) if ratios else None


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def render_table(rows: Sequence[Row], emulator_s_per_call: float | None = None) -> list[str]:
    """The contenders' medians. With ``emulator_s_per_call`` (the ceiling run's), the emulator
    floor: the least time one emulator process, serving one call at a time, needs for the calls
    sent until the last isolation (AWS serves each Region from an endpoint of its own)."""
    single = next(row for row in rows if row.contender == SINGLE)
    lines = [
        "| contender | Regions x N | isolated after (s) | slowest / fastest Region (s) | swap bound (s) "
        "| vs swap bound | emulator floor (s) | vs one Region alone | wall (s) | calls / instance "
        "| throttled | failed | ec2ir CPU (s) | emulator CPU (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        spread = "—"
        slowest = row.median(lambda r: max((m for m in r.place_isolation_s if m is not None), default=None))
        fastest = row.median(lambda r: min((m for m in r.place_isolation_s if m is not None), default=None))
        if slowest is not None and fastest is not None:
            spread = f"{slowest:.2f} / {fastest:.2f}"
        bound_ratio = median_or_none(
            [r.isolation_s / r.swap_bound_s for r in row.runs if r.isolation_s and r.swap_bound_s]
        )
        floor = None
        if emulator_s_per_call is not None:
            floor = row.median(lambda r: r.calls_until_isolation * emulator_s_per_call)
        lines.append(
            f"| {row.contender} | {row.first.places} x {row.first.per_place} "
            f"| {seconds(row.median(lambda r: r.isolation_s))} | {spread} "
            f"| {seconds(row.median(lambda r: r.swap_bound_s))} | {ratio(bound_ratio)} | {seconds(floor)} "
            f"| {ratio(paired_ratio(row, single)) if row is not single else '1.00x'} "
            f"| {seconds(row.median(lambda r: r.wall_s))} "
            f"| {row.median(lambda r: r.accepted_calls / r.instances) or 0:.2f} "
            f"| {row.median(lambda r: r.throttled_calls) or 0:g} | {row.median(lambda r: r.failed) or 0:g} "
            f"| {seconds(row.median(lambda r: r.client_cpu_s))} "
            f"| {seconds(row.median(lambda r: r.server_cpu_s))} |"
        )
    return lines


def target_lines(rows: Sequence[Row]) -> list[str]:
    by_name = {row.contender: row for row in rows}
    outbreak, single, baseline = by_name[OUTBREAK], by_name[SINGLE], by_name[BASELINE]
    lines = []
    versus = paired_ratio(outbreak, single)
    verdict = "MET" if versus is not None and versus <= TARGET_RATIO else "NOT MET"
    lines.append(
        f"- {verdict}: the outbreak ({outbreak.first.places} x {outbreak.first.per_place}) isolated "
        f"within {TARGET_RATIO}x of one Region alone ({single.first.per_place}): {ratio(versus)} "
        f"(median of the repeats' own ratios; {seconds(outbreak.median(lambda r: r.isolation_s))} s "
        f"against {seconds(single.median(lambda r: r.isolation_s))} s)"
    )
    faster = paired_ratio(baseline, outbreak)
    lines.append(
        f"- the baseline, Region by Region, took {ratio(paired_ratio(baseline, single))} one Region's "
        f"time, {ratio(faster)} the outbreak's"
    )
    return lines


@dataclass(frozen=True)
class Budget:
    """What ec2ir spends per instance, read from the single-Region runs' logs."""

    swaps: float  # group swaps until the last isolation (two per ENI with the untracking detour)
    calls: float  # calls of every service sent until the last isolation
    mutating: float  # calls on the shared mutating bucket, the whole run (its slowest bucket)
    total: float  # calls of every service, the whole run (full containment, evidence aside)


def budget_of(runs: Sequence[RunFigures]) -> Budget:
    measured = [run for run in runs if run.isolation_s is not None]
    if not measured:
        return Budget(0.0, 0.0, 0.0, 0.0)

    def per_instance(figure: Callable[[RunFigures], int]) -> float:
        return statistics.median(figure(run) / run.instances for run in measured)

    return Budget(
        per_instance(lambda r: r.swaps_until_isolation),
        per_instance(lambda r: r.calls_until_isolation),
        per_instance(lambda r: r.mutating_calls),
        per_instance(lambda r: r.accepted_calls),
    )


MUTATING_SPEC = EC2_BUCKETS[MUTATING]


def places_before_machine_binds(bound_s: float, per_place: int, calls: float, rate: float) -> str:
    """How many places one process can serve before its CPU, not their buckets, sets the time:
    the whole outbreak's calls at ``rate`` a second take longer than one place's buckets."""
    if not bound_s:
        return "none: the burst admits every call, CPU sets the time from the first place"
    places = bound_s * rate / (per_place * calls)
    return f"{places:.1f} ({places * per_place:,.0f} instances)"


def ceiling_lines(ceiling: Ceiling, budget: Budget) -> list[str]:
    """How many Regions one process keeps at their EC2 bound, and so when the machine binds first."""
    rate = ceiling.per_client_cpu_s
    isolating = SWAP_REFILL_PER_S / budget.swaps * budget.calls  # calls/s one bound Region needs
    containing = MUTATING_SPEC.refill_per_s / budget.mutating * budget.total if budget.mutating else 0.0
    lines = [
        "### One process's ceiling",
        "",
        f"- no latency, no bucket: the Outbreak over {ceiling.places} x {ceiling.per_place} "
        f"instances; the shim served {ceiling.calls} calls in {ceiling.wall_s:.1f} s "
        f"({ceiling.per_wall_s:.0f} a second); ec2ir's process used {ceiling.client_cpu_s:.1f} s "
        f"of CPU ({rate:.0f} calls per CPU second), the emulator's {seconds(ceiling.server_cpu_s)} s",
        f"- per instance (single-Region runs), ec2ir makes {budget.swaps:.2f} group swaps and "
        f"{budget.calls:.2f} calls (every service) until its last isolation, and {budget.total:.2f} "
        f"calls in all, {budget.mutating:.2f} of them on the shared mutating bucket",
        f"- isolating, a Region held at its swap buckets' refill ({SWAP_REFILL_PER_S:g} swaps a "
        f"second, after a burst of {SWAP_BURST}) isolates {SWAP_REFILL_PER_S / budget.swaps:.2f} "
        f"instances a second and needs {isolating:.0f} calls a second from ec2ir: one process at "
        f"{rate:.0f} calls a second keeps {rate / isolating:.1f} Regions (or accounts) at that bound",
        f"- containing (every step), a Region held at the mutating bucket's refill "
        f"({MUTATING_SPEC.refill_per_s:g} a second) needs {containing:.0f} calls a second: "
        f"{rate / containing if containing else 0:.1f} Regions per process",
        "",
        "| instances per Region | isolation bound per Region (s) | Regions before the machine binds "
        "| containment bound per Region (s) | Regions before the machine binds |",
        "|---:|---:|---:|---:|---:|",
    ]
    for per_place in (25, 100, 250, 1000, 5000):
        isolation_s = max(0.0, per_place * budget.swaps - SWAP_BURST) / SWAP_REFILL_PER_S
        contained_s = max(0.0, per_place * budget.mutating - MUTATING_SPEC.size) / MUTATING_SPEC.refill_per_s
        lines.append(
            f"| {per_place} | {isolation_s:.1f} "
            f"| {places_before_machine_binds(isolation_s, per_place, budget.calls, rate)} "
            f"| {contained_s:.1f} "
            f"| {places_before_machine_binds(contained_s, per_place, budget.total, rate)} |"
        )
    return [*lines, ""]


def report(
    rows: Sequence[Row], ceiling: Ceiling | None, budget: Budget, settings: Settings, elapsed_s: float
) -> str:
    first = next(row for row in rows if row.contender == OUTBREAK).first
    lines = [
        "## Outbreak scale: one case over several Regions",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}",
        f"- Regions: {', '.join(REGIONS[: first.places])} (one account; the first is home: the state "
        "table, bare ids), each with its own EC2 token buckets in the shim",
        f"- latency {settings.latency_s * 1000:g} ms a call at k = 1; k = {settings.speedup:g}; "
        f"ec2ir concurrency {settings.concurrency} per Region; botocore adaptive retries, "
        f"{settings.max_attempts} attempts; `Options(evidence=False)`",
        f"- medians of {len(rows[0].runs)} run(s) each, interleaved; the whole benchmark took "
        f"{elapsed_s / 60:.1f} min",
        "",
        *render_table(rows, ceiling.emulator_s_per_call if ceiling else None),
        "",
        "Isolated after: from the run's first call to the last ENI's swap into its isolation group "
        "(shim log); swap bound: the slowest Region's token-bucket bound for the swaps it took; "
        "emulator floor: the calls sent until the last isolation times the emulator's CPU a call "
        "(ceiling run below), the least time the one emulator process serving every Region needs "
        "for them, where AWS serves each Region from its own endpoint; vs one Region alone: the "
        "median of each repeat's own ratio.",
        "",
        "### Target (issue 17)",
        "",
        *target_lines(rows),
        "",
    ]
    if ceiling is not None:
        lines += ceiling_lines(ceiling, budget)
    return "\n".join(lines)


# -- driving it ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.outbreak", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--regions", type=int, help=f"Regions R (default {DEFAULT_PLACES}, at most {len(REGIONS)})"
    )
    parser.add_argument(
        "--per-region", type=int, help=f"instances N in each Region (default {DEFAULT_PER_PLACE})"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender; medians shown (default 3)")
    parser.add_argument("--speedup", type=float, default=1.0, help="k, as in benchmarks.run (default 1)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="round trip at k = 1 (default 50)")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="ec2ir's, per Region")
    parser.add_argument(
        "--max-attempts", type=int, default=50, help="botocore attempts per call (default 50)"
    )
    parser.add_argument(
        "--ceiling-per-region",
        type=int,
        help=f"instances per Region of the CPU ceiling run (default {DEFAULT_CEILING_PER_PLACE}; 0: none)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 x 10, one repeat, nothing written")
    parser.add_argument(
        "--output", type=Path, help="default: benchmarks/outbreak-results.md (none with --quick)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    places = args.regions or (QUICK_PLACES if args.quick else DEFAULT_PLACES)
    per_place = args.per_region or (QUICK_PER_PLACE if args.quick else DEFAULT_PER_PLACE)
    if not 1 <= places <= len(REGIONS) or per_place < 1:
        raise SystemExit(f"give 1 to {len(REGIONS)} Regions and at least one instance in each")
    repeat = 1 if args.quick and args.repeat == 3 else args.repeat
    ceiling_size = args.ceiling_per_region
    if ceiling_size is None:
        ceiling_size = QUICK_PER_PLACE if args.quick else DEFAULT_CEILING_PER_PLACE
    output = args.output or (None if args.quick else REPO_ROOT / "benchmarks" / "outbreak-results.md")
    settings = Settings(args.latency_ms / 1000, args.speedup, args.concurrency, args.max_attempts)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION=REGIONS[0])
    for variable in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(variable, None)

    began = time.perf_counter()
    shapes = {SINGLE: (1, per_place), OUTBREAK: (places, per_place), BASELINE: (places, per_place)}
    runs: dict[str, list[RunFigures]] = {name: [] for name in shapes}
    ceiling = None
    with served_shim() as shim:
        for attempt in range(1, repeat + 1):
            for contender, (count, size) in shapes.items():  # interleaved: noise falls on all alike
                clock = time.perf_counter()
                figures = measure_once(shim, contender, count, size, settings)
                runs[contender].append(figures)
                print(
                    f"{contender}, {count} x {size}, run {attempt}/{repeat}: isolated after "
                    f"{seconds(figures.isolation_s)} s (Regions: "
                    f"{', '.join(seconds(m) for m in figures.place_isolation_s)}), "
                    f"{figures.throttled_calls} throttled, {figures.failed} failed, "
                    f"wall {figures.wall_s:.1f} s "
                    f"({time.perf_counter() - clock:.1f} s with seeding)",
                    file=sys.stderr,
                    flush=True,
                )
        if ceiling_size:
            ceiling = measure_ceiling(shim, places, ceiling_size, settings)
            print(f"ceiling: {ceiling.calls} calls in {ceiling.wall_s:.1f} s", file=sys.stderr, flush=True)
    rows = [Row(name, figures) for name, figures in runs.items()]
    text = report(rows, ceiling, budget_of(runs[SINGLE]), settings, time.perf_counter() - began)
    print(text)
    if output is not None:
        output.write_text(text + "\n", encoding="utf-8")
        print(f"(written to {output})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
