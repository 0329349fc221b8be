"""``ec2ir demo`` and ``ec2ir emulator``: the whole cycle with no AWS account.

The demo starts the corrected emulator on loopback, seeds a small compromised fleet (three
instances in two VPCs, one with two ENIs in different groups), then runs the real CLI commands
against it: isolate, status, release. It ends by comparing every ENI's groups before, during and
after, and fails if the fleet is not restored exactly.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ec2ir.aws.session import Aws, AwsSettings, discover
from ec2ir.core.errors import UsageError
from ec2ir.core.text import printable, table
from ec2ir.emulator.server import DEMO_REGION, Emulator

DEMO_CASE = "DEMO-001"
DEMO_OFFICE = "203.0.113.0/24"
# An AMI id that moto ships in its catalogue, so run_instances accepts it.
DEMO_AMI = "ami-12c6146b"
Groups = dict[tuple[str, str], tuple[str, ...]]  # (instance, ENI) -> the ENI's groups


@dataclass(frozen=True)
class Fleet:
    names: dict[str, str]  # instance id -> Name tag

    @property
    def instance_ids(self) -> list[str]:
        return list(self.names)


def seed_fleet(ec2: Any) -> Fleet:
    """A compromised fleet: web and app in one VPC (app with two ENIs), db in another."""

    def vpc_with_subnet(cidr: str, subnet: str, name: str) -> tuple[str, str]:
        vpc_id = ec2.create_vpc(
            CidrBlock=cidr,
            TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": name}]}],
        )["Vpc"]["VpcId"]
        subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock=subnet)["Subnet"]["SubnetId"]
        return vpc_id, subnet_id

    def group(vpc_id: str, name: str, port: int) -> str:
        group_id = str(ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc_id)["GroupId"])
        ec2.authorize_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
                }
            ],
        )
        return group_id

    def launch(name: str, subnet_id: str, groups: list[str]) -> str:
        return str(
            ec2.run_instances(
                ImageId=DEMO_AMI,
                InstanceType="t3.micro",
                MinCount=1,
                MaxCount=1,
                SubnetId=subnet_id,
                SecurityGroupIds=groups,
                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}],
            )["Instances"][0]["InstanceId"]
        )

    shop_vpc, shop_subnet = vpc_with_subnet("10.10.0.0/16", "10.10.1.0/24", "shop")
    data_vpc, data_subnet = vpc_with_subnet("10.20.0.0/16", "10.20.1.0/24", "data")
    web_sg = group(shop_vpc, "web", 443)
    app_sg = group(shop_vpc, "app", 8080)
    mgmt_sg = group(shop_vpc, "mgmt", 22)
    db_sg = group(data_vpc, "db", 5432)
    backup_sg = group(data_vpc, "backup", 873)

    web = launch("web-1", shop_subnet, [web_sg])
    app = launch("app-1", shop_subnet, [app_sg])
    db = launch("db-1", data_subnet, [db_sg, backup_sg])
    mgmt_eni = ec2.create_network_interface(SubnetId=shop_subnet, Groups=[mgmt_sg], Description="app-1 mgmt")
    ec2.attach_network_interface(
        NetworkInterfaceId=mgmt_eni["NetworkInterface"]["NetworkInterfaceId"], InstanceId=app, DeviceIndex=1
    )
    return Fleet({web: "web-1", app: "app-1", db: "db-1"})


def eni_groups(aws: Aws, instance_ids: list[str]) -> Groups:
    """(instance, ENI) -> the ENI's groups, as EC2 reports them now."""
    facts = discover(aws, instance_ids)
    return {
        (instance_id, eni.eni_id): eni.group_ids
        for instance_id in instance_ids
        for eni in facts[instance_id].enis
    }


def fresh_report_path() -> str:
    """Where the demo's report goes: a directory made for it alone (mode 0700, a name nobody can
    guess, created or refused in one step), so that no file or symlink anyone planted in the shared
    temporary directory can stand in for the report, as one at a fixed name could."""
    return os.path.join(tempfile.mkdtemp(prefix="ec2ir-demo-"), "report.html")


@dataclass
class Observed:
    """What the demo saw of the fleet: each ENI's groups before, during and after the incident,
    and the name of every group it met."""

    names: dict[str, str]
    before: Groups
    during: Groups = field(default_factory=dict)
    after: Groups = field(default_factory=dict)


def run_demo(command: Callable[[Sequence[str]], int]) -> int:
    """Seed the emulator and run each step through ``command`` (the CLI's ``main``, passed in so
    that the demo, which the CLI starts, does not import the CLI back)."""
    _use_demo_credentials_only()
    with Emulator() as emulator:
        url = emulator.endpoint_url
        aws = Aws(AwsSettings(region=DEMO_REGION, endpoint_url=url))
        ec2 = aws.ec2()
        print(f"ec2ir demo: embedded EC2/DynamoDB/STS emulator at {url} (no AWS account is used)\n")
        fleet = seed_fleet(ec2)
        observed = Observed(names=group_names(ec2), before=eni_groups(aws, fleet.instance_ids))
        print("Seeded a compromised fleet: 3 instances in 2 VPCs, app-1 with two ENIs.\n")
        codes = _run_steps(command, aws, fleet.instance_ids, observed, url)
        observed.after = eni_groups(aws, fleet.instance_ids)
    return _verdict(fleet, observed, codes)


