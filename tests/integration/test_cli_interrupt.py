"""Ctrl-C is safe and honest (issue 16, point 3).

The first SIGINT stops new instances and new steps, lets the swaps in flight finish (no ENI is
left in the allow-all group), prints the partial results and exits 130; the second exits at once,
and the next run finishes whatever was left, an ENI between its two swaps included.

Every interrupt here is sent from inside the run at a precise point, by a botocore event hook on
the run's own clients: signals reach the main thread only, so a hook (on a worker thread) calls
the handler the CLI installed, as the signal would. No test depends on timing.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest

from ec2ir.aws.session import Aws
from ec2ir.cli import interrupts as cli
from ec2ir.cli.app import main
from ec2ir.core.models import HoldStatus
from ec2ir.engine.facade import Engine
from ec2ir.store.state import StateStore
from tests.conftest import Cli
from tests.support.fleets import Fleet

CASE = "IR-INT"
SWAPS = ("ModifyNetworkInterfaceAttribute", "ModifyInstanceAttribute")


class AtFirstSwap:
    """Once, at the run's first security-group swap (sent by any client built from now on):
    ``act`` is called with that swap's groups, before the swap is sent (``when="before"``) or
    once its answer is back (``"after"``)."""

    def __init__(self, act: Callable[[list[str]], None], when: str = "before") -> None:
        self.act, self.when = act, when
        self.groups: list[str] = []  # the first swap's groups
        self.fired = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        make_client = Aws._make_client

        def hooked(aws: Aws, service: str) -> Any:
            client = make_client(aws, service)
            if service == "ec2":
                self.register(client)
            return client

        monkeypatch.setattr(Aws, "_make_client", hooked)

    def register(self, client: Any) -> None:
        for operation in SWAPS:
            client.meta.events.register(f"before-parameter-build.ec2.{operation}", self._before)
            client.meta.events.register(f"after-call.ec2.{operation}", self._after)

    def _before(self, params: dict[str, Any], **_: Any) -> None:
        if "Groups" not in params or self.groups:
            return
        self.groups = list(params["Groups"])
        if self.when == "before":
            self._fire()

    def _after(self, **_: Any) -> None:
        if self.when == "after" and self.groups:
            self._fire()

    def _fire(self) -> None:
        if not self.fired:
            self.fired = True
            self.act(self.groups)


def ctrl_c(_: list[str]) -> None:
    """What SIGINT does to the process, from any thread: the handler the CLI installed runs."""
    handler = signal.getsignal(signal.SIGINT)
    assert isinstance(handler, cli.InterruptHandler), handler  # the CLI's, for this command
    handler(signal.SIGINT, None)


def three_instances(fleet: Fleet) -> tuple[str, list[str]]:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    first = fleet.instance(vpc, [web], extra_enis=[[fleet.group(vpc, "mgmt")]])  # two ENIs: one step
    return vpc, [first, fleet.instance(vpc, [web]), fleet.instance(vpc, [web])]


def test_the_first_ctrl_c_finishes_the_swap_in_flight_reports_the_rest_and_exits_130(
    run: Cli, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    vpc, instances = three_instances(fleet)
    first, rest = instances[0], instances[1:]
    before = fleet.eni_groups(instances)
    handler_before = signal.getsignal(signal.SIGINT)
    hook = AtFirstSwap(ctrl_c)  # the first ENI's swap into allow-all is being sent
    with monkeypatch.context() as patch:
        hook.install(patch)
        stopped = run("isolate", *instances, "--case", CASE, "--concurrency", "1")

    assert hook.fired
    assert stopped.code == 130
    assert signal.getsignal(signal.SIGINT) is handler_before  # put back for the next main()
    # live: the instance whose swap was in flight is isolated, every ENI of it (its network step
    # was under way), and no ENI anywhere sits in the allow-all group
    [allow_all] = hook.groups
    now = fleet.eni_groups(instances)
    assert all(allow_all not in groups for groups in now.values())
    first_enis = {eni: groups for eni, groups in now.items() if eni in fleet.eni_groups([first])}
    assert len(first_enis) == 2
    isolation = {groups for groups in first_enis.values()}
    assert len(isolation) == 1 and isolation != {before[eni] for eni in first_enis}
    # the instances not started are untouched, and hold nothing
    assert fleet.eni_groups(rest) == {eni: before[eni] for eni in fleet.eni_groups(rest)}
    store = cli_store(fleet)
    assert all(store.get(instance) is None for instance in rest)
    hold = store.get(first)
    assert hold is not None and hold.status is HoldStatus.ISOLATED
    # said: the one line at the interrupt, what is contained and what is not, and the rerun
    assert cli.FIRST_INTERRUPT in stopped.err
    assert f"ec2ir: interrupted: contained (every ENI in the isolation group): {first}" in stopped.err
    assert f"ec2ir: interrupted: NOT contained: {', '.join(rest)}" in stopped.err
    assert "run `ec2ir isolate` again with the same arguments to finish" in stopped.err
    for instance in rest:
        assert f"ec2ir: {instance}: Interrupted: interrupted (Ctrl-C) before isolate began" in stopped.err
    rows = {line.split()[0]: line for line in stopped.out.splitlines() if line.startswith("i-")}
    assert all("INTERRUPTED" in rows[instance] for instance in instances)
    assert all(eni in rows[first] for eni in first_enis)  # its ENIs, in the isolation group now
    assert "not started: the run was interrupted" in stopped.out  # the later steps of the first
    assert "note: interrupted (Ctrl-C)" in stopped.out

    finished = run("isolate", *instances, "--case", CASE, "--output", "json")

    assert finished.code == 0, finished.err
    iso = finished.json()["groups"][vpc]["isolation_group_id"]
    assert set(fleet.eni_groups(instances).values()) == {(iso,)}


def test_an_interrupted_run_in_json_names_each_instance_s_outcome(
    run: Cli, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    vpc, instances = three_instances(fleet)
    first, rest = instances[0], instances[1:]
    with monkeypatch.context() as patch:
        AtFirstSwap(ctrl_c).install(patch)
        stopped = run("isolate", *instances, "--case", CASE, "--concurrency", "1", "--output", "json")

    assert stopped.code == 130
    report = stopped.json()
    iso = report["groups"][vpc]["isolation_group_id"]
    results = {r["instance_id"]: r for r in report["results"]}
    assert not report["ok"]
    assert {r["error_code"] for r in results.values()} == {"Interrupted"}
    assert set(map(tuple, results[first]["enis"].values())) == {(iso,)}
    assert results[first]["steps"]["network"].startswith("done")
    steps = results[first]["steps"]
    not_started = [name for name, outcome in steps.items() if outcome.startswith("not started")]
    assert "tags" in not_started and "metadata" in not_started
    assert "done: network" in results[first]["detail"] and "not started: " in results[first]["detail"]
    for instance in rest:
        assert results[instance]["enis"] == {} and results[instance]["steps"] == {}
        assert "nothing was changed" in results[instance]["detail"]
    assert any(note.startswith("interrupted (Ctrl-C)") for note in report["notes"])


def test_ctrl_c_during_release_finishes_the_restore_in_flight_and_a_rerun_releases_the_rest(
    run: Cli, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, instances = three_instances(fleet)
    first, rest = instances[0], instances[1:]
    before = fleet.eni_groups(instances)
    assert run("isolate", *instances, "--case", CASE).code == 0
    isolated = fleet.eni_groups(instances)
    with monkeypatch.context() as patch:
        AtFirstSwap(ctrl_c).install(patch)  # the first ENI's restore is being sent
        stopped = run("release", *instances, "--case", CASE, "--concurrency", "1")

    assert stopped.code == 130
    first_enis = fleet.eni_groups([first])
    assert first_enis == {eni: before[eni] for eni in first_enis}  # both ENIs: the restore finished
    assert fleet.eni_groups(rest) == {eni: isolated[eni] for eni in fleet.eni_groups(rest)}
    assert f"ec2ir: interrupted: released: {first}" in stopped.err
    assert f"ec2ir: interrupted: NOT released: {', '.join(rest)}" in stopped.err
    store = cli_store(fleet)
    assert [getattr(store.get(i), "status", None) for i in rest] == [HoldStatus.ISOLATED] * 2

    assert f"ec2ir: interrupted: run `ec2ir release` again on {' '.join(rest)} to finish" in stopped.err

    finished = run("release", *rest, "--case", CASE)

    assert finished.code == 0, finished.err
    assert fleet.eni_groups(instances) == before


def test_the_second_ctrl_c_aborts_at_once_and_the_next_run_takes_the_eni_out_of_allow_all(
    run: Cli, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst moment to die: the first ENI has just entered the allow-all group. The abort is
    emulated by an exception that unwinds the worker there (a real one is os._exit)."""

    class Aborted(BaseException):
        pass

    exits: list[int] = []

    def abort(code: int) -> None:
        exits.append(code)
        raise Aborted

    def twice(groups: list[str]) -> None:
        ctrl_c(groups)
        ctrl_c(groups)

    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    instances = [fleet.instance(vpc, [web]) for _ in range(2)]
    hook = AtFirstSwap(twice, when="after")  # the swap into allow-all has been applied
    with monkeypatch.context() as patch:
        hook.install(patch)
        patch.setattr(cli, "_abort", abort)
        with pytest.raises(Aborted):
            run("isolate", *instances, "--case", CASE, "--concurrency", "1")

    assert exits == [130]
    [allow_all] = hook.groups
    assert fleet.eni_groups(instances[:1]) == {eni: (allow_all,) for eni in fleet.eni_groups(instances[:1])}

    finished = run("isolate", *instances, "--case", CASE, "--output", "json")

    assert finished.code == 0, finished.err
    iso = finished.json()["groups"][vpc]["isolation_group_id"]
    assert set(fleet.eni_groups(instances).values()) == {(iso,)}


