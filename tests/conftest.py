"""Fixtures: one corrected emulator per session, in this process, reset per test.

Tests reach the emulator through ``emulator`` (moto answering in this process: no socket, the same
fidelity fixes). A test whose calls must cross a real socket (a subprocess, raw HTTP) asks for
``served_emulator`` too: moto's server on loopback, over the same state, and is marked ``e2e``.
Evidence (snapshots, metadata) is off in tests unless a test is marked ``evidence``; see
``_evidence_only_when_asked``.
"""

from __future__ import annotations

import gc
import inspect
import io
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from ec2ir.aws.session import Aws, AwsSettings
from ec2ir.cli import app as cli
from ec2ir.containment.steps import Options
from ec2ir.emulator.inprocess import InProcessEmulator
from ec2ir.emulator.server import DEMO_REGION, Emulator
from ec2ir.engine.facade import Engine
from ec2ir.store.state import StateStore
from tests.support.clients import cheaper_clients
from tests.support.fleets import AMI, Fleet
from tests.support.forensic_scene import Scene, journaled_scene
from tests.support.waiting import TimeWithoutWaiting, limiter_without_waiting, no_wait

# AWS's published ranges (ec2ir.aws.ranges) come from a small fixture in AWS's format, never from the
# network: every test that reaches the ranges reads this file.
AWS_IP_RANGES = Path(__file__).parent / "fixtures" / "aws-ip-ranges.json"
os.environ["EC2IR_AWS_IP_RANGES"] = str(AWS_IP_RANGES)
# The AMIs the tests launch (the fleet's Windows one; a Linux one for SSM and memory).
CATALOGUE_AMIS = (AMI, "ami-760aaa0f")


def _keep_only_catalogue_amis() -> None:
    """moto seeds every catalogued AMI and a snapshot for each (about 1,300 in us-east-1) at each
    reset, and filters them all in Python on every DescribeImages and DescribeSnapshots: most of a
    reset's cost, and 0.2 s of CPU for each snapshot lookup of an evidence run. The tests' emulator
    (and the subprocesses they start, which inherit the variable) load only the AMIs above: the
    same records, so an instance's platform still comes from its AMI. moto reads the variable
    when its AMI module is first imported, which no module imported so far does."""
    import atexit
    import sys
    import tempfile

    from moto.utilities.utils import load_resource

    if "moto.ec2.models.amis" in sys.modules or "MOTO_AMIS_PATH" in os.environ:
        return
    catalogue = [ami for ami in load_resource("ec2/resources/amis.json") if ami["ami_id"] in CATALOGUE_AMIS]
    assert len(catalogue) == len(CATALOGUE_AMIS), "an AMI the tests launch left moto's catalogue"
    handle, path = tempfile.mkstemp(prefix="ec2ir-test-amis-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        json.dump(catalogue, file)
    atexit.register(os.unlink, path)
    os.environ["MOTO_AMIS_PATH"] = path


_keep_only_catalogue_amis()


# The tests over the fast loop's budget, measured (see the file's head, and scripts/slow-tests).
OVER_BUDGET = Path(__file__).parent / "slow_tests.txt"


def over_budget() -> frozenset[str]:
    """The node ids tests/slow_tests.txt lists; none while scripts/slow-tests measures them."""
    if os.environ.get("EC2IR_MEASURING_TEST_TIMES"):
        return frozenset()
    lines = OVER_BUDGET.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that needs the served emulator crosses a real socket: it is end to end by nature.
    listed = over_budget()
    for item in items:
        if "served_emulator" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
        if item.nodeid in listed:
            item.add_marker(pytest.mark.slow)

    # The slow tests first (the order is otherwise kept), those slow by nature (the sweeps) before
    # those merely over the fast loop's budget: started last, the longest would leave one worker
    # running alone at the end while the others idle.
    def start_order(item: pytest.Item) -> int:
        if item.nodeid in listed:
            return 1
        return 2 if item.get_closest_marker("slow") is None else 0

    items.sort(key=start_order)


def _emulator_environment() -> None:
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=DEMO_REGION
    )
    for variable in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(variable, None)


@pytest.fixture(scope="session", autouse=True)
def _one_client_class_per_service() -> Iterator[None]:
    undo = cheaper_clients()  # see tests/support/clients.py
    yield
    undo()


# Python's cyclic garbage collector walked every object of moto, botocore and the emulator's state
# again at each full collection: about 17% of a test file's CPU. The tests keep the defaults'
# behaviour (every cycle is still collected) but collect young objects less often, and the objects
# that live as long as the process (the imported modules, the emulator) are frozen out of the walk
# once the emulator is up. Measured on test_containment and test_nacl: 37 s of CPU -> 29 s.
YOUNG_OBJECTS_BEFORE_A_COLLECTION = 20_000  # Python's default is 700


@pytest.fixture(scope="session")
def emulator() -> Iterator[InProcessEmulator]:
    _emulator_environment()
    with InProcessEmulator() as running:
        yield running


def pytest_configure(config: pytest.Config) -> None:
    del config
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS_BEFORE_A_COLLECTION, middle, oldest)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    # Frozen when the first test starts, its fixtures set up: by then moto has built what it keeps
    # for the process (service models, backends' machinery), beyond what importing it builds.
    if not gc.get_freeze_count():
        gc.collect()
        gc.freeze()
    del item
    return (yield)


