/* LOOKUP post sets out.nodeid; OPEN post sets out.fh. */
#include "fuse_bpf.h"

SEC("fuse/ids")
int set_ids(struct fuse_bpf_args *fa)
{
	switch (fa->opcode) {
	case FUSE_LOOKUP | FUSE_PREFILTER:
	case FUSE_OPEN | FUSE_PREFILTER:
		return FUSE_BPF_BACKING | FUSE_BPF_POST_FILTER;
	case FUSE_LOOKUP | FUSE_POSTFILTER: {
		struct fuse_entry_out *feo = fa->out_args[0].value;

		feo->nodeid = 0x1234;
		return 0;
	}
	case FUSE_OPEN | FUSE_POSTFILTER: {
		struct fuse_open_out *foo = fa->out_args[0].value;

		foo->fh = 0xabcdef0011ULL;
		return 0;
	}
	default:
		return FUSE_BPF_BACKING;
	}
}

char _license[] SEC("license") = "GPL";
