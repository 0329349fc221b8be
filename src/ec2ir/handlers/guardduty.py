"""GuardDuty auto-containment: an EventBridge "GuardDuty Finding" event in, the instance contained.

The stack's EventBridge rule already selects findings on an EC2 instance at or above the
threshold; this handler checks everything again (defence in depth) and ignores, with one log line
and no exception, anything it cannot act on: a malformed event, another resource type, a lower
severity, a sample finding, a finding of another account or Region. An exception would only make
Lambda retry an event that can never succeed.

Each finding is its own case, ``gd-<finding id>``, so the hold, the tags and the record say which
finding contained the instance. GuardDuty sends the same finding again as it recurs; containing an
instance already held is a no-op, and one held under another case (the stack's, a responder's) is
left to that case.

A responder's release stands against a finding sent again: the instance is contained once more only
when the finding shows new activity after the release, i.e. it was updated after the release
(``updatedAt``) and its occurrence count (``service.count``) grew beyond the count at containment,
which the state table keeps for each finding and instance (``pk = guardduty#<case>``). Then the
instance is contained under a new episode of the same case, and the notification says why.

The isolation group admits SSH from the stack's forensic group (``EC2IR_FORENSIC_GROUP_ID``, and
``EC2IR_FORENSIC_GROUP_OWNER_ID`` for a group of another account), exactly as the stack's own
containment does, so that auto-containment never takes the security team's access away.

With ``EC2IR_BLOCK_REMOTE_IP_SEVERITY`` set (the stack's ``BlockRemoteIpSeverity``), a finding at
or above it also has the remote addresses it names (``finding_addresses``) denied in the network
ACLs of the instance's subnets, each as a /32 or /128, both ways, under the finding's case, so that
releasing the case removes them. An address the engine finds unsafe to block (inside the VPC, an
AWS service's, the forensic side) is left out with a note rather than refusing the run: the
instance is contained either way. The notification says what was asked, what was left out and why.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ec2ir.containment.nacl_report import NaclReport
from ec2ir.containment.steps import Options
from ec2ir.core import validate
from ec2ir.core.errors import AwsError, Ec2irError
from ec2ir.core.models import ACTIVE_STATUSES, Hold, HoldStatus, Place
from ec2ir.core.text import printable
from ec2ir.engine.facade import Engine
from ec2ir.engine.outbreak import Outbreak
from ec2ir.engine.places import Places
from ec2ir.engine.results import RunReport
from ec2ir.handlers import (
    MEMBER_ROLE_ENV,
    TOPIC_ENV,
    EngineFactory,
    engine_from_environment,
    log_event,
    notify,
    report_lines,
    setup_logging,
)
from ec2ir.handlers.finding_addresses import FindingAddresses, finding_addresses
from ec2ir.store.sightings import Seen

log = logging.getLogger("ec2ir.handlers.guardduty")

THRESHOLD_ENV = "EC2IR_AUTO_CONTAIN_SEVERITY"
OFFICE_CIDR_ENV = "EC2IR_OFFICE_CIDR"
REVOKE_SESSIONS_ENV = "EC2IR_REVOKE_SESSIONS"
FORENSIC_GROUP_ENV = "EC2IR_FORENSIC_GROUP_ID"
FORENSIC_GROUP_OWNER_ENV = "EC2IR_FORENSIC_GROUP_OWNER_ID"
BLOCK_SEVERITY_ENV = "EC2IR_BLOCK_REMOTE_IP_SEVERITY"
ACCOUNT = re.compile(r"^[0-9]{12}$")
# The stack's BlockRemoteIpSeverity, AutoContainSeverity's own rule: empty (off), or a GuardDuty
# severity from 1 to 10 with at most one decimal (tests/integration/test_template.py keeps them equal).
BLOCK_SEVERITY_PATTERN = r"^((10(\.0)?)|([1-9](\.[0-9])?))?$"
CASE_PREFIX = "gd-"
_CASE_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


class Handled(StrEnum):
    """What became of one finding: the ``outcome`` the function returns and logs."""

    CONTAINED = "contained"
    ALREADY_HELD = "already-held"  # held already, by this case or another
    IGNORED = "ignored"  # not acted on; the reason says why
    FAILED = "failed"


@dataclass(frozen=True)
class Finding:
    """The fields of a GuardDuty finding that containment depends on."""

    finding_id: str
    finding_type: str
    title: str
    severity: float
    account_id: str
    region: str
    instance_id: str
    sample: bool
    archived: bool
    updated_at: str = ""  # detail.updatedAt: when GuardDuty last updated the finding
    count: int | None = None  # detail.service.count: how many times the activity was seen
    # the remote addresses it names that may be blocked, and what was left out
    remote: FindingAddresses = field(default_factory=FindingAddresses)


class Unusable(Exception):
    """The event is not a GuardDuty finding on an EC2 instance that can be acted on."""


def _text(mapping: Mapping[str, Any], key: str, where: str) -> str:
    value = mapping.get(key)
    if not isinstance(value, str) or not value:
        raise Unusable(f"{where}.{key} is missing")
    return value


def _object(mapping: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = mapping.get(key)
    if not isinstance(value, Mapping):
        raise Unusable(f"{where}.{key} is missing or not an object")
    return value


def _is_sample(service: Mapping[str, Any]) -> bool:
    """GuardDuty's generated sample findings say so in additionalInfo: either directly, or (in the
    current schema) inside its ``value``, a JSON string."""
    info = service.get("additionalInfo")
    if not isinstance(info, Mapping):
        return False
    if info.get("sample") is True:
        return True
    value = info.get("value")
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return False
        return isinstance(decoded, Mapping) and decoded.get("sample") is True
    return False


def parse_finding(event: Any) -> Finding:
    """The finding of an EventBridge event, or ``Unusable`` saying why there is none."""
    if not isinstance(event, Mapping):
        raise Unusable("the event is not an object")
    if event.get("source") != "aws.guardduty" or event.get("detail-type") != "GuardDuty Finding":
        raise Unusable(f"not a GuardDuty finding (source {event.get('source')!r})")
    detail = _object(event, "detail", "event")
    resource = _object(detail, "resource", "detail")
    resource_type = resource.get("resourceType")
    if resource_type != "Instance":
        raise Unusable(f"the finding is about a {resource_type or 'unnamed'} resource, not an EC2 instance")
    instance = _object(resource, "instanceDetails", "detail.resource")
    instance_id = _text(instance, "instanceId", "detail.resource.instanceDetails")
    if not validate.INSTANCE_ID.match(instance_id):
        raise Unusable(f"{instance_id!r} is not an EC2 instance id")
    severity = detail.get("severity")
    if isinstance(severity, bool) or not isinstance(severity, int | float):
        raise Unusable("detail.severity is missing or not a number")
    service = detail.get("service")
    service = service if isinstance(service, Mapping) else {}
    return Finding(
        finding_id=_text(detail, "id", "detail"),
        finding_type=str(detail.get("type", "")),
        title=str(detail.get("title", "")),
        severity=float(severity),
        account_id=_text(detail, "accountId", "detail"),
        region=_text(detail, "region", "detail"),
        instance_id=instance_id,
        sample=_is_sample(service),
        archived=service.get("archived") is True,
        updated_at=str(detail.get("updatedAt") or ""),
        count=_count(service.get("count")),
        remote=_remote(detail),
    )


def _remote(detail: Mapping[str, Any]) -> FindingAddresses:
    """The finding's remote addresses; a finding whose addresses cannot be read is still
    contained, with none blocked (``finding_addresses`` does not raise; this is the last guard)."""
    try:
        return finding_addresses(detail)
    except Exception:  # hostile input must never stop containment
        log.exception("could not read the remote addresses of a finding")
        return FindingAddresses(notes=("the finding's remote addresses could not be read",))


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def _moment(stamp: str) -> datetime | None:
    """An ISO 8601 time (GuardDuty's ``...Z`` or the state table's ``+00:00``), or None."""
    try:
        moment = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else None


def new_activity(finding: Finding, released: Hold, seen: Seen | None) -> tuple[bool, str]:
    """Whether a finding sent again after a release shows activity since; and why (not)."""
    since = f"case {released.case_id} was released at {released.released_at} by {released.released_by}"
    updated, release = _moment(finding.updated_at), _moment(released.released_at)
    if updated is None or release is None:
        return (
            False,
            f"{since}; the finding's update time ({finding.updated_at or 'none'}) cannot be compared",
        )
    if updated <= release:
        return False, f"{since}; the finding was last updated before that, at {finding.updated_at}"
    if seen is None or seen.count is None:
        return (
            False,
            f"{since}; the finding's count at containment is not on record, so growth cannot be shown",
        )
    if finding.count is None or finding.count <= seen.count:
        return False, (
            f"{since}; the finding was updated at {finding.updated_at} but its count "
            f"({finding.count}) has not grown since containment ({seen.count})"
        )
    return True, (
        f"new activity after the release: {since}, and the finding was updated at "
        f"{finding.updated_at} with its count grown from {seen.count} to {finding.count}"
    )


def case_for(finding_id: str) -> str:
    """``gd-<finding id>``, always a valid case id (ec2ir.core.validate.CASE_ID). GuardDuty ids are 32
    hex digits; anything else is made safe, or replaced by its hash when it cannot be."""
    safe = _CASE_UNSAFE.sub("", finding_id)
    candidate = f"{CASE_PREFIX}{safe}"
    if safe == finding_id and validate.CASE_ID.match(candidate):
        return candidate
    return f"{CASE_PREFIX}{hashlib.sha256(finding_id.encode()).hexdigest()[:32]}"


def threshold_from(raw: str | None) -> float | None:
    """The severity threshold, or None (auto-containment off) when unset or unreadable."""
    if raw is None or not raw.strip():
        return None
    try:
        return float(raw)
    except ValueError:
        log.error("%s=%r is not a number; auto-containment is off", THRESHOLD_ENV, raw)
        return None


@dataclass(frozen=True)
class BlockSetting:
    """Whether a finding's remote addresses are blocked: at or above ``threshold``; never when it
    is None (off, or ``problem`` says why the configured value was refused)."""

    threshold: float | None = None
    problem: str = ""

    def applies(self, finding: Finding) -> tuple[bool, str]:
        """Whether ``finding``'s addresses are to be blocked, and if not, why not."""
        if self.threshold is None:
            return False, self.problem or "BlockRemoteIpSeverity is empty (blocking is off)"
        if finding.severity < self.threshold:
            return False, f"severity {finding.severity:g} is below BlockRemoteIpSeverity {self.threshold:g}"
        return True, ""


