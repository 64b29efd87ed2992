/* fdsl-equivalent: bench/policies/hide_one.fdsl
 *
 * hide name == "secret": lookups fail with ENOENT, creating the name (or
 * renaming onto it) with EACCES, readdir asks for its postfilter, which
 * runs in the daemon (USER_FILTER: BPF cannot walk dirent records).  The
 * name test is written once: each opcode's case picks the slot its name is
 * in and the errno; the empty asm in SLOT keeps clang from sinking the
 * slots' context loads into one load through a moved context pointer,
 * which the kernel refuses ("dereference of modified ctx ptr"). */
#include "fuse_bpf.h"

#define EACCES 13
#define FUSE_SYMLINK 6
#define FUSE_MKNOD 8
#define FUSE_RENAME 12
#define FUSE_LINK 13
#define FUSE_READDIR 28
#define FUSE_CREATE 35
#define FUSE_RENAME2 45

#define SLOT(i)                                                         \
	do {                                                            \
		name = fa->in_args[i].value;                            \
		size = fa->in_args[i].size;                             \
		asm volatile("" : "+r"(name), "+r"(size));              \
	} while (0)

static __attribute__((always_inline)) int secret(const char *n, __u32 size)
{
	return size == 7 && n[0] == 's' && n[1] == 'e' && n[2] == 'c' && n[3] == 'r' &&
	       n[4] == 'e' && n[5] == 't';
}

SEC("fuse/root")
int hide_one(struct fuse_bpf_args *fa)
{
	const char *name;
	__u32 size;
	int err;

	switch (fa->opcode) {
	case FUSE_LOOKUP | FUSE_PREFILTER:
		SLOT(0);
		err = -ENOENT;
		break;
	case FUSE_SYMLINK | FUSE_PREFILTER:
		SLOT(0);
		err = -EACCES;
		break;
	case FUSE_MKNOD | FUSE_PREFILTER:
	case FUSE_MKDIR | FUSE_PREFILTER:
	case FUSE_LINK | FUSE_PREFILTER:
	case FUSE_CREATE | FUSE_PREFILTER:
		SLOT(1);
		err = -EACCES;
		break;
	case FUSE_RENAME | FUSE_PREFILTER:
	case FUSE_RENAME2 | FUSE_PREFILTER:
		SLOT(2);
		err = -EACCES;
		break;
	case FUSE_READDIR | FUSE_PREFILTER:
		return FUSE_BPF_BACKING | FUSE_BPF_POST_FILTER;
	case FUSE_READDIR | FUSE_POSTFILTER:
		return FUSE_BPF_USER_FILTER;
	default:
		return FUSE_BPF_BACKING;
	}
	return secret(name, size) ? err : FUSE_BPF_BACKING;
}

char _license[] SEC("license") = "GPL";
