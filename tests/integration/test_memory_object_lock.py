"""The memory upload into a bucket with an Object Lock default retention, which refuses any PUT
that carries neither Content-MD5 nor x-amz-sdk-checksum-algorithm.

The emulator's SSM stand-in writes the image into S3 itself, past the HTTP layer where that rule
lives, so here the script runs for real (as root, under sh, with AVML faked) and uploads with the
real curl to the emulator's S3, which applies the rule as AWS does.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from ec2ir.aws.session import Aws
from ec2ir.evidence.bucket import EvidenceBucket
from ec2ir.evidence.memory import (
    HEX_TO_BASE64,
    UPLOAD_CHECKSUM,
    parse_report,
    presigning_client,
    script,
    upload_url,
)
from tests.support.memory import ACCOUNT, CASE, FAKE_AVML

BUCKET = "ec2ir-evidence-locked-memory"
KEY = f"{CASE}/i-0123456789abcdef0/20261128T062000000Z/memory.lime"
REAL_CURL = shutil.which("curl")

# curl as the instance has it: the AVML download is faked (no network here), the upload is real
# and every argument it was given is kept for the test to read.
CURL_WRAPPER = """#!/bin/sh
for ARG in "$@"; do
  if [ "$ARG" = "-T" ]; then
    printf '%s\\n' "$@" > "$CURL_ARGS"
    exec "$REAL_CURL" "$@"
  fi
done
OUT=
while [ $# -gt 0 ]; do
  case "$1" in
    -o) OUT=$2; shift ;;
  esac
  shift
done
cp "$FAKE_AVML" "$OUT"
"""


def locked_bucket(aws: Aws) -> None:
    EvidenceBucket(aws, BUCKET, ACCOUNT, object_lock_days=1).ensure()
    rule = aws.client("s3").get_object_lock_configuration(Bucket=BUCKET)["ObjectLockConfiguration"]["Rule"]
    assert rule["DefaultRetention"]["Mode"] == "COMPLIANCE"


def header_arguments(arguments: list[str]) -> dict[str, str]:
    return {
        name.strip().lower(): value.strip()
        for flag, header in itertools.pairwise(arguments)
        if flag == "-H"
        for name, _, value in [header.partition(":")]
    }


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0 or shutil.which("sh") is None or REAL_CURL is None,
    reason="runs the script as root under sh, uploading with the real curl",
)
def test_the_image_reaches_a_bucket_with_object_lock_default_retention(
    served_aws: Aws, tmp_path: Path
) -> None:
    aws = served_aws  # the real curl needs a real socket
    assert REAL_CURL is not None
    locked_bucket(aws)
    url = upload_url(presigning_client(aws, BUCKET), BUCKET, KEY, 300)
    tools = tmp_path / "bin"
    tools.mkdir()
    (tmp_path / "avml").write_text(FAKE_AVML)
    (tools / "curl").write_text(CURL_WRAPPER)
    (tools / "curl").chmod(0o755)
    digest = hashlib.sha256(FAKE_AVML.encode()).hexdigest()
    lines = script(CASE, url, {"x86_64": digest, "aarch64": digest})
    env = {
        **os.environ,
        "PATH": f"{tools}:{os.environ['PATH']}",
        "FAKE_AVML": str(tmp_path / "avml"),
        "CURL_ARGS": str(tmp_path / "curl-args"),
        "REAL_CURL": REAL_CURL,
    }

    done = subprocess.run(
        ["sh", "-c", "\n".join(lines)], env=env, capture_output=True, text=True, timeout=120
    )

    report = parse_report(done.stdout)
    assert done.returncode == 0 and "error" not in report, (done.stdout, done.stderr)
    stored = aws.client("s3").get_object(Bucket=BUCKET, Key=KEY)
    body = stored["Body"].read()
    assert report["sha256"] == hashlib.sha256(body).hexdigest() and report["size"] == str(len(body))
    assert report["version"] == stored["VersionId"]
    assert stored["ObjectLockMode"] == "COMPLIANCE"  # kept under the bucket's retention
    # The request carried the image's MD5 ...
    sent = header_arguments((tmp_path / "curl-args").read_text().splitlines())
    assert sent[UPLOAD_CHECKSUM.lower()] == base64.b64encode(hashlib.md5(body).digest()).decode()
    # ... and nothing the URL would have had to sign: S3 refuses an unsigned x-amz-* header.
    signed = parse_qs(urlsplit(url).query)["X-Amz-SignedHeaders"][0].split(";")
    assert [name for name in sent if name.startswith("x-amz-") and name not in signed] == []


@pytest.mark.parametrize("owner", ["", "123456789012"], ids=["no-owner", "expected-owner"])
def test_the_upload_line_sends_the_checksum_and_the_url_signs_every_x_amz_header_it_sends(
    aws: Aws, owner: str
) -> None:
    locked_bucket(aws)
    url = upload_url(presigning_client(aws, BUCKET), BUCKET, KEY, 300, owner)

    lines = script(CASE, url, {"x86_64": "", "aarch64": ""}, owner=owner)

    [upload] = [line for line in lines if " -T " in line]
    assert f'-H "{UPLOAD_CHECKSUM}: $MD5"' in upload and f"'{url}'" in upload
    assert lines.index(next(line for line in lines if line.startswith("MD5="))) < lines.index(upload)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    signed = query["X-Amz-SignedHeaders"][0].split(";")
    assert "host" in signed
    sent = [part.split(":", 1)[0].strip('"').lower() for part in upload.split(" -H ")[1:]]
    assert sent == [UPLOAD_CHECKSUM.lower()] + (["x-amz-expected-bucket-owner"] if owner else [])
    assert not any(name.startswith("x-amz-") and name not in signed for name in sent)
    if owner:  # the bucket must be this account's, or S3 refuses the image
        assert "x-amz-expected-bucket-owner" in signed and f'"x-amz-expected-bucket-owner: {owner}"' in upload


@pytest.mark.e2e
@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", bytes(16), b"\xff" * 16, bytes(range(32))])
def test_the_instance_side_base64_of_a_hex_digest_is_base64(data: bytes) -> None:
    done = subprocess.run(
        ["sh", "-c", HEX_TO_BASE64], input=data.hex() + "\n", capture_output=True, text=True, timeout=30
    )

    assert done.stdout.strip() == base64.b64encode(data).decode()
