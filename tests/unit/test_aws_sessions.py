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


def test_clients_that_share_an_endpoint_provider_still_resolve_their_own_endpoints() -> None:
    """The tests share one endpoint provider per set of rules (tests/support/clients.py): each
    client must still reach its own Region's and service's endpoint, and its own FIPS choice."""
    from botocore.config import Config

    def endpoint(service: str, region: str, fips: bool = False) -> str:
        aws = Aws(AwsSettings(region=region))
        config = Config(use_fips_endpoint=True)
        client = aws._make_session().client(service, config=config) if fips else aws.client(service)
        return str(client.meta.endpoint_url)

    for _ in range(2):  # the second round answers from the shared providers
        assert endpoint("ec2", "us-east-1") == "https://ec2.us-east-1.amazonaws.com"
        assert endpoint("ec2", "eu-west-1") == "https://ec2.eu-west-1.amazonaws.com"
        assert endpoint("ec2", "us-gov-west-1") == "https://ec2.us-gov-west-1.amazonaws.com"
        assert endpoint("ec2", "us-east-1", fips=True) == "https://ec2-fips.us-east-1.amazonaws.com"
        assert endpoint("s3", "eu-west-1") == "https://s3.eu-west-1.amazonaws.com"
        assert endpoint("dynamodb", "cn-north-1") == "https://dynamodb.cn-north-1.amazonaws.com.cn"
