"""The one engine behind every adapter: isolate, plan, release, collect and status."""
