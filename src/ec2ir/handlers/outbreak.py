"""The outbreak stack's functions (outbreak.yaml): one shard of a case per invocation, and the case's
summary once every shard has ended.

**shard** contains (or releases) the instances of one place, an account and a Region, with the
engine of ``ec2ir.engine.outbreak``: the function runs in the security (home) account, acts in a
member account through its role ``EC2IR_MEMBER_ROLE_NAME`` (``EC2IR_EXTERNAL_ID``), and keeps every
hold in the home account's state table, keyed by the place. Its event is one item of the state
machine's Distributed Map, and anyone who can start the state machine writes it, so every field is
checked before any call: the case id, the action (an allow-list), the place, every ARN (all in that
one place), and each option (an allow-list per action, each of its type).

What it answers is a compact, JSON-serialisable summary of the shard (``SHARD_SCHEMA``): the place,
each instance's ok, error code and printable detail, and the counts. Step Functions refuses a task
result over 256 KiB (States.DataLimitExceeded), so the answer is cut to ``RESULT_LIMIT`` bytes,
details first; the state table's journal keeps everything the engine did.

**Whether a failure raises.** A shard raises only what a retry can cure: the member account's role
could not be assumed because STS throttled or failed (``ShardTransient``, retried by the state
machine with backoff, then caught and recorded like any failure). Everything else is an answer, not
an exception: a refused event, a role that cannot be assumed (AccessDenied: it does not exist, or
its trust policy does not name this function's role or the external id), and any instance the
engine could not contain. A retry would only repeat them, and delay the summary.

**summary** reads every shard's result (the Map's ResultWriter files in the stack's results bucket:
succeeded shards, failures the state machine caught, and any child execution that failed all the
same), merges them into the case summary and writes it to that bucket, under ``summaries/``. It
answers the summary's key and the counts: the summary itself can be far larger than a state's
256 KiB, and ``ec2ir ... --via stepfunctions`` reads it from the bucket.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ec2ir.aws.session import Aws, AwsSettings, translated
from ec2ir.aws.targets import parse_arn
from ec2ir.containment.steps import Options
from ec2ir.core import validate
from ec2ir.core.errors import AwsError, Ec2irError, Throttled, UsageError
from ec2ir.core.models import InstanceResult, Place
from ec2ir.core.text import printable
from ec2ir.engine.outbreak import Outbreak
from ec2ir.engine.places import Places
from ec2ir.engine.results import RunReport
from ec2ir.handlers import (
    engine_from_environment,
    log_event,
    setup_logging,
)

log = logging.getLogger("ec2ir.handlers.outbreak")

RESULTS_BUCKET_ENV = "EC2IR_RESULTS_BUCKET"
ACTIONS = ("isolate", "release")
SHARD_FIELDS = frozenset({"case_id", "action", "account", "region", "instance_arns", "options"})
# What each action may be given (all optional); any other option is refused.
OPTION_TYPES: dict[str, dict[str, type]] = {
    "isolate": {"office_cidr": str, "evidence": bool, "untrack": bool, "revoke_sessions": bool},
    "release": {"rejoin": bool},
}
REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-[0-9]+$")
# The most instances one shard takes: the CLI splits a larger place into several shards, so that
# one Lambda invocation (at most 15 minutes) contains them all.
MAX_SHARD_INSTANCES = 500
# Step Functions' limit on a task's result (and on a state's input and output) is 256 KiB; the
# shard answers well inside it.
PAYLOAD_LIMIT = 256 * 1024
RESULT_LIMIT = 200 * 1024
DETAIL_CHARS = 300
NOTE_CHARS = 300
MAX_NOTES = 20
# STS answers that a later attempt can get past; anything else about a role is permanent.
TRANSIENT_CODES = frozenset(
    {"InternalError", "InternalFailure", "ServiceUnavailable", "RequestTimeout", "IDPCommunicationError"}
)
SUMMARY_PREFIX = "summaries/"
SHARD_RESULTS_PREFIX = "shards/"
UNREACHABLE = "PlaceUnreachable"
REFUSED = "ShardRefused"
SHARD_FAILED = "ShardFailed"


class ShardTransient(Ec2irError):
    """The shard could not start for a reason a retry may cure. Lambda names the error by this
    class's name, which the state machine's Retry lists (outbreak.yaml)."""

    code = "ShardTransient"


class NoShardResult(Ec2irError):
    """An instance asked of the state machine that no shard's result names (a shard refused its
    event, or its result was lost): it failed, whatever the rest of the run did."""

    code = "NoShardResult"


@dataclass(frozen=True)
class Shard:
    """One checked shard: a place, the instances in it (ids, in order, without repeats), what to do."""

    case_id: str
    action: str
    place: Place
    instance_ids: tuple[str, ...]
    options: Mapping[str, object]


# -- the shard's event ---------------------------------------------------------------------------------


def parse_shard(event: object) -> Shard:
    """The shard an event asks for, every field checked; a ``UsageError`` names the first problem."""
    if not isinstance(event, Mapping):
        raise UsageError("the shard event is not an object")
    unknown = sorted(printable(key)[:40] for key in event if key not in SHARD_FIELDS)
    if unknown:
        raise UsageError(f"unknown field(s) in the shard event: {', '.join(unknown[:5])}")
    case_id = validate.case_id(_text(event, "case_id"))
    action = _text(event, "action")
    if action not in ACTIONS:
        raise UsageError(f"action {printable(action[:40])!r} is not one of {', '.join(ACTIONS)}")
    account, region = _text(event, "account"), _text(event, "region")
    if not validate.ACCOUNT_ID.fullmatch(account):
        raise UsageError(f"malformed account id {printable(account[:40])!r}")
    if not REGION.fullmatch(region):
        raise UsageError(f"malformed Region {printable(region[:40])!r}")
    place = Place(account, region)
    return Shard(
        case_id, action, place, _instances(event.get("instance_arns"), place), _options(event, action)
    )


def _text(event: Mapping[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str):
        raise UsageError(f"{name} must be a string")
    return value


def _instances(raw: object, place: Place) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise UsageError("instance_arns must be a non-empty list of instance ARNs")
    if len(raw) > MAX_SHARD_INSTANCES:
        raise UsageError(f"a shard takes at most {MAX_SHARD_INSTANCES} instances, not {len(raw)}")
    ids: list[str] = []
    for item in raw:
        if not isinstance(item, str):
            raise UsageError("instance_arns must hold strings only")
        arn = parse_arn(item)  # refuses a malformed one, printably
        if (arn.account, arn.region) != (place.account, place.region):
            raise UsageError(f"{printable(item)} is not in the shard's place {place}")
        ids.append(arn.instance_id)
    return tuple(dict.fromkeys(ids))


def _options(event: Mapping[str, Any], action: str) -> dict[str, object]:
    raw = event.get("options", {})
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise UsageError("options must be an object")
    allowed = OPTION_TYPES[action]
    options: dict[str, object] = {}
    for name, value in raw.items():
        if name not in allowed:
            raise UsageError(f"option {printable(str(name)[:40])!r} is not one {action} takes")
        if value is None:
            continue
        if type(value) is not allowed[name]:  # a bool is an int: exact types only
            raise UsageError(f"option {name} must be a {allowed[name].__name__}")
        options[name] = value
    if "office_cidr" in options:
        options["office_cidr"] = validate.office_cidr(str(options["office_cidr"]))
    return options


# -- running a shard -------------------------------------------------------------------------------------


OutbreakFactory = Callable[[], Outbreak]


def outbreak_from_environment(environ: Mapping[str, str] = os.environ) -> Outbreak:
    """The function's engine (its credentials, Region and state table) reaching every place: the
    member accounts through ``EC2IR_MEMBER_ROLE_NAME`` (``engine_from_environment``)."""
    return engine_from_environment(environ)


def shard(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (``ec2ir.handlers.outbreak.shard``)."""
    setup_logging()
    return handle_shard(event, outbreak_from_environment)


