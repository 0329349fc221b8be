"""Input checks shared by every adapter. Each failure is a ``UsageError``: nothing has changed yet."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from ec2ir.core.errors import UsageError

INSTANCE_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
GROUP_ID = re.compile(r"^sg-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
ACCOUNT_ID = re.compile(r"^[0-9]{12}$")
# A shorter office prefix is the internet in disguise (0.0.0.0/1 and 128.0.0.0/1 are every IPv4
# address): an IPv4 /8 is the largest block ever assigned to one organisation, and an IPv6 /32 is a
# whole ISP's allocation from its registry.
SHORTEST_OFFICE_PREFIX = {4: 8, 6: 32}


def instance_ids(raw: Iterable[str]) -> list[str]:
    """Return the ids in their given order, without repeats; refuse the call if any is malformed."""
    ids = [item.strip() for item in raw]
    if not ids:
        raise UsageError("no instance ids given", "name at least one instance, e.g. i-0123456789abcdef0")
    bad = [item for item in ids if not INSTANCE_ID.fullmatch(item)]
    if bad:
        shown = ", ".join(repr(item) for item in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise UsageError(
            f"malformed instance id: {shown}",
            "an instance id looks like i-0123456789abcdef0 (i- and 8 or 17 lowercase hex digits)",
        )
    return list(dict.fromkeys(ids))


def case_id(raw: str) -> str:
    if not CASE_ID.match(raw or ""):
        raise UsageError(
            f"malformed case id {raw!r}",
            "use 1-64 letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
        )
    return raw


def office_cidr(raw: str | None, allow_any_source: bool = False) -> str | None:
    """Normalise the office CIDR; a bare address means that one host."""
    if raw is None:
        return None
    try:
        network = ipaddress.ip_network(raw.strip(), strict=True)
    except ValueError as exc:
        raise UsageError(
            f"invalid office CIDR {raw!r}: {exc}",
            "give a network such as 203.0.113.0/24, or one address such as 203.0.113.7",
        ) from exc
    shortest = SHORTEST_OFFICE_PREFIX[network.version]
    if network.prefixlen < shortest and not allow_any_source:
        reach = "the whole internet" if network.prefixlen == 0 else "a large share of the internet"
        raise UsageError(
            f"refusing office CIDR {raw}: it would open the forensic group to {reach}; "
            f"the shortest IPv{network.version} office prefix accepted is /{shortest}",
            "give your office's range, or pass --allow-any-source if you really mean it",
        )
    return str(network)


def forensic_group(group_id: str, owner: str) -> tuple[str, str]:
    """An outside forensic group and, optionally, the 12-digit account that owns it."""
    if group_id and not GROUP_ID.match(group_id):
        raise UsageError(
            f"malformed security group id {group_id!r}", "a group id looks like sg-0123456789abcdef0"
        )
    if owner and not ACCOUNT_ID.match(owner):
        raise UsageError(f"malformed account id {owner!r}", "an AWS account id is 12 digits")
    if owner and not group_id:
        raise UsageError("a forensic group owner was given without the group", "pass --forensic-group-id too")
    return group_id, owner
