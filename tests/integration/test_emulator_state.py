"""The in-process emulator's saved states and its speed-ups: tools for tests that must give moto's
own answers, exactly."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from ec2ir.aws.session import Aws
from ec2ir.emulator.fixes.apply import apply_fidelity_fixes, fidelity, revert_fidelity_fixes
from ec2ir.emulator.fixes.speed import SPEEDUPS
from ec2ir.emulator.inprocess import InProcessEmulator
from ec2ir.emulator.server import DEMO_REGION
from tests.support.fleets import Fleet

T = TypeVar("T")


def group_names(fleet: Fleet) -> set[str]:
    return {group["GroupName"] for group in fleet.ec2.describe_security_groups()["SecurityGroups"]}


def test_a_restored_state_is_exactly_the_saved_one_each_time(
    emulator: InProcessEmulator, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    kept = fleet.group(vpc, "kept")
    instance = fleet.instance(vpc, [kept])
    saved_groups = group_names(fleet)
    saved_enis = fleet.eni_groups([instance])
    saved = emulator.save()

    for _ in range(2):  # one saved state serves many restores: each is a copy of its own
        fleet.group(vpc, "added since")
        fleet.ec2.modify_network_interface_attribute(
            NetworkInterfaceId=next(iter(saved_enis)), Groups=[fleet.group(vpc, "swapped")]
        )
        fleet.aws.client("s3").create_bucket(Bucket="first-used-since")  # a service new since the save

        emulator.restore(saved)

        assert group_names(fleet) == saved_groups
        assert fleet.eni_groups([instance]) == saved_enis
        assert fleet.aws.client("s3").list_buckets()["Buckets"] == []

    # and the restored state is live: it changes as any other does
    fleet.group(vpc, "after the restore")
    assert group_names(fleet) == saved_groups | {"after the restore"}


def test_the_speed_ups_give_moto_s_own_answers() -> None:
    """Each speed-up answers as the moto function it replaces (it reads once what moto read on
    each request), and comes with any choice of fidelity fixes."""
    import moto.backends
    import moto.core.responses
    from moto.ec2.responses import EC2Response
    from moto.s3.responses import S3Response

    responses: Any = moto.core.responses  # moto imports the function there without re-exporting it
    classes = (EC2Response, S3Response)
    with fidelity(False):  # plain moto: no fix and no speed-up
        plain_listing = moto.backends.list_of_moto_modules
        listed = list(plain_listing())
        names = [set(responses.method_names_from_class(c)) for c in classes]
    try:
        revert_fidelity_fixes()
        apply_fidelity_fixes(only=())  # no fidelity fix chosen: the speed-ups still come
        assert moto.backends.list_of_moto_modules is not plain_listing
        for _ in range(2):  # the second answer comes from what the first read
            assert list(moto.backends.list_of_moto_modules()) == listed
            assert [set(responses.method_names_from_class(c)) for c in classes] == names
    finally:
        revert_fidelity_fixes()
        apply_fidelity_fixes()
    assert "ec2" in listed and "describe_instances" in names[0]
    assert {fix.name for fix in SPEEDUPS} == {
        "moto-modules-once",
        "method-names-once",
        "serializer-keys-once",
        "dynamodb-values-as-they-are",
        "key-material-when-used",
    }


def kms_keys_in_use(aws: Aws) -> list[Any]:
    """moto's KMS keys in the tests' account and region (its backend's own objects)."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.kms.models import kms_backends

    return list(kms_backends[DEFAULT_ACCOUNT_ID][aws.settings.region or DEMO_REGION].keys.values())


def signs_and_verifies(aws: Aws) -> list[tuple[str, bool, bool, bool]]:
    """For an RSA and an EC signing key: does KMS verify its own signature, and refuse a
    tampered message, and does its public key verify the signature outside KMS."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    kms = aws.client("kms")
    seen = []
    for spec, algorithm in (("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256"), ("ECC_NIST_P256", "ECDSA_SHA_256")):
        key = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec=spec)["KeyMetadata"]["KeyId"]
        signed = kms.sign(KeyId=key, Message=b"evidence", SigningAlgorithm=algorithm)["Signature"]

        def valid(message: bytes, key: str = key, signed: bytes = signed, algorithm: str = algorithm) -> bool:
            answer = kms.verify(KeyId=key, Message=message, Signature=signed, SigningAlgorithm=algorithm)
            return bool(answer["SignatureValid"])

        public: Any = serialization.load_der_public_key(kms.get_public_key(KeyId=key)["PublicKey"])
        if spec.startswith("RSA"):
            public.verify(signed, b"evidence", padding.PKCS1v15(), hashes.SHA256())
        else:
            public.verify(signed, b"evidence", ec.ECDSA(hashes.SHA256()))
        seen.append((spec, valid(b"evidence"), valid(b"tampered"), True))
    return seen


def test_a_kms_key_s_private_key_is_made_when_first_used_and_works_as_moto_s_own(
    emulator: InProcessEmulator, aws: Aws
) -> None:
    """``key-material-when-used``: the default KMS key a new DynamoDB table gets has no private
    key made yet; signing keys sign and verify as plain moto's do, their public keys verify outside
    KMS, and a key saved before its first use still works after a restore."""
    from ec2ir.store.state import StateStore

    StateStore(aws).ensure_table()
    table_keys = kms_keys_in_use(aws)
    assert table_keys, "moto no longer gives a new table a default KMS key: this speed-up is moot"
    assert all(key.private_key.made is None for key in table_keys)

    plain, sped_up = plain_then_sped_up(lambda: signs_and_verifies(aws))
    assert plain == sped_up == [("RSA_2048", True, False, True), ("ECC_NIST_P256", True, False, True)]

    kms = aws.client("kms")
    unused = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="RSA_2048")["KeyMetadata"]["KeyId"]
    saved = emulator.save()
    public_keys = set()
    for _ in range(2):  # as with plain moto, whose keys copy to themselves: one key in every restore
        emulator.restore(saved)
        public_keys.add(kms.get_public_key(KeyId=unused)["PublicKey"])
        signed = kms.sign(KeyId=unused, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"]
        answer = kms.verify(
            KeyId=unused, Message=b"m", Signature=signed, SigningAlgorithm="RSASSA_PSS_SHA_256"
        )
        assert answer["SignatureValid"] is True
    assert len(public_keys) == 1


def plain_then_sped_up(make: Callable[[], T]) -> tuple[T, T]:
    """``make``'s answer from plain moto, then from moto with only the speed-ups (no fidelity fix
    in either, so any difference is the speed-ups'); the usual fixes return after."""
    try:
        revert_fidelity_fixes()
        plain = make()
        apply_fidelity_fixes(only=())
        sped_up = make()
    finally:
        revert_fidelity_fixes()
        apply_fidelity_fixes()
    return plain, sped_up


Calls = list[tuple[str, dict[str, Any]]]  # (a client's method, its arguments), in order


def raw_bodies(client: Any, calls: Calls) -> list[bytes]:
    """The bodies the emulator answered ``calls`` with, byte for byte, before botocore parsed them;
    an error's too (botocore hands the body to ``after-call`` before it raises the error)."""
    from botocore.exceptions import ClientError

    bodies: list[bytes] = []

    def keep(http_response: Any, **_: Any) -> None:
        bodies.append(http_response.content)

    client.meta.events.register("after-call", keep)
    try:
        for operation, arguments in calls:
            with contextlib.suppress(ClientError):  # its body is kept: an answer to compare too
                getattr(client, operation)(**arguments)
    finally:
        client.meta.events.unregister("after-call", keep)
    return bodies


# An item holding every AttributeValue type, nested, blobs among them (which moto encodes itself).
EVERY_TYPE: dict[str, Any] = {
    "pk": {"S": "case-1"},
    "sk": {"N": "1"},
    "text": {"S": 'ünïcödé <&> "quoted"'},
    "empty": {"S": ""},
    "number": {"N": "-12.5E3"},
    "blob": {"B": b"\x00\xffraw"},
    "strings": {"SS": ["a", "b"]},
    "numbers": {"NS": ["1", "2.5"]},
    "blobs": {"BS": [b"x", b"\x01"]},
    "map": {
        "M": {
            "inner": {"S": "x"},
            "deeper": {"M": {"blob": {"B": b"z"}, "flag": {"BOOL": False}, "none": {"NULL": True}}},
            "list": {"L": [{"N": "3"}, {"NULL": True}, {"SS": ["q"]}]},
            "empty": {"M": {}},
        }
    },
    "list": {"L": [{"S": "a"}, {"M": {}}, {"L": []}, {"B": b"q"}, {"BOOL": True}, {"L": [{"N": "0"}]}]},
    "null": {"NULL": True},
    "yes": {"BOOL": True},
    "no": {"BOOL": False},
}
# The same without any blob: every value of it takes the fast path.
NO_BLOB = {
    name: value for name, value in EVERY_TYPE.items() if name not in ("blob", "blobs", "map", "list")
} | {"pk": {"S": "case-2"}, "map": {"M": {"inner": {"L": [{"M": {"deep": {"N": "7"}}}]}}}}


def cases_table(dynamodb: Any) -> None:
    """A table holding ``EVERY_TYPE`` and ``NO_BLOB``."""
    dynamodb.create_table(
        TableName="cases",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for item in (EVERY_TYPE, NO_BLOB):
        dynamodb.put_item(TableName="cases", Item=item)


def test_the_serializer_speed_ups_give_moto_s_own_bodies(fleet: Fleet) -> None:
    """EC2's XML and DynamoDB's JSON, from a real scene, byte for byte as plain moto writes them."""
    vpc = fleet.vpc(1)
    groups = [fleet.group(vpc, "web"), fleet.group(vpc, "db")]
    instance = fleet.instance(vpc, groups[:1], extra_enis=[groups])
    ec2 = fleet.ec2
    ec2.create_tags(Resources=[instance, *groups], Tags=[{"Key": "Name", "Value": "<web & db>"}])
    dynamodb = fleet.aws.client("dynamodb")
    cases_table(dynamodb)
    ec2_calls: Calls = [
        ("describe_instances", {}),
        ("describe_security_groups", {}),
        ("describe_network_interfaces", {}),
        ("describe_subnets", {}),
    ]
    dynamodb_calls: Calls = [
        ("get_item", {"TableName": "cases", "Key": {"pk": {"S": "case-1"}, "sk": {"N": "1"}}}),
        ("get_item", {"TableName": "cases", "Key": {"pk": {"S": "case-2"}, "sk": {"N": "1"}}}),
        ("get_item", {"TableName": "cases", "Key": {"pk": {"S": "absent"}, "sk": {"N": "1"}}}),
        (
            "query",
            {
                "TableName": "cases",
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": "case-1"}},
            },
        ),
        ("scan", {"TableName": "cases"}),
        ("scan", {"TableName": "cases", "Limit": 1}),  # a LastEvaluatedKey too
        ("put_item", {"TableName": "cases", "Item": EVERY_TYPE, "ReturnValues": "ALL_OLD"}),
        ("put_item", {"TableName": "cases", "Item": NO_BLOB, "ReturnValues": "ALL_OLD"}),
    ]

    def bodies() -> list[bytes]:
        return raw_bodies(ec2, ec2_calls) + raw_bodies(dynamodb, dynamodb_calls)

    plain, sped_up = plain_then_sped_up(bodies)

    assert sped_up == plain
    assert len(plain) == len(ec2_calls) + len(dynamodb_calls)
    assert instance.encode() in plain[0] and b"&lt;web &amp; db&gt;" in plain[1]
    for member in (
        b'"B": ',
        b'"BS": ',
        b'"SS": ',
        b'"NS": ',
        b'"M": {',
        b'"L": [',
        b'"NULL": true',
        b'"BOOL": false',
    ):
        assert member in plain[len(ec2_calls)]  # the item with every type came back whole


ABSENT_INSTANCE = "i-0123456789abcdef0"
TRUST_EC2 = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


CASE_1 = {"pk": {"S": "case-1"}, "sk": {"N": "1"}}  # EVERY_TYPE's key, in ``cases_table``
DYNAMODB_CALLS: Calls = [
    ("describe_table", {"TableName": "cases"}),
    (
        "update_item",
        {
            "TableName": "cases",
            "Key": CASE_1,
            "UpdateExpression": "SET isolated = :yes",
            "ExpressionAttributeValues": {":yes": {"BOOL": True}},
            "ReturnValues": "ALL_NEW",
        },
    ),
    (
        "put_item",
        {
            "TableName": "cases",
            "Item": CASE_1,
            "ConditionExpression": "attribute_not_exists(pk)",  # ConditionalCheckFailed
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        },
    ),
    ("get_item", {"TableName": "absent", "Key": CASE_1}),  # ResourceNotFoundException
]


def service_scene(fleet: Fleet) -> dict[str, str]:
    """A little of each service the tests reach, built once: the ids the calls name."""
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    instance = fleet.instance(vpc, [web])
    fleet.asg_member(vpc, [web])
    target_group = fleet.alb_target_group(vpc, [web])
    cases_table(fleet.aws.client("dynamodb"))
    s3 = fleet.aws.client("s3")
    s3.create_bucket(Bucket="evidence-cases")
    s3.put_object(Bucket="evidence-cases", Key="notes/one.txt", Body=b"<one & only>")
    fleet.aws.client("iam").create_role(RoleName="responder", AssumeRolePolicyDocument=json.dumps(TRUST_EC2))
    return {"vpc": vpc, "group": web, "instance": instance, "target_group": target_group}


def calls_by_service(scene: dict[str, str]) -> dict[str, Calls]:
    """Reads, writes (Create*, Modify*, Authorize*, Put*, Update*) and errors, in each service."""
    web, instance, bucket = scene["group"], scene["instance"], "evidence-cases"
    rule = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.9.0.0/16"}]}
    return {
        "ec2": [
            ("describe_vpcs", {}),
            ("create_security_group", {"GroupName": "new", "Description": "new", "VpcId": scene["vpc"]}),
            ("authorize_security_group_ingress", {"GroupId": web, "IpPermissions": [rule]}),
            ("modify_instance_attribute", {"InstanceId": instance, "DisableApiTermination": {"Value": True}}),
            ("create_tags", {"Resources": [instance], "Tags": [{"Key": "case", "Value": "<1 & 2>"}]}),
            ("describe_instances", {"InstanceIds": [instance]}),
            ("describe_security_group_rules", {"Filters": [{"Name": "group-id", "Values": [web]}]}),
            ("describe_instances", {"InstanceIds": [ABSENT_INSTANCE]}),  # InvalidInstanceID.NotFound
        ],
        "dynamodb": DYNAMODB_CALLS,
        "s3": [
            ("list_objects_v2", {"Bucket": bucket}),
            (
                "put_bucket_tagging",
                {"Bucket": bucket, "Tagging": {"TagSet": [{"Key": "case", "Value": "1"}]}},
            ),
            ("get_bucket_tagging", {"Bucket": bucket}),
            ("get_object", {"Bucket": bucket, "Key": "notes/absent.txt"}),  # NoSuchKey
        ],
        "iam": [
            ("list_roles", {}),
            ("get_role", {"RoleName": "responder"}),
            ("get_role", {"RoleName": "absent"}),
        ],
        "sts": [("get_caller_identity", {})],
        "autoscaling": [
            ("describe_auto_scaling_groups", {}),
            ("update_auto_scaling_group", {"AutoScalingGroupName": "web-asg", "MaxSize": 4}),
            ("describe_launch_configurations", {}),
        ],
        "elbv2": [
            ("describe_load_balancers", {}),
            ("describe_target_health", {"TargetGroupArn": scene["target_group"]}),
            ("describe_load_balancers", {"Names": ["absent"]}),  # LoadBalancerNotFound
        ],
    }


def test_the_speed_ups_give_moto_s_own_bodies_in_every_service(
    emulator: InProcessEmulator, fleet: Fleet
) -> None:
    """Each service's answers, errors among them, byte for byte as plain moto writes them: every
    run starts from the same saved state and the same seed of moto's ids and request ids."""
    from moto.moto_api._internal import mock_random

    calls = calls_by_service(service_scene(fleet))
    saved = emulator.save()

    def bodies() -> list[bytes]:
        emulator.restore(saved)
        mock_random.seed(2024)
        return [
            body for service, made in calls.items() for body in raw_bodies(fleet.aws.client(service), made)
        ]

    plain, sped_up = plain_then_sped_up(bodies)

    assert sped_up == plain
    assert len(plain) == sum(map(len, calls.values()))
    answered = b"\n".join(plain)
    for error in (
        b"InvalidInstanceID.NotFound",
        b"ConditionalCheckFailedException",
        b"ResourceNotFoundException",
        b"NoSuchKey",
        b"NoSuchEntity",
        b"LoadBalancerNotFound",
    ):
        assert error in answered
    assert b"&lt;1 &amp; 2&gt;" in answered and b'"isolated": {"BOOL": true}' in answered


def test_moto_keeps_one_service_model_whose_shapes_each_have_one_parent() -> None:
    """Why no speed-up caches service models: moto 5.2.5 already keeps one per service (its
    ``get_service_model`` is ``functools.cache``d), with botocore's caches of operations and
    members in it. The serialiser writes ``member.parent`` on those shared shapes, which stays
    right because botocore resolves a new shape object for each reference: a shape named in two
    structures (Tags, a TagList in both) is two objects, each with its own parent."""
    from moto.core.utils import get_service_model

    ec2 = get_service_model("ec2")
    describe = ec2.operation_model("DescribeInstances")
    assert get_service_model("ec2") is ec2 and ec2.operation_model("DescribeInstances") is describe
    instance = describe.output_shape.members["Reservations"].member.members["Instances"].member
    again = ec2.operation_model("DescribeInstances").output_shape.members["Reservations"]
    assert again.member.members["Instances"].member.members["Tags"] is instance.members["Tags"]
    group = ec2.operation_model("DescribeSecurityGroups").output_shape.members["SecurityGroups"].member
    assert instance.members["Tags"].name == group.members["Tags"].name == "TagList"
    assert instance.members["Tags"] is not group.members["Tags"]


class Colour(StrEnum):
    RED = "red"


class HasAttributes:
    S = "an attribute, not a key"


class Mapping(dict[str, Any]):
    pass


# Values the fast path must leave to moto (or write exactly as moto does): odd, or not plain.
ODD_VALUES: list[Any] = [
    {},
    {"S": None},
    {"N": "1", "S": "x"},  # two members, given out of the model's order
    {"S": "x", "unknown": "y"},
    {"s": "lower-case"},
    {"ListAttributeValue": [{"S": "an alias moto reads"}]},
    {"S": Colour.RED},
    {"N": 5},
    {"N": Decimal("1.5")},
    {"N": 1.5},
    {"BOOL": 1},
    {"BOOL": "true"},
    {"NULL": False},
    {"SS": ("a", "b")},
    {"SS": ["a", None]},
    {"SS": []},
    {"M": {"": {"S": "an empty name"}}},
    {"M": {"k": None}},
    {"M": {1: {"S": "a number for a name"}}},
    {"L": [None]},
    {"L": [{"S": "x"}, "raw"]},
    {"L": ({"S": "x"},)},
    {"B": b"bytes"},
    {"B": "text"},
    {"BS": [b"a", "b"]},
    Mapping(S="a dict of another class"),
    HasAttributes(),
    None,
    "raw",
]


def test_dynamodb_values_serialise_as_moto_does_even_odd_ones() -> None:
    """Through moto's own JSONSerializer: each odd value (an item's attribute, an item, a list
    entry) gives plain moto's body, or its error; and a plain item takes the fast path."""
    from moto.core.serialize import JSONSerializer, XFormedAttributePicker
    from moto.core.utils import get_service_model

    get_item = get_service_model("dynamodb").operation_model("GetItem")
    calls: list[str] = []

    def serialised(result: Any) -> str:
        serializer = JSONSerializer(operation_model=get_item, value_picker=XFormedAttributePicker())
        picked = serializer.get_value

        def counted(value: Any, key: str, shape: Any) -> Any:
            calls.append(key)
            return picked(value, key, shape)

        serializer.get_value = counted  # type: ignore[method-assign]
        try:
            return str(serializer.serialize(result)["body"])
        except Exception as error:  # an error is moto's answer too, and must stay the same
            return f"raised {type(error).__name__}"

    results = [{"Item": {"odd": odd, "plain": {"S": "x"}}} for odd in ODD_VALUES]
    results += [{"Item": odd} for odd in ODD_VALUES]
    results += [{"Item": {"l": {"L": [odd, {"N": "1"}]}}} for odd in ODD_VALUES]

    plain, sped_up = plain_then_sped_up(lambda: [serialised(result) for result in results])

    assert sped_up == plain
    assert len(set(plain)) > len(ODD_VALUES)  # they are different bodies, and few are errors
    calls.clear()
    plain_item, sped_up_item = plain_then_sped_up(lambda: serialised({"Item": NO_BLOB}))
    assert sped_up_item == plain_item
    # moto picked each of the ten members of each value; the fast path picked GetItem's own only
    assert len(calls) - len(get_item.output_shape.members) > 10 * len(NO_BLOB)
    assert calls[-len(get_item.output_shape.members) :] == list(get_item.output_shape.members)


def probe_model(name: str, shapes: dict[str, Any]) -> Any:
    """A small service model of moto's own classes, to set members and parents as a test needs."""
    from moto.core.model import ServiceModel

    metadata = {"protocol": "json", "apiVersion": "2020-01-01", "serviceId": name, "endpointPrefix": name}
    return ServiceModel({"metadata": metadata, "operations": {}, "shapes": shapes}, name)


class Widget:
    Id = "the class's short name for WidgetId"


class Gizmo:
    Id = "not Gizmo's short name for WidgetId"


class Aliased:
    class Meta:
        serialization_aliases: ClassVar[dict[str, str]] = {"WidgetId": "ident"}

    ident = "an explicit alias"


def widget(*members: tuple[str, str], tag_list: str = "list", named: dict[str, str] | None = None) -> Any:
    """A model whose structure Widget has WidgetId, Tags (of shape TagList) and Named, and more."""
    listing = {"type": "list", "member": {"shape": "Str"}}
    shapes: dict[str, Any] = {"Str": {"type": "string"}, "LabelList": listing}
    shapes["TagList"] = listing if tag_list == "list" else {"type": "string"}
    widget_members = {"WidgetId": {"shape": "Str"}, "Tags": {"shape": "TagList"}, "Named": {"shape": "Str"}}
    widget_members["Named"] |= named or {}
    widget_members |= {name: {"shape": shape} for name, shape in members}
    shapes["Widget"] = {"type": "structure", "members": widget_members}
    shapes["Holder"] = {"type": "structure", "members": {"WidgetId": {"shape": "Str"}}}  # not a prefix
    return probe_model("probe", shapes)


def picker_cases() -> list[tuple[Any, Any]]:
    """(picker, context) pairs, in pairs that differ in one fact an alias provider reads, each
    with a different answer from moto: a cache keyed without that fact answers one of them wrong."""
    from moto.core.serialize import AttributePicker, AttributePickerContext, NoAlias, XFormedAttributePicker

    alone = widget()
    crowded = widget(("Id", "Str"), ("TagList", "Str"))  # Widget's aliases are siblings here
    relabelled = widget(("Tags", "LabelList"))  # Tags of another shape name
    flat = widget(tag_list="string")  # TagList a string: no shape name alias
    wired = widget(named={"locationName": "nom"})  # Named has a wire name

    def member(model: Any, parent: str, key: str) -> Any:
        structure = model.shape_for(parent)
        shape = structure.members[key]
        shape.parent = structure
        return shape

    unparented = alone.shape_for("Str")
    unparented_list = alone.shape_for("TagList")
    list_parented = alone.shape_for("Str")
    list_parented.parent = probe_model(
        "listy", {"Str": {"type": "string"}, "Widget": {"type": "list", "member": {"shape": "Str"}}}
    ).shape_for("Widget")  # Widget, not a structure
    keyed = {"Id": 1, "TagList": 2, "Tags": 3, "LabelList": 4, "nom": 5, "widget_id": 6}
    default, xformed, bare = AttributePicker(), XFormedAttributePicker(), AttributePicker([NoAlias])
    plain_aliased = type("Aliased", (), {"ident": "no alias: no Meta"})  # Aliased's name, no Meta

    def case(picker: Any, obj: Any, shape: Any, key: str) -> tuple[Any, Any]:
        return picker, AttributePickerContext(obj=obj, key=key, shape=shape, key_path="Probe")

    return [
        case(default, keyed, member(alone, "Widget", "WidgetId"), "WidgetId"),  # prefix alias: Id
        case(default, keyed, member(crowded, "Widget", "WidgetId"), "WidgetId"),  # Id a sibling
        case(default, keyed, member(alone, "Holder", "WidgetId"), "WidgetId"),  # parent's name
        case(default, keyed, unparented, "WidgetId"),  # no parent
        case(default, keyed, list_parented, "WidgetId"),  # a parent, not a structure
        case(bare, keyed, member(alone, "Widget", "WidgetId"), "WidgetId"),  # other providers
        case(xformed, keyed, unparented, "WidgetId"),  # the picker's class: widget_id
        case(default, keyed, member(alone, "Widget", "Tags"), "Tags"),  # shape name alias: TagList
        case(default, keyed, member(crowded, "Widget", "Tags"), "Tags"),  # TagList a sibling
        case(default, keyed, member(relabelled, "Widget", "Tags"), "Tags"),  # the shape's name
        case(default, keyed, member(flat, "Widget", "Tags"), "Tags"),  # the shape's type
        case(default, keyed, unparented_list, "Tags"),  # no parent, so no sibling
        case(default, keyed, member(alone, "Widget", "Named"), "Named"),
        case(default, keyed, member(wired, "Widget", "Named"), "Named"),  # a wire name: nom
        case(default, Widget(), unparented, "WidgetId"),  # the class's name: Id
        case(default, Gizmo(), unparented, "WidgetId"),
        case(default, plain_aliased(), unparented, "WidgetId"),
        case(default, Aliased(), unparented, "WidgetId"),  # an explicit alias: ident
        case(default, keyed, unparented, "Id"),  # the key itself
    ]


def test_the_alias_keys_are_kept_apart_by_everything_moto_reads() -> None:
    """Each pair of cases differs in one fact, and moto picks a different attribute for each: a
    cache of the keys that missed that fact would answer the second as the first."""

    def answers() -> list[Any]:
        cases = picker_cases()
        forth = [picker(context) for picker, context in cases]
        back = [picker(context) for picker, context in reversed(cases)]  # each warm from the others
        return [*forth, *reversed(back)]

    plain, sped_up = plain_then_sped_up(answers)

    assert sped_up == plain
    half = len(plain) // 2
    assert plain[:half] == plain[half:]
    assert len(set(map(repr, plain[:half]))) >= 8  # the facts lead to different attributes
