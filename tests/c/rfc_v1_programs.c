/* RFC v1 programs, in the style of that series' selftests (fa_verify_in / strcmp_check):
 * every argument read proven below end_offset first, outputs written only through
 * bpf_fuse_get_writeable_out with a NULL check.  -D variants break one rule each. */
#include "fuse_bpf_rfc_v1.h"

#define FH_MAGIC 0x1234

/* name == "secret" (7 bytes with the NUL), proven in bounds before reading */
static inline int is_secret(struct __bpf_fuse_args *fa)
{
	const char *name = (const char *)fa->in_args[0].value;
	const char *end = (const char *)fa->in_args[0].end_offset;

#ifndef NO_BOUNDS_CHECK
	if (name + 7 > end)
		return 0;
#endif
	return name[0] == 's' && name[1] == 'e' && name[2] == 'c' &&
	       name[3] == 'r' && name[4] == 'e' && name[5] == 't' && name[6] == 0;
}

SEC("fuse/rfc_v1")
int rfc_v1_prog(struct __bpf_fuse_args *fa)
{
	switch (fa->opcode) {
	case FUSE_LOOKUP | FUSE_PREFILTER:
		if (is_secret(fa))
			return -ENOENT;
		return BPF_FUSE_CONTINUE;
	case FUSE_OPEN | FUSE_PREFILTER:
		return BPF_FUSE_POSTFILTER;
	case FUSE_OPEN | FUSE_POSTFILTER: {
		struct fuse_open_out *out;

#ifdef STORE_THROUGH_PACKET
		out = (struct fuse_open_out *)fa->out_args[0].value;
		if ((char *)(out + 1) > (char *)fa->out_args[0].end_offset)
			return -EPERM;
		out->fh = FH_MAGIC;
		return BPF_FUSE_CONTINUE;
#else
		out = bpf_fuse_get_writeable_out(fa, 0, (void *)fa->out_args[0].value,
						 sizeof(*out), 1);
#ifndef NO_NULL_CHECK
		if (!out)
			return -EPERM;
#endif
		out->fh = FH_MAGIC;
		return BPF_FUSE_CONTINUE;
#endif
	}
	case FUSE_MKDIR | FUSE_PREFILTER:
#ifdef BAD_RETURN
		return 7;
#else
		return BPF_FUSE_USER_PREFILTER;
#endif
	}
	return BPF_FUSE_CONTINUE;
}

/* a variable index into the name, proven in bounds by comparing the moved pointer */
SEC("fuse/rfc_v1_var")
int rfc_v1_var(struct __bpf_fuse_args *fa)
{
	const char *name = (const char *)fa->in_args[0].value;
	const char *end = (const char *)fa->in_args[0].end_offset;
	__u32 last = fa->in_args[0].size - 1;
	const char *p;

	if (fa->opcode != (FUSE_LOOKUP | FUSE_PREFILTER))
		return BPF_FUSE_CONTINUE;
	p = name + last;
#ifndef NO_BOUNDS_CHECK
	if (p + 1 > end)
		return BPF_FUSE_CONTINUE;
#endif
	return *p == 0 ? BPF_FUSE_CONTINUE : -EPERM;
}

char _license[] SEC("license") = "GPL";
