"""--debug: botocore's wire log with every credential taken out, and nothing that drives a
terminal."""

from __future__ import annotations

import io
import logging
import re

import pytest

from ec2ir.aws import debuglog
from ec2ir.cli import app as cli
from ec2ir.emulator.server import Emulator
from tests.support.fleets import Fleet

TOKEN = "FwoGZXIvYXdzEXAMPLETOKENVALUE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SIGNATURE = "a" * 64


@pytest.mark.parametrize(
    "line",
    [
        f"Sending http request: <AWSPreparedRequest headers={{'Authorization': b'AWS4-HMAC-SHA256 "
        f"Credential=AKIA/20261130/us-east-1/ec2/aws4_request, Signature={SIGNATURE}', "
        f"'X-Amz-Security-Token': b'{TOKEN}'}}>",
        f"CanonicalRequest:\nPOST\n/\n\nhost:ec2.amazonaws.com\nx-amz-security-token:{TOKEN}\n",
        f"Signature:\n{SIGNATURE}",
        f"Response body:\nb'<AssumeRoleResult><Credentials><SecretAccessKey>{SECRET}</SecretAccessKey>"
        f"<SessionToken>{TOKEN}</SessionToken></Credentials></AssumeRoleResult>'",
        f'{{"Credentials": {{"SecretAccessKey": "{SECRET}", "SessionToken": "{TOKEN}"}}}}',
        f"PUT https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F&X-Amz-Security-Token={TOKEN}"
        f"&X-Amz-Signature={SIGNATURE}",
        f"Making request for OperationModel(name=AssumeRoleWithWebIdentity) with params: {{'body': "
        f"{{'WebIdentityToken': '{TOKEN}', 'RoleArn': 'arn:aws:iam::1:role/r'}}}}",
        f"Sending http request: <AWSPreparedRequest headers={{'x-amz-sso_bearer_token': b'{TOKEN}'}}>",
        f'Response body: b\'{{"accessToken":"{TOKEN}","refreshToken":"{SECRET}","expiresIn":3600}}\'',
        f'body: {{"clientId":"c","clientSecret":"{SECRET}","refreshToken":"{TOKEN}"}}',
    ],
)
def test_no_credential_survives_redaction(line: str) -> None:
    said = debuglog.redact(line)
    assert TOKEN not in said and SECRET not in said and SIGNATURE not in said
    assert debuglog.REDACTED in said


def test_the_debug_log_is_redacted_and_printable() -> None:
    stream = io.StringIO()
    handler = debuglog.enable(stream)
    try:
        logging.getLogger("botocore.endpoint").debug(
            "Response body: %s", f"<Value>\x1b]0;owned\x07</Value><SessionToken>{TOKEN}</SessionToken>"
        )
    finally:
        debuglog.disable(handler)
    said = stream.getvalue()
    assert TOKEN not in said and "\x1b" not in said and "\x07" not in said
    assert "\\x1b]0;owned\\x07" in said


def test_debug_through_the_cli_logs_the_wire_without_secrets(
    emulator: Emulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    code = cli.main(
        ["--debug", "status", "--endpoint-url", emulator.endpoint_url, "--table", "no-such-table"]
    )
    err = capsys.readouterr().err
    assert code != 0  # no table: a clear error, after the wire log
    assert "botocore" in err and "DescribeTable" in err
    assert TOKEN not in err


def test_verbose_says_each_step_as_it_starts_and_ends(
    emulator: Emulator, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    argv = ["isolate", instance, "--case", "IR-V", "--office-cidr", "203.0.113.0/24", "--no-evidence"]

    assert cli.main(["-v", *argv, "--endpoint-url", emulator.endpoint_url]) == 0

    err = capsys.readouterr().err
    assert f"{instance} network: started" in err
    assert re.search(rf"{instance} network: done: .*\(\d+\.\d\d s\)", err)
    assert "botocore" not in err  # -v is ec2ir's own steps, not the wire


def test_a_traceback_in_the_debug_log_is_redacted_and_escaped() -> None:
    stream = io.StringIO()
    handler = debuglog.enable(stream)
    try:
        try:
            raise ValueError(f"<SessionToken>{TOKEN}</SessionToken>\x1b[2J")
        except ValueError:
            logging.getLogger("botocore.parsers").debug("could not parse", exc_info=True)
    finally:
        debuglog.disable(handler)
    said = stream.getvalue()
    assert "could not parse" in said and "ValueError" in said
    assert TOKEN not in said and "\x1b" not in said
