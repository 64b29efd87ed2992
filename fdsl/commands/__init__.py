"""Subcommand implementations of the fdsl CLI, one module per area."""