def test_the_handler_sets_the_token_once_then_aborts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    exits: list[int] = []
    monkeypatch.setattr(cli, "_abort", exits.append)
    interrupt = new_interrupt()
    handler = cli.InterruptHandler(interrupt, "release")

    handler(signal.SIGINT, None)

    assert interrupt.is_set() and exits == []
    assert capsys.readouterr().err == cli.FIRST_INTERRUPT + "\n"

    handler(signal.SIGINT, None)

    assert exits == [130]
    aborted = capsys.readouterr().err
    assert aborted.startswith("ec2ir: aborted at once") and "run `ec2ir release` again" in aborted


def test_a_second_sigint_inside_the_first_handler_aborts_instead_of_waiting_on_its_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A held Ctrl-C key: the second SIGINT runs its handler while the first is inside Event.set,
    # whose lock it holds; setting the event again there would wait for ever.
    exits: list[int] = []
    monkeypatch.setattr(cli, "_abort", exits.append)
    interrupt = new_interrupt()
    handler = cli.InterruptHandler(interrupt, "isolate")
    setting = interrupt.set

    def set_while_a_second_sigint_lands() -> None:
        monkeypatch.setattr(interrupt, "set", setting)
        handler(signal.SIGINT, None)  # nested: the first handler has not returned
        setting()

    monkeypatch.setattr(interrupt, "set", set_while_a_second_sigint_lands)

    handler(signal.SIGINT, None)

    assert exits == [130] and interrupt.is_set()


