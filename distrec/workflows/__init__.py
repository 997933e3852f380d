"""End-to-end workflows behind the CLI and the jobs/ entrypoints."""
