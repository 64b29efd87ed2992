/* fdsl-equivalent: examples/hide_secrets.fdsl
 *
 * hide (name in {".env", ".git", "id_rsa"} or name like "*.key"): lookups
 * fail with ENOENT, creating such a name (or renaming onto one) with EACCES,
 * and readdir asks for its postfilter, which runs in the daemon (USER_FILTER:
 * BPF cannot walk dirent records).  Names arrive NUL-terminated, size
 * counting the NUL. */
#include "fuse_bpf.h"

#define EACCES 13
#define FUSE_SYMLINK 6
#define FUSE_MKNOD 8
#define FUSE_RENAME 12
#define FUSE_LINK 13
#define FUSE_READDIR 28
#define FUSE_CREATE 35
#define FUSE_RENAME2 45

static __attribute__((always_inline)) int secret(const char *n, __u32 size)
{
	if (size == 5 && n[0] == '.' && n[1] == 'e' && n[2] == 'n' && n[3] == 'v')
		return 1;
	if (size == 5 && n[0] == '.' && n[1] == 'g' && n[2] == 'i' && n[3] == 't')
		return 1;
	if (size == 7 && n[0] == 'i' && n[1] == 'd' && n[2] == '_' && n[3] == 'r' &&
	    n[4] == 's' && n[5] == 'a')
		return 1;
	if (size >= 5 && size <= 256) {
		const char *e = n + size - 5;

		if (e[0] == '.' && e[1] == 'k' && e[2] == 'e' && e[3] == 'y')
			return 1;
	}
	return 0;
}

SEC("fuse/root")
int hide_secrets(struct fuse_bpf_args *fa)
{
	switch (fa->opcode) {
	case FUSE_LOOKUP | FUSE_PREFILTER:
		if (secret(fa->in_args[0].value, fa->in_args[0].size))
			return -ENOENT;
		return FUSE_BPF_BACKING;
	case FUSE_SYMLINK | FUSE_PREFILTER:
		if (secret(fa->in_args[0].value, fa->in_args[0].size))
			return -EACCES;
		return FUSE_BPF_BACKING;
	case FUSE_MKNOD | FUSE_PREFILTER:
	case FUSE_MKDIR | FUSE_PREFILTER:
	case FUSE_LINK | FUSE_PREFILTER:
	case FUSE_CREATE | FUSE_PREFILTER:
		if (secret(fa->in_args[1].value, fa->in_args[1].size))
			return -EACCES;
		return FUSE_BPF_BACKING;
	case FUSE_RENAME | FUSE_PREFILTER:
	case FUSE_RENAME2 | FUSE_PREFILTER:
		if (secret(fa->in_args[2].value, fa->in_args[2].size))
			return -EACCES;
		return FUSE_BPF_BACKING;
	case FUSE_READDIR | FUSE_PREFILTER:
		return FUSE_BPF_BACKING | FUSE_BPF_POST_FILTER;
	case FUSE_READDIR | FUSE_POSTFILTER:
		return FUSE_BPF_USER_FILTER;
	}
	return FUSE_BPF_BACKING;
}

char _license[] SEC("license") = "GPL";