def test_interruptible_installs_the_handler_and_puts_the_previous_one_back() -> None:
    previous = signal.getsignal(signal.SIGINT)
    interrupt = new_interrupt()
    with cli.interruptible(interrupt, "isolate") as handler:
        assert signal.getsignal(signal.SIGINT) is handler
        signal.raise_signal(signal.SIGINT)  # the main thread: delivered to the handler, no raise
        assert interrupt.is_set()
    assert signal.getsignal(signal.SIGINT) is previous


# -- the engine's own token -----------------------------------------------------------------------


def test_an_engine_interrupted_before_the_run_changes_nothing(engine: Engine, fleet: Fleet) -> None:
    _, instances = three_instances(fleet)
    before = fleet.eni_groups(instances)
    engine.interrupt.set()

    report = engine.isolate(instances, CASE)

    assert [(r.ok, r.error_code, r.interrupted) for r in report.results] == [(False, "Interrupted", True)] * 3
    assert fleet.eni_groups(instances) == before
    assert all(engine.store.get(instance) is None for instance in instances)


def test_an_engine_interrupted_mid_swap_isolates_that_instance_whole_and_starts_no_other(
    engine: Engine, fleet: Fleet
) -> None:
    _, instances = three_instances(fleet)
    first, rest = instances[0], instances[1:]
    before = fleet.eni_groups(instances)
    single = Engine(engine.aws, engine.store, concurrency=1)
    hook = AtFirstSwap(lambda _: single.interrupt.set())
    for aws in (single.aws, single.lanes_aws, single.urgent_aws):
        hook.register(aws.ec2())

    report = single.isolate(instances, CASE)

    assert hook.fired
    results = {r.instance_id: r for r in report.results}
    [allow_all] = hook.groups
    first_enis = fleet.eni_groups([first])
    assert all(groups != (allow_all,) for groups in first_enis.values())
    assert results[first].interrupted and set(results[first].enis) == set(first_enis)
    assert {groups for groups in first_enis.values()} == set(results[first].enis.values())
    assert results[first].steps["network"].startswith("done")
    assert results[first].steps["tags"] == "not started: the run was interrupted"
    assert fleet.eni_groups(rest) == {eni: before[eni] for eni in fleet.eni_groups(rest)}
    assert all(results[i].interrupted and not results[i].steps for i in rest)


