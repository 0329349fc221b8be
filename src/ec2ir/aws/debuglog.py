"""``--debug``: botocore's wire log on stderr, with every secret taken out.

botocore logs each request's headers and body and each response's body at DEBUG. Those carry
what must never reach a terminal, a ticket or a shared log: the session token
(``X-Amz-Security-Token``), the request signature (``Authorization``), the credentials that
``AssumeRole`` answers with, and pre-signed URLs (their query string is a bearer credential for
as long as it lives). The filter rewrites each record's text before any handler sees it, and every
line goes through ``printable``: a response body quotes what an attacker wrote (a tag, console
output), and must not drive the terminal.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

from ec2ir.core.text import printable

REDACTED = "<redacted>"
LOGGERS = ("botocore", "ec2ir")

_HEADERS = "authorization|x-amz-security-token|x-amz-sso_bearer_token"
# SAMLAssertion and WebIdentityToken (STS), accessToken, refreshToken and clientSecret (SSO-OIDC)
_FIELDS = (
    "SecretAccessKey|SessionToken|aws_secret_access_key|aws_session_token|Token|WebIdentityToken|"
    "SAMLAssertion|accessToken|refreshToken|clientSecret"
)

_PATTERNS = (
    # headers, as botocore prints them: a dict repr with quoted names and values
    re.compile(rf"(?i)('(?:{_HEADERS})'\s*:\s*b?')[^']*(')"),
    re.compile(rf'(?i)("(?:{_HEADERS})"\s*:\s*b?")[^"]*(")'),
    # credentials in a request's parameters (a dict repr) or a JSON body (STS, SSO-OIDC, ec2ir's own)
    re.compile(rf"(?i)('(?:{_FIELDS})'\s*:\s*b?')[^']*(')"),
    re.compile(rf'(?i)("(?:{_FIELDS})"\s*:\s*")[^"]*(")'),
    # credentials in an XML body (STS answers in XML)
    re.compile(r"(?i)(<(SecretAccessKey|SessionToken)>)[^<]*(</\2>)"),
    # SigV4's debug lines: the canonical request's token header, and the signature itself
    re.compile(r"(?im)^(x-amz-security-token:)[^\n]*()"),
    re.compile(r"(?i)(Signature:\s*)[0-9a-f]{64}()"),
    # pre-signed URLs and form bodies: signature, token and credential parameters
    re.compile(r"(?i)((?:X-Amz-Signature|X-Amz-Security-Token|X-Amz-Credential|Signature)=)[^&\s'\"]*()"),
)


def redact(text: str) -> str:
    """``text`` with every credential botocore may log replaced by ``<redacted>``."""
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)}{REDACTED}{m.group(m.lastindex or 1)}", text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:  # a traceback quotes what the call carried: redacted and escaped too
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, None
        record.msg = printable(redact(message))
        record.args = None
        return True


def enable(
    stream: TextIO | None = None, level: int = logging.DEBUG, loggers: tuple[str, ...] = LOGGERS
) -> logging.Handler:
    """Send the ``loggers``' records at ``level`` and above (by default botocore's and ec2ir's
    DEBUG log; ``-v`` asks for ec2ir's INFO: each step as it starts and ends) to ``stream``
    (stderr), redacted and escaped; the handler, so that a caller can remove it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    for name in loggers:
        logger = logging.getLogger(name)
        logger.setLevel(min(level, logger.getEffectiveLevel()))
        logger.addHandler(handler)
    return handler


def disable(handler: logging.Handler) -> None:
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if handler in logger.handlers:
            logger.removeHandler(handler)
            logger.setLevel(logging.NOTSET)