BLOCK_OFF = BlockSetting()


@functools.lru_cache(maxsize=8)
def block_setting_from(raw: str | None) -> BlockSetting:
    """``EC2IR_BLOCK_REMOTE_IP_SEVERITY`` read, once per execution environment and value (so a bad
    value is logged once, at cold start). A bad value blocks nothing, says so in every
    notification, and leaves containment as it is."""
    if raw is None or not raw.strip():
        return BLOCK_OFF
    if re.fullmatch(BLOCK_SEVERITY_PATTERN, raw.strip()) is None:
        problem = (
            f"{BLOCK_SEVERITY_ENV}={printable(raw[:32])!r} is not a GuardDuty severity (1 to 10, at "
            "most one decimal; empty for off), so no address is blocked"
        )
        log.error("%s", problem)
        return BlockSetting(problem=problem)
    return BlockSetting(float(raw))


def _names(note: str, address: str) -> bool:
    """Whether ``note`` names ``address`` (alone, or as its /32 or /128)."""
    return re.search(rf"(?<![0-9A-Za-z:.]){re.escape(address)}(?![0-9A-Za-z:.])", note) is not None


def acl_notes(notes: list[str], finding: Finding) -> list[str]:
    """The run's notes about network ACLs or naming one of the finding's remote addresses (not
    the general note on what isolation cannot stop, which every run has)."""
    return [
        note
        for note in notes
        if ("network acl" in note.lower() and not note.startswith("isolation limits"))
        or any(_names(note, address.address) for address in finding.remote.addresses)
    ]