@pytest.fixture(scope="session", autouse=True)
def _botocore_retries_without_waiting() -> Iterator[None]:
    """botocore's own retries (a throttled or failed call, emulated or injected) pause for real
    seconds between attempts: ``botocore.endpoint`` calls ``time.sleep`` through its module global
    ``time``, its only use of that module. A test of retrying asserts the retry, not the wait, so
    the pause returns at once. botocore's adaptive rate limiter waits too, for its token bucket
    to refill after throttling: its clock moves on instead (``LimiterClock``)."""
    import botocore.endpoint

    undo_limiter = limiter_without_waiting()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.endpoint, "time", TimeWithoutWaiting())
        yield
    undo_limiter()


@pytest.fixture(scope="session")
def served_emulator(emulator: InProcessEmulator) -> Iterator[Emulator]:
    """moto's server on loopback, for calls that must cross a socket; it shares the in-process
    emulator's state (moto's backends are global to the process), so ``aws``'s reset and
    ``fleet``'s resources hold for it too."""
    with Emulator() as running:
        yield running


@pytest.fixture(autouse=True)
def _evidence_only_when_asked(request: pytest.FixtureRequest) -> Iterator[None]:
    """A run in a test collects no evidence unless the test is marked ``evidence``.

    Evidence is a third of an isolation's AWS calls, and most tests are about containment. The
    default of ``Options.evidence`` is what changes, so an engine run given no options, or options
    that do not name evidence, contains only; the ``run`` fixture passes ``--no-evidence`` to
    ``isolate`` for the same reason. ``collect`` always collects (it sets evidence itself)."""
    if request.node.get_closest_marker("evidence") is not None:
        yield
        return
    usual = Options()
    parameters = [p for p in inspect.signature(Options.__init__).parameters.values() if p.name != "self"]
    with_defaults = [p.name for p in parameters if p.default is not inspect.Parameter.empty]
    defaults = list(Options.__init__.__defaults__ or ())
    assert len(defaults) == len(with_defaults), "Options' defaults are not all positional any more"
    defaults[with_defaults.index("evidence")] = False
    # A patch of its own: a test's monkeypatch.undo() must not turn evidence back on half-way.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Options.__init__, "__defaults__", tuple(defaults))
        # Exactly one default changed: a new field can never shift another's default unseen.
        assert Options() == replace(usual, evidence=False)
        yield


def race(runners: int, prepare: Callable[[], Any], run: Callable[[Any], Any]) -> list[Any]:
    """Start ``runners`` threads together; each prepares alone, then all run at once.

    Returns each runner's result, or the exception it raised.
    """
    barrier = threading.Barrier(runners)
    outcomes: list[Any] = []

    def runner() -> None:
        prepared = prepare()
        barrier.wait()
        try:
            outcomes.append(run(prepared))
        except Exception as error:
            outcomes.append(error)

    threads = [threading.Thread(target=runner) for _ in range(runners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.fixture
def aws(emulator: InProcessEmulator) -> Aws:
    emulator.reset()
    return Aws(AwsSettings(region=DEMO_REGION, endpoint_url=emulator.endpoint_url), sleep=no_wait)


@pytest.fixture
def served_aws(aws: Aws, served_emulator: Emulator) -> Aws:
    """Clients of the served emulator, reset as ``aws`` is: for a URL that a real HTTP client
    (curl, a subprocess) must follow, such as a presigned one."""
    return Aws(AwsSettings(region=DEMO_REGION, endpoint_url=served_emulator.endpoint_url))


@pytest.fixture
def engine(aws: Aws) -> Engine:
    return Engine(aws, StateStore(aws), concurrency=4)


@dataclass
class Run:
    """One ``ec2ir`` command's exit code, standard output and standard error."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Run]


@pytest.fixture
def run(
    emulator: InProcessEmulator,
    aws: Aws,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: Any,
    request: pytest.FixtureRequest,
) -> Cli:
    """The ``ec2ir`` command, in process, against the emulator; ``stdin`` is what it reads for ``-``.

    ``isolate`` contains only (``--no-evidence``) unless the test is marked ``evidence``."""
    evidence = request.node.get_closest_marker("evidence") is not None

    def invoke(*argv: str, stdin: str | None = None) -> Run:
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        extra = [] if evidence or argv[:1] != ("isolate",) or "--no-evidence" in argv else ["--no-evidence"]
        code = cli.main([*argv, *extra, "--endpoint-url", emulator.endpoint_url, "--region", DEMO_REGION])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return invoke


def one_line_error(result: Run) -> str:
    """The single line a refused command writes on standard error, with no traceback."""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    return lines[0]


@pytest.fixture
def fleet(aws: Aws) -> Fleet:
    return Fleet(aws)


@pytest.fixture
def catcher() -> Iterator[Any]:
    """A loopback server that receives CloudFormation's answers (see tests/integration/test_handlers.py)."""
    from tests.support.stack import ResponseCatcher

    running = ResponseCatcher()
    running.thread.start()
    try:
        yield running
    finally:
        running.server.shutdown()
        running.server.server_close()
        running.thread.join(timeout=5)


@pytest.fixture
def scene(aws: Aws, fleet: Fleet) -> Scene:
    """A compromised instance's case snapshots, journaled, and a workstation (the forensics tests)."""
    return journaled_scene(aws, fleet)
