"""``python -m ec2ir.cli``: the same command as ``ec2ir``."""

import sys

from ec2ir.cli.app import main

sys.exit(main())
