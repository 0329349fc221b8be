"""ec2ir: automated incident response for compromised AWS EC2 instances."""

__version__ = "0.1.0"
