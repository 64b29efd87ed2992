/* LOOKUP prefilter: looking up "secret" fails with ENOENT. */
#include "fuse_bpf.h"

static inline int is_secret(const char *name, __u32 size)
{
	if (size != 7)
		return 0;
	return name[0] == 's' && name[1] == 'e' && name[2] == 'c' &&
	       name[3] == 'r' && name[4] == 'e' && name[5] == 't' && name[6] == 0;
}

SEC("fuse/hide")
int hide_name(struct fuse_bpf_args *fa)
{
	if (fa->opcode == (FUSE_LOOKUP | FUSE_PREFILTER)) {
		const char *name = fa->in_args[0].value;

		if (is_secret(name, fa->in_args[0].size))
			return -ENOENT;
	}
	return FUSE_BPF_BACKING;
}

char _license[] SEC("license") = "GPL";