def block_lines(
    finding: Finding, block: BlockSetting, requested: bool, blocks: NaclReport | None, notes: list[str]
) -> list[str]:
    """What the notification says about the finding's remote addresses: which were blocked (from
    the engine's record of the entries in place, never from the wording of a note), which were
    left out and why (by this handler, or by the engine: its ``notes`` about them)."""
    remote = finding.remote
    if not remote.addresses and not remote.notes and not notes:
        return []
    if requested:
        lines = [
            f"Remote addresses (BlockRemoteIpSeverity {block.threshold:g}), denied both ways in the "
            f"network ACLs of the instance's subnets under case {case_for(finding.finding_id)}:"
        ]
        denied = blocks.denied() if blocks is not None else {}
        for address in remote.addresses:
            acls = denied.get(str(ipaddress.ip_network(address.address)))
            if acls:
                lines.append(f"  blocked {address.describe()} in {', '.join(sorted(acls))}")
            else:
                lines.append(f"  NOT blocked (see the network ACL notes): {address.describe()}")
    else:
        applies, why = block.applies(finding)
        lines = [
            "Remote addresses: none the finding names can be blocked:"
            if applies
            else f"Remote addresses named by the finding, not blocked because {why}:"
        ]
        lines += [f"  {address.describe()}" for address in remote.addresses]
    lines += [f"  {note}" for note in remote.notes]
    lines += [f"  note: {printable(note)}" for note in notes]
    return lines


