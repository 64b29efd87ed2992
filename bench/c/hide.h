/* The program `hide PREDICATE` compiles to, around a `secret(name, size)`
 * the including file defines first: lookups fail with ENOENT, creating such
 * a name (or renaming onto one) with EACCES, and readdir asks for its
 * postfilter, which runs in the daemon (USER_FILTER: BPF cannot walk dirent
 * records).  Names arrive NUL-terminated, size counting the NUL.
 *
 * The name test is written once: each opcode's case picks the slot its name
 * is in and the errno to return.  Without the empty asm in SLOT, clang sinks
 * the slots' context loads into one load through a context pointer moved by
 * 40, 64 or 88 bytes, which the kernel refuses ("dereference of modified ctx
 * ptr"). */
#ifndef FDSL_BENCH_HIDE_H
#define FDSL_BENCH_HIDE_H

#include "fuse_bpf.h"
#include "fuse_opcodes.h"

#define EACCES 13

/* read a slot's value and size; the asm keeps each load apart */
#define SLOT(i)                                                         \
	do {                                                            \
		name = fa->in_args[i].value;                            \
		size = fa->in_args[i].size;                             \
		asm volatile("" : "+r"(name), "+r"(size));              \
	} while (0)

static __attribute__((always_inline)) int secret(const char *n, __u32 size);

static __attribute__((always_inline)) int hide(struct fuse_bpf_args *fa)
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

#endif
