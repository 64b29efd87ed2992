/* fdsl-equivalent: examples/bindfs_perms.fdsl
 *
 * perms "a-w,u+w", force_user 1000, force_group 100: getattr's prefilter asks
 * for the postfilter, which rewrites mode, uid and gid in the reply (the
 * only place the kernel takes attributes from a filter). */
#include "fuse_bpf.h"

struct fuse_attr_out {
	__u64 attr_valid;
	__u32 attr_valid_nsec;
	__u32 dummy;
	struct fuse_attr attr;
};

SEC("fuse/root")
int bindfs_perms(struct fuse_bpf_args *fa)
{
	switch (fa->opcode) {
	case FUSE_GETATTR | FUSE_PREFILTER:
		return FUSE_BPF_BACKING | FUSE_BPF_POST_FILTER;
	case FUSE_GETATTR | FUSE_POSTFILTER: {
		struct fuse_attr_out *out = fa->out_args[0].value;

		out->attr.mode = (out->attr.mode & 0177555) | 0200;
		out->attr.uid = 1000;
		out->attr.gid = 100;
		return 0;
	}
	}
	return FUSE_BPF_BACKING;
}

char _license[] SEC("license") = "GPL";
