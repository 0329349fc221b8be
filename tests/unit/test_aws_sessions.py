"""Every session in a process reads AWS's service models through one loader: building a session's
clients must not parse the models again (a Lambda container's warm invocations, the test suite)."""

from __future__ import annotations

from ec2ir.aws.session import Aws, AwsSettings


def test_separate_aws_objects_share_one_model_loader() -> None:
    first = Aws(AwsSettings(region="us-east-1", endpoint_url="http://127.0.0.1:9"))
    second = Aws(AwsSettings(region="eu-west-1", endpoint_url="http://127.0.0.1:9"))

    for aws in (first, second):
        aws.client("ec2")
    loaders = [first._shared.session, second._shared.session]

    assert loaders[0] is not loaders[1]  # two sessions: credentials and Regions stay apart
    one, two = (session._session.get_component("data_loader") for session in loaders)
    assert one is two
