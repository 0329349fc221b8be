"""The command line: parser, one function per command, exit codes."""
