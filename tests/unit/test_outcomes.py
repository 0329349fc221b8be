"""A step's outcome: typed in code, and the very text the journal, JSON and terminal always held."""

from __future__ import annotations

import pytest

from ec2ir.core.outcomes import Outcome, StepStatus

# The text each status has always been written as: existing tables hold it, so it never changes.
WRITTEN = [
    (Outcome.done("3 ENI(s) isolated"), "done: 3 ENI(s) isolated"),
    (
        Outcome.failed("ec2:ModifyNetworkInterfaceAttribute: denied"),
        "FAILED: ec2:ModifyNetworkInterfaceAttribute: denied",
    ),
    (Outcome.skipped("nothing was recorded"), "skipped: nothing was recorded"),
    (Outcome.not_collected("not managed by SSM"), "not collected: not managed by SSM"),
    (Outcome.not_started("the run was interrupted"), "not started: the run was interrupted"),
    (
        Outcome.other("not done (the network step failed): restored eni-1"),
        "not done (the network step failed): restored eni-1",
    ),
]


@pytest.mark.parametrize(("outcome", "text"), WRITTEN)
def test_each_status_is_written_as_it_always_was(outcome: Outcome, text: str) -> None:
    assert outcome.text == text
    assert str(outcome) == text


@pytest.mark.parametrize(("outcome", "text"), WRITTEN)
def test_the_text_reads_back_as_the_same_outcome_and_writes_the_same_text(
    outcome: Outcome, text: str
) -> None:
    assert Outcome.parse(text) == outcome
    assert Outcome.parse(text).text == text


def test_every_status_round_trips_through_its_text() -> None:
    for status in StepStatus:
        outcome = Outcome(status, "some detail: with a colon")
        planned = status is StepStatus.PLANNED
        assert Outcome.parse(outcome.text, planned=planned) == outcome, status
        assert Outcome.parse(outcome.text, planned=planned).text == outcome.text, status


def test_an_empty_detail_round_trips_too() -> None:
    assert Outcome.parse("done: ") == Outcome.done("")


@pytest.mark.parametrize("text", ["not done (the network step failed): x", "restored: eni-1", "", "Done: x"])
def test_text_without_a_prefix_is_other_and_kept_whole(text: str) -> None:
    assert Outcome.parse(text) == Outcome(StepStatus.OTHER, text)


def test_in_a_plan_text_without_a_prefix_is_what_the_step_would_do() -> None:
    assert Outcome.parse("would: delete vol-1", planned=True) == Outcome.planned("would: delete vol-1")
    assert Outcome.parse("done: x", planned=True) == Outcome.done("x")


def test_older_spellings_still_read() -> None:
    # a release plan's step on a terminated instance, and a failure written without its colon
    assert Outcome.parse("nothing: the instance is terminated") == Outcome.skipped(
        "the instance is terminated"
    )
    assert Outcome.parse("FAILED to attach") == Outcome.failed("to attach")


def test_only_a_failure_is_not_ok() -> None:
    assert [status for status in StepStatus if not Outcome(status).ok] == [StepStatus.FAILED]


def test_a_failure_takes_an_error_as_its_detail() -> None:
    assert Outcome.failed(ValueError("bad value")).text == "FAILED: bad value"


def test_extended_adds_to_the_detail_and_keeps_the_status() -> None:
    assert Outcome.done("1 ENI(s)").extended(" (restored)").text == "done: 1 ENI(s) (restored)"


def test_an_outcome_is_immutable() -> None:
    outcome = Outcome.done("x")
    with pytest.raises(AttributeError):
        outcome.detail = "y"  # type: ignore[misc]
