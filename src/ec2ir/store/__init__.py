"""The state table: holds, the journal and the request ledger."""
