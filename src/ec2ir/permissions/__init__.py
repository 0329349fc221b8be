"""The IAM policy the steps declare; DryRun probes, simulation and preflight."""