def _use_demo_credentials_only() -> None:
    # The demo talks only to its own loopback emulator, never to an AWS account.
    for variable in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(variable, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="ec2ir-demo", AWS_SECRET_ACCESS_KEY="ec2ir-demo", AWS_DEFAULT_REGION=DEMO_REGION
    )


def group_names(ec2: Any) -> dict[str, str]:
    return {g["GroupId"]: g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}


def _demo_steps(ids: list[str], url: str) -> list[list[str]]:
    common = ["--endpoint-url", url, "--region", DEMO_REGION]
    report_path = fresh_report_path()
    return [
        ["isolate", *ids, "--case", DEMO_CASE, "--office-cidr", DEMO_OFFICE, *common],
        ["status", *common],
        ["release", *ids, "--case", DEMO_CASE, *common],
        # evidence: snapshots and hashed metadata were taken after the cut, and outlive release
        ["verify", DEMO_CASE, *common],
        ["report", DEMO_CASE, "--format", "html", "-o", report_path, *common],
    ]


def _run_steps(
    command: Callable[[Sequence[str]], int], aws: Aws, ids: list[str], observed: Observed, url: str
) -> list[int]:
    """Each step's exit code, in order; the groups as isolated are observed right after isolate."""
    codes: list[int] = []
    for argv in _demo_steps(ids, url):
        print(f"$ ec2ir {' '.join(argv[: argv.index('--endpoint-url')])}")
        codes.append(command(argv))
        print()
        if argv[0] == "isolate":
            observed.during = eni_groups(aws, ids)
            observed.names.update(group_names(aws.ec2()))
    return codes


def _verdict(fleet: Fleet, observed: Observed, codes: list[int]) -> int:
    """Each ENI's groups before, during and after, and 0 only if the fleet was isolated during the
    incident, restored exactly after it, and every step succeeded."""
    names = observed.names

    def shown(groups: tuple[str, ...]) -> str:
        return ", ".join(names.get(g, g) for g in groups)

    rows = [
        [
            fleet.names[instance],
            eni,
            shown(groups),
            shown(observed.during.get(key, ())),
            shown(observed.after.get(key, ())),
        ]
        for key, groups in observed.before.items()
        for instance, eni in [key]
    ]
    print("Each ENI's security groups:")
    print(table(["INSTANCE", "ENI", "BEFORE", "DURING", "AFTER"], rows))
    # ec2ir names each isolation group it creates ec2ir-isolation-<random>, so no one can take the name first.
    isolated = all(
        len(g) == 1 and names.get(g[0], "").startswith("ec2ir-isolation-") for g in observed.during.values()
    )
    exact = observed.after == observed.before
    print(f"\nisolated during the incident: {'yes' if isolated else 'NO'}")
    print(f"restored exactly afterwards:  {'yes' if exact else 'NO'}")
    return 0 if isolated and exact and not any(codes) else 1


def serve_emulator(port: int) -> int:
    emulator = Emulator(port=port).start()
    print(f"ec2ir emulator: corrected moto server at {emulator.endpoint_url}", flush=True)
    print(f"  export AWS_ENDPOINT_URL={emulator.endpoint_url} AWS_DEFAULT_REGION={DEMO_REGION}")
    print("  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


def seed_only(endpoint_url: str | None) -> int:
    """``ec2ir demo --seed-only``: the demo's fleet in a running emulator, its ids on stdout (one a
    line, for ``ids=$(ec2ir demo --seed-only)``). Only ever on loopback: seeding is for the emulator,
    and three instances launched in a real account would cost money and confuse an incident."""
    given = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or ""
    url = _loopback_url(given)
    if url is None:
        raise UsageError(
            f"--seed-only seeds an emulator, and {printable(given or 'no endpoint')} is not one on loopback",
            "start one with `ec2ir emulator` and pass its --endpoint-url (or set AWS_ENDPOINT_URL)",
        )
    aws = Aws(AwsSettings(region=os.environ.get("AWS_DEFAULT_REGION") or DEMO_REGION, endpoint_url=url))
    fleet = seed_fleet(aws.ec2())
    print("\n".join(fleet.instance_ids))
    return 0


def _loopback_url(url: str) -> str | None:
    """``url`` rebuilt from its scheme, host and port alone if the host is on loopback, else None.

    Parsers disagree on odd URLs (``http://aws-host\\@127.0.0.1`` is 127.0.0.1 to urlsplit and
    aws-host to urllib3, which botocore sends through), so anything beyond scheme://host:port/ is
    refused, and what is used is the URL rebuilt from the parts checked."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    odd = parts.username is not None or parts.password is not None or parts.query or parts.fragment
    if odd or parts.scheme not in ("http", "https") or parts.path not in ("", "/"):
        return None
    if any(c in parts.netloc for c in "@\\ \t") or not parts.netloc.isprintable():
        return None
    host = parts.hostname or ""
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            return None
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}" + (f":{port}" if port is not None else "")
