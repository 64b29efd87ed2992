/* MKDIR: ask for the postfilter, then turn EEXIST from the backing fs into EPERM. */
#include "fuse_bpf.h"

SEC("fuse/root")
int rewrite_error(struct fuse_bpf_args *fa)
{
	switch (fa->opcode) {
	case FUSE_MKDIR | FUSE_PREFILTER:
		return FUSE_BPF_BACKING | FUSE_BPF_POST_FILTER;
	case FUSE_MKDIR | FUSE_POSTFILTER:
		if ((__s32)fa->error_in == -EEXIST)
			return -EPERM;
		return 0;
	default:
		return FUSE_BPF_BACKING;
	}
}

char _license[] SEC("license") = "GPL";
