"""Fixtures: one corrected emulator per session, in this process, reset per test.

Tests reach the emulator through ``emulator`` (moto answering in this process: no socket, the same
fidelity fixes). A test whose calls must cross a real socket (a subprocess, raw HTTP) asks for
``served_emulator`` too: moto's server on loopback, over the same state, and is marked ``e2e``.
Evidence (snapshots, metadata) is off in tests unless a test is marked ``evidence``; see
``_evidence_only_when_asked``.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
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

AMI = "ami-12c6146b"  # in moto's built-in catalogue
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that needs the served emulator crosses a real socket: it is end to end by nature.
    for item in items:
        if "served_emulator" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


def _emulator_environment() -> None:
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=DEMO_REGION
    )
    for variable in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(variable, None)


@pytest.fixture(scope="session")
def emulator() -> Iterator[InProcessEmulator]:
    _emulator_environment()
    with InProcessEmulator() as running:
        yield running


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
    return Aws(AwsSettings(region=DEMO_REGION, endpoint_url=emulator.endpoint_url))


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


@dataclass
class Fleet:
    """Builds compromised fleets in the emulator and reads ENI groups back independently."""

    aws: Aws
    subnets: dict[str, str] = field(default_factory=dict)

    @property
    def ec2(self) -> Any:
        return self.aws.ec2()

    def vpc(self, second_octet: int) -> str:
        vpc_id = str(self.ec2.create_vpc(CidrBlock=f"10.{second_octet}.0.0/16")["Vpc"]["VpcId"])
        subnet = self.ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.{second_octet}.1.0/24")
        self.subnets[vpc_id] = subnet["Subnet"]["SubnetId"]
        return vpc_id

    def group(self, vpc_id: str, name: str) -> str:
        return str(self.ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc_id)["GroupId"])

    def asg_member(self, vpc_id: str, groups: list[str], name: str = "web-asg") -> str:
        """The one instance of a new Auto Scaling group (launch configuration ``web-lc``, 1 to 3
        instances) in the VPC's subnet."""
        autoscaling = self.aws.client("autoscaling")
        autoscaling.create_launch_configuration(
            LaunchConfigurationName="web-lc", ImageId=AMI, InstanceType="t3.micro", SecurityGroups=groups
        )
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchConfigurationName="web-lc",
            MinSize=1,
            MaxSize=3,
            DesiredCapacity=1,
            VPCZoneIdentifier=self.subnets[vpc_id],
        )
        [group] = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        return str(group["Instances"][0]["InstanceId"])

    def alb_target_group(self, vpc_id: str, groups: list[str]) -> str:
        """A target group (HTTP 80) behind a new application load balancer across the VPC's subnet
        and a second one: its ARN."""
        other = self.ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.1.2.0/24", AvailabilityZone="us-east-1b")
        elbv2 = self.aws.client("elbv2")
        balancer = elbv2.create_load_balancer(
            Name="web-alb", Subnets=[self.subnets[vpc_id], other["Subnet"]["SubnetId"]], SecurityGroups=groups
        )["LoadBalancers"][0]
        target_group = str(
            elbv2.create_target_group(Name="web-tg", Protocol="HTTP", Port=80, VpcId=vpc_id)["TargetGroups"][
                0
            ]["TargetGroupArn"]
        )
        elbv2.create_listener(
            LoadBalancerArn=balancer["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": target_group}],
        )
        return target_group

    def instance(
        self, vpc_id: str, groups: list[str], extra_enis: list[list[str]] | None = None, image_id: str = AMI
    ) -> str:
        instance_id = str(
            self.ec2.run_instances(
                ImageId=image_id,
                MinCount=1,
                MaxCount=1,
                SubnetId=self.subnets[vpc_id],
                SecurityGroupIds=groups,
            )["Instances"][0]["InstanceId"]
        )
        for index, eni_groups in enumerate(extra_enis or [], start=1):
            self.attach_eni(instance_id, vpc_id, eni_groups, index)
        return instance_id

    def attach_eni(self, instance_id: str, vpc_id: str, groups: list[str], index: int) -> str:
        eni = self.ec2.create_network_interface(SubnetId=self.subnets[vpc_id], Groups=groups)
        eni_id = str(eni["NetworkInterface"]["NetworkInterfaceId"])
        self.ec2.attach_network_interface(
            NetworkInterfaceId=eni_id, InstanceId=instance_id, DeviceIndex=index
        )
        return eni_id

    def eni_groups(self, instance_ids: list[str]) -> dict[str, tuple[str, ...]]:
        """Every ENI's groups, read through DescribeNetworkInterfaces (not the engine's discovery)."""
        response = self.ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": instance_ids}]
        )
        return {
            eni["NetworkInterfaceId"]: tuple(sorted(g["GroupId"] for g in eni["Groups"]))
            for eni in response["NetworkInterfaces"]
        }

    def group_rules(self, group_id: str) -> set[tuple[bool, str, str]]:
        rules = self.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group_id]}])
        return {
            (
                bool(rule["IsEgress"]),
                f"{rule['IpProtocol']}/{rule.get('FromPort', -1)}",
                rule.get("CidrIpv4") or rule.get("CidrIpv6") or rule["ReferencedGroupInfo"]["GroupId"],
            )
            for rule in rules["SecurityGroupRules"]
        }

    def ec2ir_groups(self) -> list[str]:
        groups = self.ec2.describe_security_groups(Filters=[{"Name": "tag-key", "Values": ["ec2ir:role"]}])
        return [g["GroupId"] for g in groups["SecurityGroups"]]


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
