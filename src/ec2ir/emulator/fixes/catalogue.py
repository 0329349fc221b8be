"""Every fidelity fix, in order, and the README's table rendered from them."""

from __future__ import annotations

from ec2ir.emulator.fixes.fix import Fix
from ec2ir.emulator.fixes.groups import (
    ENI_GROUPS,
    MODIFY_INSTANCE_FALLTHROUGH,
    MULTI_ENI_MODIFY_INSTANCE,
    UNKNOWN_GROUP,
)
from ec2ir.emulator.fixes.instances import CONSOLE_SCREENSHOT, DESCRIBE_PAGINATION, METADATA_OPTIONS_KEPT
from ec2ir.emulator.fixes.nacl import NACL_ENTRIES
from ec2ir.emulator.fixes.services import ATOMIC_REQUESTS, BUCKET_POLICY_CONDITIONS, SIMULATE_PRINCIPAL_POLICY
from ec2ir.emulator.fixes.ssm import (
    SSM_CANCEL_COMMAND,
    SSM_COMMAND_OUTPUT,
    SSM_COMMAND_TARGETS,
    SSM_MANAGED_INSTANCES,
)

MOTO_VERSION = "5.2.5"  # the release the fixes correct (pinned by the emulator extra)

CATALOGUE: tuple[Fix, ...] = (
    ENI_GROUPS,
    MULTI_ENI_MODIFY_INSTANCE,
    MODIFY_INSTANCE_FALLTHROUGH,
    DESCRIBE_PAGINATION,
    UNKNOWN_GROUP,
    SIMULATE_PRINCIPAL_POLICY,
    ATOMIC_REQUESTS,
    BUCKET_POLICY_CONDITIONS,
    SSM_MANAGED_INSTANCES,
    SSM_COMMAND_TARGETS,
    SSM_COMMAND_OUTPUT,
    SSM_CANCEL_COMMAND,
    CONSOLE_SCREENSHOT,
    METADATA_OPTIONS_KEPT,
    NACL_ENTRIES,
)

FIXES = tuple(fix.name for fix in CATALOGUE)


def readme_table(fixes: tuple[Fix, ...] = CATALOGUE) -> str:
    """The README's table of the fixes (section "The embedded emulator"), one row a fix."""
    lines = [f"| moto {MOTO_VERSION} | EC2, and the corrected emulator |", "|---|---|"]
    lines.extend(f"| {fix.moto} | {fix.aws} |" for fix in fixes)
    return "\n".join(lines) + "\n"
