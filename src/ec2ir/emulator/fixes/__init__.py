"""The emulator's fidelity fixes: moto corrected where it differs from AWS.

Tests that pass on plain moto prove nothing where moto is wrong, so every gap that ec2ir relies on
is corrected, in one reversible patch set (see docs/design.md, "The emulator"). Each fix is a
declared ``Fix`` (``fix.py``): its name, what moto does, what AWS does, why, and the patches that
make moto behave as AWS does, built only when applied, since moto is imported lazily. ``catalogue``
holds them in order (and renders the README's table of them: ``python -m ec2ir.emulator.fixes
--readme-table``); ``apply`` applies and reverts them. The fixes themselves live by service:
``groups`` and ``instances`` (EC2), ``nacl``, ``ssm`` and ``services`` (IAM, S3, the server).
``speed`` holds the speed-ups, which change no answer and so have no row in the table.
"""