def _ignored(why: str, finding: Finding | None = None) -> dict[str, Any]:
    outcome: dict[str, Any] = {"outcome": Handled.IGNORED, "reason": why}
    if finding is not None:
        outcome |= {"finding": finding.finding_id, "instance": finding.instance_id}
    log_event("ignored", outcome)
    return outcome


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (``ec2ir.handlers.guardduty.handler``)."""
    setup_logging()
    arn = str(getattr(context, "invoked_function_arn", "") or "")
    own_account = arn.split(":")[4] if arn.count(":") >= 5 else None
    return handle(
        event,
        engine_from_environment,
        threshold=threshold_from(os.environ.get(THRESHOLD_ENV)),
        block=block_setting_from(os.environ.get(BLOCK_SEVERITY_ENV)),
        own_account=own_account,
        own_region=os.environ.get("AWS_REGION"),
        office_cidr=os.environ.get(OFFICE_CIDR_ENV) or None,
        revoke_sessions=os.environ.get(REVOKE_SESSIONS_ENV, "").lower() == "true",
        topic_arn=os.environ.get(TOPIC_ENV),
        forensic_group=os.environ.get(FORENSIC_GROUP_ENV, "").strip() or None,
        forensic_group_owner=os.environ.get(FORENSIC_GROUP_OWNER_ENV, "").strip() or None,
        member_role=os.environ.get(MEMBER_ROLE_ENV, "").strip(),
    )


def handle(
    event: Any,
    engine_factory: EngineFactory,
    threshold: float | None,
    own_account: str | None = None,
    own_region: str | None = None,
    office_cidr: str | None = None,
    revoke_sessions: bool = False,
    topic_arn: str | None = None,
    forensic_group: str | None = None,
    forensic_group_owner: str | None = None,
    block: BlockSetting = BLOCK_OFF,
    member_role: str = "",
) -> dict[str, Any]:
    """Contain the instance a finding names, when it qualifies; say what happened. With
    ``member_role``, a finding of another account contains its instance there, through that role."""
    try:
        finding = parse_finding(event)
    except Unusable as why:
        return _ignored(str(why))
    refused = _not_to_contain(finding, threshold, own_account, own_region, bool(member_role))
    if refused is not None:
        return _ignored(refused, finding)
    case = case_for(finding.finding_id)
    outcome: dict[str, Any] = {"finding": finding.finding_id, "instance": finding.instance_id, "case": case}
    blocking = block.applies(finding)[0] and bool(finding.remote.addresses)
    if blocking:
        outcome["block_ips"] = list(finding.remote.cidrs)
    try:
        member = own_account is not None and finding.account_id != own_account
        engine, target = _engine_for(engine_factory(), finding, member_role if member else "")
        if member:  # a member's instance gets its own account's groups: the stack's is in another VPC
            forensic_group = forensic_group_owner = None
        before = _current_hold(engine, finding, member)
        contain, again = _renewal(engine, finding, case, before)
        if not contain:
            return _ignored(f"not contained again: {again}", finding)
        options = _options(finding, blocking, revoke_sessions, forensic_group, forensic_group_owner)
        report = engine.isolate([target], case, office_cidr, options=options)
    except Ec2irError as error:
        outcome |= {"outcome": Handled.FAILED, "reason": str(error)}
        log_event("failed", outcome)
        return outcome
    log_event("isolate", report.as_dict())
    held_before = before is not None and before.status in ACTIVE_STATUSES
    outcome |= _result_outcome(report, held_before, again)
    if report.results[0].ok:
        _keep_sighting(engine, case, finding, again)
    if again:
        outcome["episode"] = "new"
    log_event(outcome["outcome"], outcome)
    message = _notification(finding, case, again, block, blocking, report, outcome["outcome"])
    if message is not None:
        notify(engine.aws, topic_arn, *message)
    return outcome


def _not_to_contain(
    finding: Finding,
    threshold: float | None,
    own_account: str | None,
    own_region: str | None,
    members: bool = False,
) -> str | None:
    """Why the finding is not acted on (defence in depth behind the EventBridge rule), or None."""
    if threshold is None:
        return "auto-containment is off (no severity threshold is set)"
    if finding.severity < threshold:
        return f"severity {finding.severity:g} is below the threshold {threshold:g}"
    if finding.sample:
        return "GuardDuty sample finding"
    if finding.archived:
        return "the finding is archived"
    if not ACCOUNT.fullmatch(finding.account_id):
        return f"the finding's account {finding.account_id[:40]!r} is not an account id"
    if own_account and finding.account_id != own_account and not members:
        return (
            f"the finding is in account {finding.account_id}; this function contains instances of "
            f"{own_account} only (MemberRoleName reaches member accounts)"
        )
    if own_region and finding.region != own_region:
        return f"the finding is in {finding.region}; this function works in {own_region}"
    return None


def _options(
    finding: Finding,
    blocking: bool,
    revoke_sessions: bool,
    forensic_group: str | None,
    forensic_group_owner: str | None,
) -> Options:
    return Options(
        revoke_sessions=revoke_sessions,
        forensic_group=forensic_group or "",
        forensic_group_owner=forensic_group_owner or "",
        block_ips=finding.remote.cidrs if blocking else (),
        # an unsafe address is left out with a note: the instance is contained regardless
        block_ips_skip_unsafe=True,
    )


def _engine_for(engine: Engine, finding: Finding, member_role: str) -> tuple[Engine, str]:
    """The engine and the instance to contain: the function's own, or (``member_role``) the
    engine reaching the finding's member account through that role, and the instance's ARN."""
    if not member_role:
        return engine, finding.instance_id
    where = f"{finding.region}:{finding.account_id}"
    arn = f"arn:{engine.aws.partition()}:ec2:{where}:instance/{finding.instance_id}"
    if isinstance(engine, Outbreak) and engine.places.role_name == member_role:
        return engine, arn  # the function's own engine reaches members already (and its external id)
    places = Places(engine.aws, role_name=member_role)
    reaching = Outbreak(
        engine.aws,
        engine.store,
        concurrency=engine.concurrency,
        evidence_bucket=engine.evidence_bucket,
        places=places,
    )
    return reaching, arn


def _current_hold(engine: Engine, finding: Finding, member: bool) -> Hold | None:
    try:
        if member:
            return engine.store.at(Place(finding.account_id, finding.region)).get(finding.instance_id)
        return engine.store.get(finding.instance_id)
    except AwsError:
        return None  # no table yet: the engine creates it, and nothing is held


def _renewal(engine: Engine, finding: Finding, case: str, before: Hold | None) -> tuple[bool, str]:
    """Whether to contain the instance, and why it is contained again ("" when this is not a new
    episode). A finding that contained the instance before, released by a responder since, contains
    it again only when it shows new activity."""
    if before is None:
        return True, ""
    try:
        seen = engine.store.finding_sighting(case, finding.instance_id)
    except AwsError as error:
        seen = None  # then a released hold is not contained again: growth cannot be shown
        log.warning("could not read the count of finding %s: %s", finding.finding_id, error)
    if before.status is not HoldStatus.RELEASED or (before.case_id != case and seen is None):
        return True, ""
    return new_activity(finding, before, seen)


def _result_outcome(report: RunReport, held_before: bool, again: str) -> dict[str, Any]:
    """The outcome and reason the isolate's result gives."""
    result = report.results[0]
    if result.ok:
        return {
            "outcome": Handled.ALREADY_HELD if held_before else Handled.CONTAINED,
            "reason": f"{again}; {result.detail}" if again else result.detail,
        }
    if result.error_code == "HeldByOtherCase":
        return {"outcome": Handled.ALREADY_HELD, "reason": result.detail}
    return {"outcome": Handled.FAILED, "reason": f"{result.error_code}: {result.detail}"}


