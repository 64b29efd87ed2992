/* One policy written for both ABIs: built with -DRFC_V1 against the RFC v1 header
 * (packet bounds before every read, outputs written through helper 209, enumerated
 * return codes), otherwise against the ACK header (size checks, stores through
 * out_args, return bits).  Both builds must decide every request alike:
 *   LOOKUP "secret"        hidden (-ENOENT in PRE)
 *   LOOKUP "late"          backing lookup, then POST denies it (-EACCES)
 *   MKDIR  "nope"          denied (-EPERM); "user": userspace prefilter, then backing;
 *                          "locked": in.mode rewritten to 0700 (RFC v1 through helper 208,
 *                          ACK through the out_args[0] alias), then backing
 *   GETATTR                backing, then POST sets attr.mtime to MTIME_MAGIC
 *   OPEN                   backing, then the userspace postfilter
 *                          (RFC v1: USER_POSTFILTER from PRE; ACK: PF, POST returns U) */
#ifdef RFC_V1
#include "fuse_bpf_rfc_v1.h"
typedef struct __bpf_fuse_args ctx_t;
#define DONE BPF_FUSE_CONTINUE
#define PRE_CONTINUE BPF_FUSE_CONTINUE
#define PRE_POSTFILTER BPF_FUSE_POSTFILTER
#define PRE_USER_PREFILTER BPF_FUSE_USER_PREFILTER
#define PRE_USER_POSTFILTER BPF_FUSE_USER_POSTFILTER
#else
#include "fuse_bpf.h"
typedef struct fuse_bpf_args ctx_t;
#define DONE 0
#define PRE_CONTINUE FUSE_BPF_BACKING
#define PRE_POSTFILTER (FUSE_BPF_BACKING | FUSE_BPF_POST_FILTER)
#define PRE_USER_PREFILTER (FUSE_BPF_USER_FILTER | FUSE_BPF_BACKING)
#define PRE_USER_POSTFILTER (FUSE_BPF_BACKING | FUSE_BPF_POST_FILTER)
#endif

#ifndef EIO
#define EIO 5
#endif
#ifndef EACCES
#define EACCES 13
#endif

#define MTIME_MAGIC 1234567890ULL
#define ATTR_OUT_MTIME 48       /* fuse_attr_out.attr (16) + fuse_attr.mtime (32) */

/* in_args[i] is the NUL-terminated name `want` of n bytes (the NUL included) */
static __attribute__((always_inline)) int name_is(ctx_t *fa, int i, const char *want, int n)
{
	const char *name = (const char *)(long)fa->in_args[i].value;

#ifdef RFC_V1
	if (name + n > (const char *)(long)fa->in_args[i].end_offset)
		return 0;
#else
	if (fa->in_args[i].size != n)
		return 0;
#endif
#pragma clang loop unroll(full)
	for (int k = 0; k < n; k++)
		if (name[k] != want[k])
			return 0;
	return 1;
}

static __attribute__((always_inline)) int set_mtime(ctx_t *fa)
{
#ifdef RFC_V1
	char *out = bpf_fuse_get_writeable_out(fa, 0, (void *)(long)fa->out_args[0].value,
					       ATTR_OUT_MTIME + 8, 1);

	if (!out)
		return -EIO;
#else
	char *out = fa->out_args[0].value;
#endif
	*(__u64 *)(out + ATTR_OUT_MTIME) = MTIME_MAGIC;
	return DONE;
}

static __attribute__((always_inline)) int lock_mode(ctx_t *fa)
{
#ifdef RFC_V1
	__u32 *in = bpf_fuse_get_writeable_in(fa, 0, (void *)(long)fa->in_args[0].value, 8, 1);

	if (!in)
		return -EIO;
#else
	__u32 *in = fa->out_args[0].value;
#endif
	in[0] = 0040700;          /* fuse_mkdir_in.mode: a directory, rwx for the owner only */
	return PRE_CONTINUE;
}

SEC("fuse/root")
int abi_pair(ctx_t *fa)
{
	switch (fa->opcode) {
	case FUSE_LOOKUP | FUSE_PREFILTER:
		if (name_is(fa, 0, "secret", 7))
			return -ENOENT;
		if (name_is(fa, 0, "late", 5))
			return PRE_POSTFILTER;
		return PRE_CONTINUE;
	case FUSE_LOOKUP | FUSE_POSTFILTER:
		return name_is(fa, 0, "late", 5) ? -EACCES : DONE;
	case FUSE_MKDIR | FUSE_PREFILTER:
		if (name_is(fa, 1, "nope", 5))
			return -EPERM;
		if (name_is(fa, 1, "user", 5))
			return PRE_USER_PREFILTER;
		if (name_is(fa, 1, "locked", 7))
			return lock_mode(fa);
		return PRE_CONTINUE;
	case FUSE_GETATTR | FUSE_PREFILTER:
		return PRE_POSTFILTER;
	case FUSE_GETATTR | FUSE_POSTFILTER:
		return set_mtime(fa);
	case FUSE_OPEN | FUSE_PREFILTER:
		return PRE_USER_POSTFILTER;
#ifndef RFC_V1
	case FUSE_OPEN | FUSE_POSTFILTER:
		return FUSE_BPF_USER_FILTER;
#endif
	}
	return PRE_CONTINUE;
}

char _license[] SEC("license") = "GPL";
