"""An outbreak across places in the emulator: the run's own account in two Regions, and a member
account, reached through a role it trusts, in two more."""

from __future__ import annotations

from dataclasses import dataclass, field

from ec2ir.aws.session import Aws
from ec2ir.core.models import Place
from ec2ir.engine.outbreak import Outbreak
from ec2ir.engine.places import Places
from ec2ir.store.state import StateStore
from tests.support.fleets import Fleet

MEMBER = "222233334444"
ROLE = "ec2ir-responder"
HOME_OTHER_REGION = "eu-west-1"
MEMBER_REGIONS = ("us-east-1", "ap-southeast-2")


@dataclass
class Infected:
    """One compromised instance: where it is, its ARN and its production group."""

    place: Place
    instance_id: str
    group_id: str
    arn: str


@dataclass
class OutbreakScene:
    places: Places
    outbreak: Outbreak
    infected: list[Infected] = field(default_factory=list)

    def fleet(self, place: Place) -> Fleet:
        return Fleet(self.places.aws_at(place))

    def references(self) -> list[str]:
        """The instances as a responder names them: the run's own by id, the others by ARN."""
        home = self.places.home_place()
        return [i.instance_id if i.place == home else i.arn for i in self.infected]

    def groups_now(self, infected: Infected) -> set[str]:
        return set(next(iter(self.fleet(infected.place).eni_groups([infected.instance_id]).values())))


def outbreak_scene(aws: Aws, concurrency: int = 4) -> OutbreakScene:
    """One infected instance in each of four places, each in its own VPC and production group."""
    places = Places(aws, role_name=ROLE)
    outbreak = Outbreak(aws, StateStore(aws), concurrency=concurrency, places=places)
    scene = OutbreakScene(places, outbreak)
    home = places.home_place()
    where = [home, Place(home.account, HOME_OTHER_REGION), *(Place(MEMBER, r) for r in MEMBER_REGIONS)]
    for octet, place in enumerate(where, start=1):
        fleet = scene.fleet(place)
        vpc = fleet.vpc(octet)
        group = fleet.group(vpc, f"web-{octet}")
        instance_id = fleet.instance(vpc, [group])
        arn = f"arn:aws:ec2:{place.region}:{place.account}:instance/{instance_id}"
        scene.infected.append(Infected(place, instance_id, group, arn))
    return scene
