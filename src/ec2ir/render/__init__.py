"""Terminal tables and JSON documents for results."""