def test_collect_and_rejoin_start_no_instance_once_interrupted(engine: Engine, fleet: Fleet) -> None:
    _, instances = three_instances(fleet)
    engine.interrupt.set()

    collected = engine.collect(instances, CASE)
    rejoined = engine.rejoin(instances, CASE)

    for report in (collected, rejoined):
        assert all(r.interrupted and not r.steps for r in report.results), report.results
    assert not any(r.evidence for r in collected.results)


def new_interrupt() -> Any:
    from ec2ir.core.interrupt import Interrupt  # here, so that each test fails on its own before it exists

    return Interrupt()


def cli_store(fleet: Fleet) -> StateStore:
    return StateStore(fleet.aws)  # the CLI's default table


def test_an_instance_whose_cut_began_is_cut_whole_even_if_interrupted_between_its_steps(
    engine: Engine, fleet: Fleet
) -> None:
    # Ctrl-C right after the Auto Scaling detach: stopping there would leave the instance out of its
    # group (a replacement launches) but open on the network. The cut's steps run as one.
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    member = fleet.asg_member(vpc, [web])
    single = Engine(engine.aws, engine.store, concurrency=1)
    single.aws.client("autoscaling").meta.events.register(
        "after-call.autoscaling.DetachInstances", lambda **_: single.interrupt.set()
    )

    [result] = single.isolate([member], CASE).results

    assert single.interrupt.is_set() and result.interrupted
    assert result.steps["autoscaling"].startswith("done") and result.steps["network"].startswith("done")
    isolation = {groups for groups in fleet.eni_groups([member]).values()}
    assert isolation == set(result.enis.values()) and all(web not in groups for groups in isolation)


class DyingStream:
    """Standard error piped to `tee`, which the same Ctrl-C kills: from ``dead`` on, every write
    fails with EPIPE, as a pipe without a reader does."""

    def __init__(self) -> None:
        self.dead = False
        self.text = ""

    def write(self, text: str) -> int:
        if self.dead:
            raise BrokenPipeError(32, "Broken pipe")
        self.text += text
        return len(text)

    def flush(self) -> None:
        if self.dead:
            raise BrokenPipeError(32, "Broken pipe")

    def isatty(self) -> bool:
        return False


def test_a_ctrl_c_that_also_closed_standard_error_still_finishes_and_exits_130(
    fleet: Fleet, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, instances = three_instances(fleet)
    stderr = DyingStream()
    monkeypatch.setattr("sys.stderr", stderr)

    def tee_dies_with_the_ctrl_c(groups: list[str]) -> None:
        stderr.dead = True
        ctrl_c(groups)

    hook = AtFirstSwap(tee_dies_with_the_ctrl_c)
    with monkeypatch.context() as patch:
        hook.install(patch)
        code = main(
            ["isolate", *instances, "--case", CASE, "--concurrency", "1",
             "--endpoint-url", emulator.endpoint_url, "--region", "us-east-1"]
        )  # fmt: skip

    assert hook.fired and code == 130
    store = StateStore(fleet.aws)
    first = store.get(instances[0])
    assert first is not None and first.status is HoldStatus.ISOLATED  # the cut in flight, finished
    assert all(store.get(i) is None for i in instances[1:])  # the rest never began
    assert store.journal(CASE)  # and what was done is journaled
    [allow_all] = hook.groups
    assert all(groups != (allow_all,) for groups in fleet.eni_groups(instances).values())
