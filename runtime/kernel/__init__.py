"""fuse-bpf kernel mode (spec §1-§3, §7, §14)."""
