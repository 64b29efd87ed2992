/* The name's slot picked per opcode through a pointer into the context:
 * clang -O2 moves the context pointer (r1 += 32 or 56) and loads through
 * it.  The kernel refuses any context access through a moved pointer
 * ("dereference of modified ctx ptr"), so must our verifier. */
#include "fuse_bpf.h"

SEC("fuse/root")
int ctx_moved(struct fuse_bpf_args *fa)
{
	const struct fuse_bpf_in_arg *name;

	switch (fa->opcode) {
	case FUSE_LOOKUP | FUSE_PREFILTER:
		name = &fa->in_args[0];
		break;
	case FUSE_MKDIR | FUSE_PREFILTER:
		name = &fa->in_args[1];
		break;
	default:
		return FUSE_BPF_BACKING;
	}
	if (name->size == 2 && *(const char *)name->value == 'x')
		return -ENOENT;
	return FUSE_BPF_BACKING;
}

char _license[] SEC("license") = "GPL";
