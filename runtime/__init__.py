"""fdsl runtime: the daemon that mounts a backing directory with compiled filters."""
