"""Evidence: the hardened evidence bucket (ec2ir.evidence.bucket), captured metadata
(ec2ir.evidence.metadata) and crash-consistent snapshots (ec2ir.evidence.snapshots); here, what
collecting them asks IAM for (ec2ir.permissions.policy gathers it).

Everything collected only reads the instance or copies it; nothing is ever undone by ``release``.
What ec2ir is about to change (the instance, its ENIs, volumes, Auto Scaling and load-balancer
membership, instance profile) is captured from the reads of the run's first round trip, before any
change. What ec2ir never changes (the rules of the instance's own groups, the console output and
screenshot) is read after the cut, so that evidence never delays containment.
"""

from __future__ import annotations

BUCKET_CREATION = "evidence bucket, once, to create it"
EVIDENCE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "evidence bucket": (
        "s3:ListBucket",  # HeadBucket
        "s3:ListBucketVersions",
        "s3:GetBucketVersioning",
        "s3:GetBucketTagging",
        "s3:GetEncryptionConfiguration",  # checking a bucket ec2ir did not create
        "s3:GetBucketPublicAccessBlock",
        "s3:PutObject",
        "s3:GetObject",
        "s3:GetObjectVersion",
    ),
    BUCKET_CREATION: (
        "s3:CreateBucket",
        "s3:PutBucketVersioning",
        "s3:PutEncryptionConfiguration",
        "s3:PutBucketPublicAccessBlock",
        "s3:PutBucketPolicy",
        "s3:PutBucketObjectLockConfiguration",
        "s3:PutBucketTagging",
    ),
    "captured metadata": (
        "ec2:DescribeVolumes",
        "ec2:DescribeSecurityGroups",
        "ec2:GetConsoleOutput",
        "ec2:GetConsoleScreenshot",
        "iam:GetInstanceProfile",
        "iam:ListAttachedRolePolicies",
        "iam:ListRolePolicies",
    ),
    "snapshots": ("ec2:CreateSnapshots", "ec2:CreateTags", "ec2:DescribeSnapshots"),
}
