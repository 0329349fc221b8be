"""The one engine behind every adapter: ``facade.Engine``, one module per command.

Commands: ``isolate`` (with ``cut`` and ``late``, its two phases, and ``contained``, one instance in
the middle of them), ``plan``, ``release``, ``rejoin``, ``collect``, ``verify``, ``status`` and
``edge`` (the network ACL blocks). What they share: ``runtime`` (the clients and the preflight),
``results`` (what a run reports), ``holds`` (the hold protocol), ``journal``, ``gather`` (the
evidence) and ``names`` (display only).
"""
