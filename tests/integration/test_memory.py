"""Memory acquisition (``--memory``) against the corrected emulator: the SSM command, the evidence
it yields, the instances it cannot reach, and the deadline after which isolation goes ahead."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ec2ir.aws.session import Aws
from ec2ir.containment.steps import Options
from ec2ir.core.models import EvidenceRef, HoldStatus
from ec2ir.engine.facade import Engine
from ec2ir.evidence.bucket import EvidenceBucket
from ec2ir.evidence.collect import BUCKET_CREATION, EVIDENCE_PERMISSIONS
from ec2ir.evidence.memory import (
    AVML_RELEASES,
    AVML_VERSION,
    GRACE,
    MEMORY_PERMISSIONS,
    NOT_MANAGED,
    acquire,
    parse_report,
    script,
)
from ec2ir.evidence.s3 import S3_ACTIONS, split_location
from tests.support.faults import Answer, answer
from tests.support.fleets import Fleet
from tests.support.memory import ACCOUNT, CASE, FAKE_AVML

pytestmark = pytest.mark.evidence  # about evidence: its runs collect it

BUCKET = "ec2ir-evidence-memory-test"
FAST = 0.05  # first poll, so that tests do not wait a second for the emulator's instant answer
LINUX_AMI = "ami-760aaa0f"  # Amazon Linux in moto's catalogue (the fleet's usual AMI is Windows)


class SsmRecorder:
    """Every SSM and S3 call made through one Aws, as (IAM action, parameters)."""

    def __init__(self, aws: Aws) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        for service in ("ssm", "s3"):
            aws.client(service).meta.events.register(
                "before-parameter-build",
                lambda model, params, service=service, **_: self.calls.append(
                    (f"{service}:{S3_ACTIONS.get(model.name, model.name)}", dict(params))
                ),
            )

    def named(self, action: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == action]


def managed(fleet: Fleet, vpc: str, name: str = "ssm") -> str:
    """A Linux instance with an instance profile associated: the emulator's rule for SSM-managed."""
    iam = fleet.aws.client("iam")
    iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}))
    profile = iam.create_instance_profile(InstanceProfileName=f"{name}-profile")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName=f"{name}-profile", RoleName=f"{name}-role")
    instance = fleet.instance(vpc, [fleet.group(vpc, f"{name}-web")], image_id=LINUX_AMI)
    fleet.ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": profile["Arn"]}, InstanceId=instance)
    return instance


def bucket_for(aws: Aws) -> EvidenceBucket:
    return EvidenceBucket(aws, BUCKET, ACCOUNT)


def stays_in_progress(aws: Aws, instance_id: str) -> Answer:
    """GetCommandInvocation answers InProgress for ever: AVML on a large instance, say."""
    return answer(
        aws,
        Answer(
            "ssm",
            "GetCommandInvocation",
            {
                "CommandId": "00000000-0000-0000-0000-000000000000",
                "InstanceId": instance_id,
                "DocumentName": "AWS-RunShellScript",
                "PluginName": "aws:runShellScript",
                "ResponseCode": -1,
                "Status": "InProgress",
                "StatusDetails": "InProgress",
                "StandardOutputContent": "",
                "StandardErrorContent": "",
            },
        ),
    )


def test_the_ssm_command_is_sent_with_the_expected_document_and_parameters(aws: Aws, fleet: Fleet) -> None:
    instance = managed(fleet, fleet.vpc(1))
    recorder = SsmRecorder(aws)

    outcomes = acquire(aws, bucket_for(aws), CASE, [instance], timeout=45, first_poll=FAST)

    assert outcomes[instance].result.text.startswith("done: "), outcomes[instance].result.text
    sent = recorder.named("ssm:SendCommand")
    assert len(sent) == 1
    params = sent[0]
    assert params["DocumentName"] == "AWS-RunShellScript"
    assert params["InstanceIds"] == [instance]
    assert params["TimeoutSeconds"] == 45
    assert set(params["Parameters"]) == {"commands", "executionTimeout"}
    assert params["Parameters"]["executionTimeout"] == ["45"]
    assert "ec2ir" in params["Comment"] and CASE in params["Comment"]
    lines = params["Parameters"]["commands"]
    text = "\n".join(lines)
    # AVML at a pinned release, verified against a pinned digest before it may run
    assert f"{AVML_RELEASES}/{AVML_VERSION}/$ASSET" in text
    assert text.index('[ "$GOT" = "$PIN" ]') < text.index("chmod 700")
    assert "refusing to run an unverified binary" in text
    assert " acquire --compress " in text and 'sha256sum "$IMAGE"' in text
    upload = next(line for line in lines if " -T " in line)
    url = upload.split("'")[1]
    assert url.startswith(f"{aws.settings.endpoint_url}/{BUCKET}/{CASE}/{instance}/")
    assert "/memory.lime?" in url and "X-Amz-Signature=" in url and "X-Amz-Expires=" in url
    assert "curl --fail" in upload and "-X PUT" in upload
    assert lines[-1] == 'say "sha256=$SUM size=$SIZE version=$VERSION"'
    # and that is what SSM holds: the emulator's command history agrees
    listed = aws.client("ssm").list_commands(InstanceId=instance)["Commands"]
    assert [(c["DocumentName"], c["InstanceIds"], c["Parameters"]) for c in listed] == [
        ("AWS-RunShellScript", [instance], params["Parameters"])
    ]


