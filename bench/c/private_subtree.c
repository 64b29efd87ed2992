/* fdsl-equivalent: examples/private_subtree.fdsl
 *
 * Three programs, one per scope: the root and `vendor` (passthrough) only
 * send every operation to the backing file, except that the root, having
 * scopes below it, ends lookups with a userspace postfilter (the daemon
 * attaches the scopes' programs there); under `private` every prefilter
 * fails with EACCES unless the caller is uid 1000 or root. */
#include "fuse_bpf.h"

#define EACCES 13
#define OWNER 1000

static __attribute__((always_inline)) int backing(const struct fuse_bpf_args *fa)
{
	return fa->opcode & FUSE_POSTFILTER ? 0 : FUSE_BPF_BACKING;
}

SEC("fuse/root")
int root(struct fuse_bpf_args *fa)
{
	if (fa->opcode == (FUSE_LOOKUP | FUSE_PREFILTER))
		return FUSE_BPF_BACKING | FUSE_BPF_POST_FILTER;
	if (fa->opcode == (FUSE_LOOKUP | FUSE_POSTFILTER))
		return FUSE_BPF_USER_FILTER;
	return backing(fa);
}

SEC("fuse/s1")
int private_subtree(struct fuse_bpf_args *fa)
{
	if (fa->opcode & FUSE_PREFILTER) {
		__u32 uid = bpf_get_current_uid_gid();

		if (uid != OWNER && uid != 0)
			return -EACCES;
	}
	return backing(fa);
}

SEC("fuse/s2")
int vendor(struct fuse_bpf_args *fa)
{
	return backing(fa);
}

char _license[] SEC("license") = "GPL";
