"""fdsl: a declarative filter language for FUSE stacked filesystems."""
__version__ = "0.1.0"