def handle_shard(event: object, build: OutbreakFactory) -> dict[str, Any]:
    """Run one shard; answer its summary. Raises ``ShardTransient`` only (see the module's doc)."""
    try:
        wanted = parse_shard(event)
    except UsageError as error:
        log_event("refused", {"why": str(error)})
        return refused_summary(event, str(error))
    outbreak = build()
    try:
        reached = outbreak.places.aws_at(wanted.place)
        reached.account()  # assumes the member role now, so that a refusal is the place's, once
    except Ec2irError as error:
        if _transient(error):
            raise ShardTransient(f"{wanted.place}: {error}") from error
        log_event("unreachable", {"place": str(wanted.place), "why": str(error)})
        return unreachable_summary(wanted, outbreak.places, error)
    report = _run(outbreak, wanted)
    summary = shard_summary(wanted, report)
    log_event("shard", {k: summary[k] for k in ("account", "region", "case_id", "action", "counts")})
    return summary


def _transient(error: Ec2irError) -> bool:
    if isinstance(error, Throttled):
        return True
    if isinstance(error, AwsError):
        return error.code in TRANSIENT_CODES
    return str(error).startswith("cannot reach the AWS endpoint")


def _run(outbreak: Outbreak, wanted: Shard) -> RunReport:
    home = outbreak.places.home_place()
    partition = outbreak.aws.partition()
    arns = [
        instance_id
        if wanted.place == home
        else f"arn:{partition}:ec2:{wanted.place.region}:{wanted.place.account}:instance/{instance_id}"
        for instance_id in wanted.instance_ids
    ]
    given = wanted.options
    if wanted.action == "release":
        return outbreak.release(arns, wanted.case_id, rejoin=bool(given.get("rejoin", False)))
    options = Options(
        evidence=bool(given.get("evidence", False)),
        untrack=bool(given.get("untrack", True)),
        revoke_sessions=bool(given.get("revoke_sessions", False)),
    )
    office = given.get("office_cidr")
    return outbreak.isolate(arns, wanted.case_id, str(office) if office else None, options=options)


