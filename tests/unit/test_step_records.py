"""Each step's record, as the hold stores it: what capture writes is read back unchanged, and what
ec2ir never writes is refused before any step acts on it."""

from __future__ import annotations

import pytest

from ec2ir.containment.steps import STEPS, revoke_policy_name
from ec2ir.core.errors import OriginalsTampered
from ec2ir.core.models import Hold, HoldStatus
from ec2ir.engine.holds import check_originals
from ec2ir.evidence.provenance import Provenance

INSTANCE = "i-0123456789abcdef0"
# One record of each step, as capture writes it (and as DynamoDB gives it back, numbers made int).
AS_CAPTURED: dict[str, dict[str, object]] = {
    "protect": {
        "disable_api_termination": False,
        "shutdown_behavior": "terminate",
        "delete_on_termination": {"/dev/xvda": True, "/dev/sdf": False},
    },
    "autoscaling": {"group": "web-asg"},
    "network": {"originals": {"eni-1": ["sg-1", "sg-2"]}},
    "load-balancers": {
        "target_groups": [{"arn": "arn:aws:elasticloadbalancing:tg/web", "port": 80}],
        "classic": ["legacy"],
    },
    "credentials": {"association_id": "iip-assoc-1", "profile_arn": "arn:aws:iam::1:instance-profile/app"},
    "metadata": {
        "options": {"HttpEndpoint": "enabled", "HttpTokens": "required", "HttpPutResponseHopLimit": 2}
    },
    "revoke-sessions": {
        "policy": revoke_policy_name("IR-1"),
        "issued_before": "2026-01-01T00:00:00.000+00:00",
        "roles": [{"role": "app-role", "pre_existing": False}],
    },
    "tags": {
        "previous": {"ec2ir:case": None, "ec2ir:isolated-at": "2025-12-31T00:00:00.000+00:00"},
        "isolated_at": "2026-01-01T00:00:00.000+00:00",
    },
}
STEP = {step.name: step for step in STEPS}


@pytest.mark.parametrize("name", sorted(AS_CAPTURED))
def test_a_record_as_captured_reads_back_unchanged(name: str) -> None:
    assert STEP[name].parsed(INSTANCE, AS_CAPTURED[name]) == AS_CAPTURED[name]  # type: ignore[attr-defined]


def test_a_tags_record_from_before_isolated_at_was_recorded_still_reads() -> None:
    old = {"previous": {"ec2ir:case": None}}
    assert STEP["tags"].parsed(INSTANCE, old) == old  # type: ignore[attr-defined]


# (step, record as rewritten in the state table, what the refusal says)
MALFORMED = [
    ("tags", "x", "not a map"),
    ("tags", {"previous": {"Name": None}}, "previous may name only ec2ir:case, ec2ir:isolated-at"),
    ("tags", {"previous": {"ec2ir:case": 5}}, "previous is a int, not a string"),
    ("metadata", {"options": {"HttpEndpoint": "enabled", "DryRun": True}}, "options may name only"),
    ("metadata", {"options": {"HttpPutResponseHopLimit": "64"}}, "HttpPutResponseHopLimit is a str"),
    ("revoke-sessions", {**AS_CAPTURED["revoke-sessions"], "policy": "AdminAccess"}, "not one of ec2ir's"),
    ("revoke-sessions", {**AS_CAPTURED["revoke-sessions"], "roles": "app-role"}, "roles is not a list"),
    ("protect", {**AS_CAPTURED["protect"], "disable_api_termination": 1}, "is a int, not true or false"),
    ("autoscaling", {}, "group is missing, not a string"),
    ("load-balancers", {"target_groups": [{"arn": "a", "port": True}], "classic": []}, "port is a bool"),
    ("credentials", {"association_id": "iip-assoc-1"}, "profile_arn is missing"),
    ("network", {"originals": {"eni-1": "sg-1"}}, "eni-1 is not a list"),
]


@pytest.mark.parametrize(("name", "stored", "said"), MALFORMED)
def test_a_record_ec2ir_never_writes_is_refused_naming_the_instance_and_the_step(
    name: str, stored: object, said: str
) -> None:
    with pytest.raises(OriginalsTampered) as refused:
        STEP[name].check(INSTANCE, stored)  # type: ignore[arg-type]
    assert refused.value.message.startswith(f"{INSTANCE}: its {name} record is malformed: ")
    assert said in refused.value.message
    assert refused.value.hint.startswith("nothing was changed")


def test_release_refuses_a_malformed_record_even_while_the_journal_cannot_prove_it_yet() -> None:
    # An isolate that has not finished its journal proves nothing yet, so its records are only
    # warned about: the record's own shape is all that stands between it and the undo.
    hold = Hold(
        INSTANCE,
        "IR-1",
        HoldStatus.ISOLATED,
        originals={"eni-1": ("sg-1",)},
        recorded_at="2026-01-01T00:00:00.000+00:00",
        recorded_by="tester",
        steps={"tags": {"previous": {"Name": None, "Owner": None}}},
    )
    unproven = Provenance(proofs={}, own_groups=frozenset(), group_vpcs={})

    with pytest.raises(OriginalsTampered, match="its tags record is malformed"):
        check_originals(hold, unproven)