def _keep_sighting(engine: Engine, case: str, finding: Finding, again: str) -> None:
    try:
        engine.store.keep_finding_sighting(
            case,
            finding.instance_id,
            finding.finding_id,
            finding.updated_at,
            finding.count,
            replace=bool(again),
        )
    except Ec2irError as error:
        log.warning("could not record the count of finding %s: %s", finding.finding_id, error)


def _notification(
    finding: Finding,
    case: str,
    again: str,
    block: BlockSetting,
    blocking: bool,
    report: RunReport,
    outcome: Handled,
) -> tuple[str, str] | None:
    """The notification's subject and message, or None when there is nothing new to say."""
    about_acls = acl_notes(report.notes, finding)
    # A finding sent again for an instance this case holds changes nothing, unless it names new
    # addresses to block (or their blocks failed): then the engine's notes say so, and so do we.
    blocked_more = (
        outcome is Handled.ALREADY_HELD
        and report.results[0].ok
        and blocking
        and report.blocks is not None
        and report.blocks.changed()
    )
    if outcome is Handled.ALREADY_HELD and not blocked_more:
        return None
    verb = "contained" if outcome is Handled.CONTAINED else "could NOT fully contain"
    target = f"{finding.instance_id} again" if again else finding.instance_id
    subject = f"ec2ir {verb} {target} (GuardDuty {finding.severity:g})"
    if blocked_more:
        subject = f"ec2ir blocked addresses for {finding.instance_id} (GuardDuty {finding.severity:g})"
    moved = {f"  note: {note}" for note in about_acls}
    message = "\n".join(
        [
            f"GuardDuty finding {printable(finding.finding_id)}: {printable(finding.finding_type)}",
            printable(finding.title),
            f"severity {finding.severity:g}, account {finding.account_id}, {finding.region}",
            *([f"Contained again under a new episode of case {case}: {again}"] if again else []),
            *block_lines(finding, block, blocking, report.blocks, about_acls),
            "",
            *(line for line in report_lines(report) if line not in moved),
        ]
    )
    return subject, message