def test_a_managed_instance_yields_a_memory_ref_whose_hash_matches_the_object_in_s3(
    aws: Aws, fleet: Fleet
) -> None:
    instance = managed(fleet, fleet.vpc(1))

    outcome = acquire(aws, bucket_for(aws), CASE, [instance], timeout=30, first_poll=FAST)[instance]

    ref = outcome.ref
    assert ref is not None and outcome.result.text.startswith(f"done: sha256 {ref.sha256}"), outcome
    assert ref.kind == "memory"
    bucket, key = split_location(ref.location)
    assert bucket == BUCKET and key.startswith(f"{CASE}/{instance}/") and key.endswith("/memory.lime")
    stored = aws.client("s3").get_object(Bucket=bucket, Key=key, VersionId=ref.version_id)
    body = stored["Body"].read()
    assert hashlib.sha256(body).hexdigest() == ref.sha256 and len(body) == ref.size
    assert ref.version_id and ref.version_id == stored["VersionId"]  # the bucket keeps versions
    assert ref.details["hashed_on"] == "instance" and ref.details["command_id"]
    assert outcome.request_ids  # for the journal


def test_an_unmanaged_instance_is_not_collected_and_the_others_still_are(aws: Aws, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    reachable = managed(fleet, vpc)
    unmanaged = fleet.instance(vpc, [fleet.group(vpc, "plain")])
    stopped = managed(fleet, vpc, "stopped")
    fleet.ec2.stop_instances(InstanceIds=[stopped])

    outcomes = acquire(
        aws, bucket_for(aws), CASE, [unmanaged, reachable, stopped], timeout=30, first_poll=FAST
    )

    assert list(outcomes) == [unmanaged, reachable, stopped]
    assert outcomes[unmanaged].result.text == f"not collected: {NOT_MANAGED}"
    assert outcomes[unmanaged].ref is None
    assert outcomes[stopped].result.text.startswith("not collected: not managed by SSM")
    assert "ConnectionLost" in outcomes[stopped].result.text
    assert outcomes[reachable].result.text.startswith("done: ")
    ssm = aws.client("ssm")
    assert ssm.list_commands(InstanceId=unmanaged)["Commands"] == []


def test_an_aws_error_is_recorded_as_not_collected_never_raised(aws: Aws, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    first, second = managed(fleet, vpc, "a"), managed(fleet, vpc, "b")
    denied = {"__type": "AccessDeniedException", "message": "not authorized to perform ssm:SendCommand"}
    answer(aws, Answer("ssm", "SendCommand", denied, status=400, times=1))

    outcomes = acquire(aws, bucket_for(aws), CASE, [first, second], timeout=30, first_poll=FAST)

    results = sorted(outcome.result.text for outcome in outcomes.values())
    assert results[0].startswith("done: ")
    assert results[1] == (
        "not collected: missing IAM permission ssm:SendCommand (AccessDeniedException); "
        "grant it to the caller (see README, IAM permissions)"
    )


def test_when_ssm_cannot_be_asked_every_instance_is_not_collected(aws: Aws, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    ids = [managed(fleet, vpc, "a"), fleet.instance(vpc, [fleet.group(vpc, "plain")])]
    denied = {"__type": "AccessDeniedException", "message": "no"}
    answer(aws, Answer("ssm", "DescribeInstanceInformation", denied, status=400))

    outcomes = acquire(aws, bucket_for(aws), CASE, ids, timeout=30, first_poll=FAST)

    assert set(outcomes) == set(ids)
    assert all("ssm:DescribeInstanceInformation" in o.result.text for o in outcomes.values())
    assert all(o.result.text.startswith("not collected: ") for o in outcomes.values())


class SteppedClock:
    """Time that passes only when the run sleeps: the deadline is tested by arithmetic, not by
    racing a busy machine's scheduler."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
        time.sleep(0)  # let the other threads run, as a real sleep would


def test_the_timeout_path_cancels_the_command_and_returns_in_time(aws: Aws, fleet: Fleet) -> None:
    instance = managed(fleet, fleet.vpc(1))
    recorder = SsmRecorder(aws)
    polled = stays_in_progress(aws, instance)
    clock = SteppedClock()
    started = clock()

    outcome = acquire(
        aws, bucket_for(aws), CASE, [instance], timeout=1, first_poll=0.2, clock=clock, sleep=clock.sleep
    )[instance]

    assert outcome.result.text.startswith("not collected: timed out after 1 s; isolation went ahead"), outcome
    assert outcome.ref is None
    assert clock() - started == pytest.approx(1.0)  # it polled up to the deadline, and no further
    assert polled.answered >= 3  # 0.2 s, then 0.4 s, then the last look at the deadline itself
    assert len(recorder.named("ssm:SendCommand")) == 1
    cancels = recorder.named("ssm:CancelCommand")
    assert len(cancels) == 1 and cancels[0]["InstanceIds"] == [instance]
    assert "cancelled" in outcome.result.text


def test_a_call_that_hangs_past_the_deadline_does_not_hold_containment(aws: Aws, fleet: Fleet) -> None:
    instance = managed(fleet, fleet.vpc(1))
    answered, hanging = threading.Event(), threading.Event()

    def hang(**_: Any) -> None:
        hanging.set()
        answered.wait(120)  # an endpoint that does not answer until acquire() has returned
        hanging.clear()

    aws.client("ssm").meta.events.register("before-send.ssm.SendCommand", hang)
    clock = SteppedClock()

    def wait_on(condition: threading.Condition, seconds: float) -> None:
        # Once the call is in flight, the deadline passes on the run's clock. Until then, wait as
        # the run would (releasing the condition's lock), for news only.
        for _ in range(3000):  # at most 30 s for the call to start
            if hanging.is_set():
                break
            condition.wait(0.01)
        clock.sleep(seconds)

    try:
        outcome = acquire(
            aws,
            bucket_for(aws),
            CASE,
            [instance],
            timeout=1,
            first_poll=FAST,
            clock=clock,
            sleep=clock.sleep,
            wait_on=wait_on,
        )[instance]
        still_hanging = hanging.is_set()  # acquire returned while the call had not answered
    finally:
        answered.set()

    assert still_hanging
    assert outcome.result.text.startswith("not collected: timed out after 1 s; isolation went ahead")


def test_the_memory_timeout_path_still_isolates_the_instance(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = managed(fleet, vpc)
    polled = stays_in_progress(engine.evidence_aws, instance)  # evidence calls use their own clients

    started = time.monotonic()
    report = engine.isolate([instance], "IR-1", options=Options(memory=True, memory_timeout=1))
    elapsed = time.monotonic() - started

    result = report.results[0]
    assert result.steps["memory"].startswith("not collected: timed out after 1 s"), result.steps
    assert polled.answered <= 1  # the first look comes after a second: at the deadline at most
    isolation = report.groups[vpc].isolation_group_id
    assert set(fleet.eni_groups([instance]).values()) == {(isolation,)}
    hold = engine.store.get(instance)
    assert hold is not None and hold.status is HoldStatus.ISOLATED
    assert result.ok, result.steps
    assert elapsed < 1 + GRACE + 30, elapsed  # the memory wait is bounded; the rest is containment


def test_memory_through_isolate_is_journaled_and_verified(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = managed(fleet, vpc)

    report = engine.isolate([instance], "IR-2", options=Options(memory=True, memory_timeout=60))

    result = report.results[0]
    assert result.steps["memory"].startswith("done: sha256 "), result.steps
    refs = [ref for entry in engine.store.journal("IR-2") for ref in entry.evidence if ref.kind == "memory"]
    assert len(refs) == 1 and refs[0].details["hashed_on"] == "instance"
    findings = [finding for finding in engine.verify("IR-2") if finding.ref.kind == "memory"]
    assert len(findings) == 1 and findings[0].ok, findings


def test_every_call_acquire_makes_is_in_the_declared_permissions(aws: Aws, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    ids = [managed(fleet, vpc), fleet.instance(vpc, [fleet.group(vpc, "plain")])]
    slow = managed(fleet, vpc, "slow")
    recorder = SsmRecorder(aws)
    acquire(aws, bucket_for(aws), CASE, ids, timeout=30, first_poll=FAST)
    stays_in_progress(aws, slow)
    acquire(aws, bucket_for(aws), CASE, [slow], timeout=1, first_poll=0.2)

    bucket_actions = EVIDENCE_PERMISSIONS["evidence bucket"] + EVIDENCE_PERMISSIONS[BUCKET_CREATION]
    declared = set(MEMORY_PERMISSIONS) | set(bucket_actions)
    made = {action for action, _ in recorder.calls}
    assert {"ssm:SendCommand", "ssm:CancelCommand", "ssm:GetCommandInvocation"} <= made
    assert made <= declared, made - declared


def test_the_report_line_is_parsed_and_an_error_keeps_its_words() -> None:
    assert parse_report("noise\nEC2IR-MEMORY sha256=ab size=3 version=v1\n") == {
        "sha256": "ab",
        "size": "3",
        "version": "v1",
    }
    assert parse_report("EC2IR-MEMORY error=avml failed (exit 1): no source") == {
        "error": "avml failed (exit 1): no source"
    }
    assert parse_report("nothing here") == {}


FAKE_CURL = """#!/bin/sh
OUT=; UP=; HEADERS=
while [ $# -gt 0 ]; do
  case "$1" in
    -o) OUT=$2; shift ;;
    -T) UP=$2; shift ;;
    -D) HEADERS=$2; shift ;;
    --max-time|--retry|-X) shift ;;
  esac
  shift
