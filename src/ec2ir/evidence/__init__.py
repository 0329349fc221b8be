"""Evidence: the bucket, metadata, snapshots, memory, forensic volumes and their provenance."""
