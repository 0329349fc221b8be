"""The full list of a run's snapshot ids, as one object in the evidence bucket: an adapter whose
answer is too small to hold it (CloudFormation's 4 KB, for a large fleet) names the object instead."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NamedTuple

from ec2ir.core.errors import Ec2irError
from ec2ir.engine.results import RunReport
from ec2ir.engine.runtime import Runtime
from ec2ir.evidence.bucket import EvidenceBucket
from ec2ir.evidence.s3 import account_of, as_json, split_location

log = logging.getLogger("ec2ir.engine.snapshot_list")


class SnapshotList(NamedTuple):
    """Where the list was stored (``key``, "" when it was not), and why not (``problem``, "" when
    it was stored or the run took no snapshot)."""

    key: str
    problem: str


def store_snapshot_list(rt: Runtime, report: RunReport, place: str, about: Mapping[str, str]) -> SnapshotList:
    """Store ``report``'s snapshot ids per instance under ``<case>/<place>/snapshot-ids.json``,
    with ``about`` (who asked, and why) beside them, in the engine's evidence bucket, or else the
    bucket the run's evidence went to. A run without snapshots stores nothing."""
    snapshots = {r.instance_id: r.snapshot_ids for r in report.results if r.snapshot_ids}
    if not snapshots:
        return SnapshotList("", "")
    stored_in = [
        split_location(ref.location)[0]
        for r in report.results
        for ref in r.evidence
        if ref.location.startswith("s3://")
    ]
    bucket = rt.evidence_bucket or (stored_in[0] if stored_in else "")
    if not bucket:
        return SnapshotList("", "the list of snapshot ids was not stored: no evidence bucket is known")
    case = report.case_id
    key = f"{case}/{place}/snapshot-ids.json"
    body = as_json({**about, "case_id": case, "snapshot_ids": snapshots})
    try:
        EvidenceBucket(rt.evidence_aws, bucket, account_of(report.actor)).put(
            key, body, "snapshot-ids", "application/json", {"ec2ir:case": case}
        )
    except Ec2irError as error:
        log.warning("could not store the snapshot list in s3://%s/%s: %s", bucket, key, error)
        return SnapshotList("", f"the list of snapshot ids could not be stored in s3://{bucket}: {error}")
    return SnapshotList(key, "")
