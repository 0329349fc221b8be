"""The case report: built from data, then rendered as markdown, HTML or a timeline."""
