/* Not loadable by fuse-bpf: uses a global variable (.bss/.data map). */
#include "fuse_bpf.h"

static volatile __u64 counter;

SEC("fuse/global")
int with_global(struct fuse_bpf_args *fa)
{
	counter++;
	return FUSE_BPF_BACKING;
}

char _license[] SEC("license") = "GPL";
