/* Not loadable by fuse-bpf: a real bpf-to-bpf call (the loader must refuse it). */
#include "fuse_bpf.h"

static __attribute__((noinline)) int pick(int opcode)
{
	return opcode == (FUSE_LOOKUP | FUSE_PREFILTER) ? FUSE_BPF_BACKING : 0;
}

SEC("fuse/call")
int with_call(struct fuse_bpf_args *fa)
{
	return pick(fa->opcode);
}

char _license[] SEC("license") = "GPL";