# -- the shard's answer ----------------------------------------------------------------------------------


def _result(instance_id: str, ok: bool, error_code: str, detail: str) -> dict[str, Any]:
    return {
        "instance_id": printable(instance_id)[:40],
        "ok": ok,
        "error_code": printable(error_code)[:80],
        "detail": printable(detail)[:DETAIL_CHARS],
    }


def _summary(
    case_id: str, action: str, place: Place | None, results: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    failed = sum(1 for r in results if not r["ok"])
    return {
        "account": place.account if place else "",
        "region": place.region if place else "",
        "case_id": case_id,
        "action": action,
        "ok": failed == 0 and not extra.get("error"),
        "counts": {"instances": len(results), "ok": len(results) - failed, "failed": failed},
        "results": results,
        "notes": [],
        "actor": "",
        "error": "",
        "trimmed": False,
    } | extra


def shard_summary(wanted: Shard, report: RunReport) -> dict[str, Any]:
    results = [_result(r.instance_id, r.ok, r.error_code, r.detail) for r in report.results]
    notes = [printable(note)[:NOTE_CHARS] for note in report.notes[:MAX_NOTES]]
    summary = _summary(
        wanted.case_id, wanted.action, wanted.place, results, notes=notes, actor=printable(report.actor)[:200]
    )
    return fit(summary)


def unreachable_summary(wanted: Shard, places: Places, error: Ec2irError) -> dict[str, Any]:
    """Every instance of a place the function cannot act in, failed with the place and why."""
    how = f"through {places.role_arn(wanted.place.account)}" if places.role_name else "(no member role)"
    why = f"cannot act in {wanted.place} {how}: {error}"
    results = [_result(i, False, UNREACHABLE, why) for i in wanted.instance_ids]
    return fit(_summary(wanted.case_id, wanted.action, wanted.place, results, error=printable(why)[:1000]))


def refused_summary(event: object, why: str) -> dict[str, Any]:
    """A refused event's answer: what of it can be shown (printable, cut short), and why."""
    fields = event if isinstance(event, Mapping) else {}
    shown = {key: printable(fields.get(key, ""))[:64] for key in ("case_id", "action", "account", "region")}
    place = Place(shown["account"], shown["region"]) if shown["account"] or shown["region"] else None
    return _summary(shown["case_id"], shown["action"], place, [], error=printable(f"{REFUSED}: {why}")[:1000])


def fit(summary: dict[str, Any], limit: int = RESULT_LIMIT) -> dict[str, Any]:
    """``summary`` within ``limit`` bytes of JSON: the details of instances that succeeded go first,
    then the notes, then the failures' details are cut short. Ids, codes and counts always stay."""
    if _size(summary) <= limit:
        return summary
    summary = summary | {"trimmed": True}
    summary["results"] = [r | {"detail": ""} if r["ok"] else r for r in summary["results"]]
    if _size(summary) > limit:
        summary["notes"] = []
    if _size(summary) > limit:
        summary["results"] = [r | {"detail": r["detail"][:60]} for r in summary["results"]]
    return summary


def _size(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


# -- the case's summary ------------------------------------------------------------------------------------


def summary(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (``ec2ir.handlers.outbreak.summary``)."""
    setup_logging()
    bucket = os.environ.get(RESULTS_BUCKET_ENV, "").strip()
    if not bucket:
        raise UsageError(f"{RESULTS_BUCKET_ENV} is not set", "the stack sets it to its results bucket")
    aws = Aws(AwsSettings(region=os.environ.get("AWS_REGION") or None))
    return handle_summary(event, aws, bucket)


def handle_summary(event: Mapping[str, Any], aws: Aws, bucket: str) -> dict[str, Any]:
    """Merge every shard's result and write the case summary; answer where it is, and the counts."""
    case_id = validate.case_id(str(event.get("case_id", "")))
    action = str(event.get("action", ""))
    if action not in ACTIONS:
        raise UsageError(f"action {printable(action[:40])!r} is not one of {', '.join(ACTIONS)}")
    execution = str(event.get("execution", ""))
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", execution):
        raise UsageError("malformed execution name")
    shards = [*_inline_results(event.get("shards")), *_written_results(aws, bucket, event.get("results"))]
    merged = merge(case_id, action, execution, shards)
    key = f"{SUMMARY_PREFIX}{case_id}/{execution}.json"
    with translated("s3", "PutObject"):
        aws.client("s3").put_object(
            Bucket=bucket,
            Key=key,
            Body=json.dumps(merged, separators=(",", ":")).encode(),
            ContentType="application/json",
            ExpectedBucketOwner=aws.account(),
        )
    answer = {"bucket": bucket, "key": key, "ok": merged["ok"], "counts": merged["counts"]}
    log_event("summary", answer | {"case_id": case_id, "action": action})
    return answer


def merge(case_id: str, action: str, execution: str, shards: list[dict[str, Any]]) -> dict[str, Any]:
    """The case summary: every shard's result (failures caught by the state machine included)."""
    counts = {"shards": len(shards), "instances": 0, "ok": 0, "failed": 0, "shards_failed": 0}
    for one in shards:
        counts["instances"] += one["counts"]["instances"]
        counts["ok"] += one["counts"]["ok"]
        counts["failed"] += one["counts"]["failed"]
        counts["shards_failed"] += 0 if one["ok"] else 1
    return {
        "case_id": case_id,
        "action": action,
        "execution": execution,
        "ok": counts["shards_failed"] == 0 and counts["failed"] == 0,
        "counts": counts,
        "shards": shards,
    }


def _inline_results(raw: object) -> list[dict[str, Any]]:
    """Shard results handed over inline (a Map without a ResultWriter): each one checked."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise UsageError("shards must be a list of shard results")
    return [shard_result(item) for item in raw]


def _written_results(aws: Aws, bucket: str, raw: object) -> list[dict[str, Any]]:
    """The Distributed Map's ResultWriter files: its manifest names them. Only objects of the
    stack's own bucket under ``shards/`` are read, whatever the event names."""
    if raw is None:
        return []
    if not isinstance(raw, Mapping) or raw.get("Bucket") != bucket:
        raise UsageError("results must name the stack's results bucket")
    manifest_key = str(raw.get("Key", ""))
    if not manifest_key.startswith(SHARD_RESULTS_PREFIX) or ".." in manifest_key:
        raise UsageError(f"results must be under {SHARD_RESULTS_PREFIX}")
    manifest = _read_json(aws, bucket, manifest_key)
    files = manifest.get("ResultFiles", {}) if isinstance(manifest, Mapping) else {}
    entries: list[Any] = []
    for status in ("SUCCEEDED", "FAILED", "PENDING"):
        for written in files.get(status, []) if isinstance(files, Mapping) else []:
            key = str(written.get("Key", "")) if isinstance(written, Mapping) else ""
            if key.startswith(SHARD_RESULTS_PREFIX) and ".." not in key:
                read = _read_json(aws, bucket, key)
                entries += read if isinstance(read, list) else []
    return [child_result(entry) for entry in entries]


def _read_json(aws: Aws, bucket: str, key: str) -> Any:
    with translated("s3", "GetObject"):
        body = aws.client("s3").get_object(Bucket=bucket, Key=key, ExpectedBucketOwner=aws.account())["Body"]
        text = body.read()
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"s3://{bucket}/{printable(key)} is not JSON") from exc


def child_result(entry: object) -> dict[str, Any]:
    """One child execution of the Map, as its ResultWriter file records it: its output (a shard's
    summary, or a failure the state machine caught) or, for a child that failed all the same, a
    failure naming the instances of its input."""
    if not isinstance(entry, Mapping):
        return shard_failure({}, "Malformed", "a result entry is not an object")
    if entry.get("Status") == "SUCCEEDED":
        return shard_result(_loaded(entry.get("Output")))
    return shard_failure(
        _loaded(entry.get("Input")),
        str(entry.get("Error") or entry.get("Status") or "Unknown"),
        str(entry.get("Cause") or ""),
    )


def _loaded(text: object) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None


def shard_result(raw: object) -> dict[str, Any]:
    """A shard's answer checked and made printable; a failure the state machine caught (it carries
    ``failed``, ``error`` and ``cause``) as a failure of each instance it named."""
    if not isinstance(raw, Mapping):
        return shard_failure({}, "Malformed", "a shard result is not an object")
    if raw.get("failed") is True:
        return shard_failure(raw, str(raw.get("error") or SHARD_FAILED), str(raw.get("cause") or ""))
    results = raw.get("results")
    checked = [
        _result(
            str(r.get("instance_id", "")),
            r.get("ok") is True,
            str(r.get("error_code", "")),
            str(r.get("detail", "")),
        )
        for r in (results if isinstance(results, list) else [])
        if isinstance(r, Mapping)
    ]
    place = _place_of(raw)
    summary = _summary(
        printable(raw.get("case_id", ""))[:64],
        printable(raw.get("action", ""))[:16],
        place,
        checked,
        notes=[printable(n)[:NOTE_CHARS] for n in list(raw.get("notes") or [])[:MAX_NOTES]],
        actor=printable(raw.get("actor", ""))[:200],
        error=printable(raw.get("error", ""))[:1000],
        trimmed=raw.get("trimmed") is True,
    )
    return summary


def shard_failure(shard_input: object, error: str, cause: str) -> dict[str, Any]:
    """A shard that ended without its own answer (the state machine caught its failure): each
    instance its input named, failed with the error; never dropped."""
    given = shard_input if isinstance(shard_input, Mapping) else {}
    place = _place_of(given)
    why = printable(f"{error}: {_cause(cause)}")[:1000]
    arns = given.get("instance_arns")
    ids = []
    for arn in arns if isinstance(arns, list) else []:
        try:
            ids.append(parse_arn(str(arn)).instance_id)
        except UsageError:
            ids.append(printable(arn)[:40])
    # each instance's detail is the cause alone: its error code is the result's own
    detail = printable(_cause(cause))[:1000] or why
    results = [_result(i, False, error, detail) for i in dict.fromkeys(ids)]
    return _summary(
        printable(given.get("case_id", ""))[:64],
        printable(given.get("action", ""))[:16],
        place,
        results,
        error=why,
    )


def _cause(cause: str) -> str:
    """A Lambda error's cause is its JSON (errorMessage, errorType, stackTrace): the message only."""
    loaded = _loaded(cause)
    if isinstance(loaded, Mapping) and "errorMessage" in loaded:
        return str(loaded.get("errorMessage"))
    return cause


def _place_of(raw: Mapping[str, Any]) -> Place | None:
    account, region = str(raw.get("account", "")), str(raw.get("region", ""))
    if validate.ACCOUNT_ID.match(account) and REGION.match(region):
        return Place(account, region)
    return None


# -- the case summary as a run's report ---------------------------------------------------------------------


def report_from_summary(summary: Mapping[str, Any], caller: str = "") -> RunReport:
    """The case summary as the report of a local run: each instance's result with its place, each
    shard's notes with its place, the first actor named. Every text is made printable."""
    if not isinstance(summary, Mapping):
        raise UsageError("the case summary is not an object")
    shards = [shard_result(one) for one in summary.get("shards") or []]
    results: list[InstanceResult] = []
    notes: list[str] = []
    actor = ""
    action = printable(summary.get("action", ""))[:16]
    for one in shards:
        place = _place_of(one)
        where = str(place) if place else "an unknown place"
        results += [
            InstanceResult(r["instance_id"], action, r["ok"], r["detail"], r["error_code"], place=place)
            for r in one["results"]
        ]
        notes += [f"{where}: {note}" for note in one["notes"]]
        if one["error"] and not one["results"]:
            notes.append(f"{where}: SHARD FAILED: {one['error']}")
        if one["trimmed"]:
            notes.append(f"{where}: details cut to fit Step Functions' payload limit; the journal has them")
        actor = actor or one["actor"]
    case_id = printable(summary.get("case_id", ""))[:64]
    return RunReport(action, case_id, actor or caller, results, notes=notes)


def shard_items(arns_by_place: Mapping[Place, Sequence[str]]) -> list[dict[str, Any]]:
    """The Map's items: one per place, a place of more than ``MAX_SHARD_INSTANCES`` instances split
    into several (each its own Lambda invocation)."""
    items: list[dict[str, Any]] = []
    for place in sorted(arns_by_place):
        arns = list(dict.fromkeys(arns_by_place[place]))
        for start in range(0, len(arns), MAX_SHARD_INSTANCES):
            chunk = arns[start : start + MAX_SHARD_INSTANCES]
            items.append({"account": place.account, "region": place.region, "instance_arns": chunk})
    return items