done
if [ -n "$UP" ]; then
  cp "$UP" "$UPLOADED"; printf 'HTTP/1.1 200 OK\\r\\nx-amz-version-id: v42\\r\\n\\r\\n' > "$HEADERS"
else
  cp "$FAKE_AVML" "$OUT"
fi
"""


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0 or shutil.which("sh") is None,
    reason="runs the script as root under sh, with curl and AVML faked",
)
@pytest.mark.e2e
@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_the_script_itself_acquires_hashes_uploads_and_cleans_up(tmp_path: Path, pinned: bool) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    (tmp_path / "avml").write_text(FAKE_AVML)
    (tools / "curl").write_text(FAKE_CURL)
    (tools / "curl").chmod(0o755)
    digest = hashlib.sha256(FAKE_AVML.encode()).hexdigest() if pinned else ""
    lines = script(
        CASE, "https://b.s3.amazonaws.com/k?X-Amz-Signature=0", {"x86_64": digest, "aarch64": digest}
    )
    uploaded = tmp_path / "uploaded"
    env = {
        **os.environ,
        "PATH": f"{tools}:{os.environ['PATH']}",
        "FAKE_AVML": str(tmp_path / "avml"),
        "UPLOADED": str(uploaded),
    }

    done = subprocess.run(["sh", "-c", "\n".join(lines)], env=env, capture_output=True, text=True, timeout=60)

    report = parse_report(done.stdout)
    if not pinned:
        assert done.returncode == 1 and "refusing to run an unverified binary" in report["error"]
        assert not uploaded.exists()
        return
    assert done.returncode == 0, (done.stdout, done.stderr)
    body = uploaded.read_bytes()
    assert report == {"sha256": hashlib.sha256(body).hexdigest(), "size": str(len(body)), "version": "v42"}
    leftovers = [p for d in ("/mnt", "/var/tmp", "/tmp", "/root") for p in Path(d).glob("ec2ir-memory.*")]
    assert leftovers == []


def ctrl_c_once_memory_is_asked_for(engine: Engine) -> None:
    """The responder presses Ctrl-C while AVML runs (the longest wait of a run)."""
    engine.evidence_aws.client("ssm").meta.events.register(
        "after-call.ssm.SendCommand", lambda **_: engine.interrupt.set()
    )


def journaled_memory(engine: Engine, case: str) -> list[EvidenceRef]:
    return [ref for entry in engine.store.journal(case) for ref in entry.evidence if ref.kind == "memory"]


def test_ctrl_c_during_memory_isolates_the_instance_whose_image_was_taken_and_journals_it(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    instance = managed(fleet, vpc)
    ctrl_c_once_memory_is_asked_for(engine)

    report = engine.isolate([instance], "IR-M", options=Options(memory=True, memory_timeout=60))

    [result] = report.results
    assert engine.interrupt.is_set() and result.steps["memory"].startswith("done: sha256 ")
    assert len(journaled_memory(engine, "IR-M")) == 1  # the image is in the chain of custody
    isolation = report.groups[vpc].isolation_group_id
    assert set(fleet.eni_groups([instance]).values()) == {(isolation,)}  # its run had begun: cut
    assert result.steps["snapshots"] == "not started: the run was interrupted"


def test_ctrl_c_during_memory_collect_journals_the_image_and_starts_nothing_more(
    engine: Engine, fleet: Fleet
) -> None:
    instance = managed(fleet, fleet.vpc(1))
    ctrl_c_once_memory_is_asked_for(engine)
    snapshots = len(fleet.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])

    [result] = engine.collect([instance], "IR-C", options=Options(memory=True, memory_timeout=60)).results

    assert result.interrupted and result.steps["memory"].startswith("done: sha256 ")
    assert len(journaled_memory(engine, "IR-C")) == 1
    assert result.steps["snapshots"] == "not started: the run was interrupted"
    assert len(fleet.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]) == snapshots  # none taken
