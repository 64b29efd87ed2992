/* RFC v1 (Sep 2022) fuse-bpf program context, return codes and helpers, in
 * the style of that series' selftests.  Written from the ABI spec
 * (../shared/fuse-bpf-abi.md sections 8.2 and 12); used only to build test
 * objects with `clang -target bpf -O2 -c` and to check fdsl.abi.rfc_v1. */
#ifndef FDSL_TEST_FUSE_BPF_RFC_V1_H
#define FDSL_TEST_FUSE_BPF_RFC_V1_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;

#define SEC(name) __attribute__((section(name), used))

#define FUSE_OPCODE_FILTER 0x0ffff
#define FUSE_PREFILTER 0x10000
#define FUSE_POSTFILTER 0x20000

#define BPF_FUSE_CONTINUE 0
#define BPF_FUSE_USER 1
#define BPF_FUSE_USER_PREFILTER 2
#define BPF_FUSE_POSTFILTER 3
#define BPF_FUSE_USER_POSTFILTER 4

#define FUSE_LOOKUP 1
#define FUSE_GETATTR 3
#define FUSE_MKDIR 9
#define FUSE_OPEN 14

#define ENOENT 2
#define EPERM 1

/* One argument slot: value/end_offset are packet pointers (start, end). */
struct __bpf_fuse_arg {
	__u64 value;
	__u64 end_offset;
	__u32 size;
	__u32 max_size;
};

#define FUSE_MAX_IN_ARGS 3
#define FUSE_MAX_OUT_ARGS 2

struct __bpf_fuse_args {
	__u64 nodeid;
	__u32 opcode;
	__u32 error_in;
	__u32 in_numargs;
	__u32 out_numargs;
	__u32 flags;
	__u32 padding;
	struct __bpf_fuse_arg in_args[FUSE_MAX_IN_ARGS];
	struct __bpf_fuse_arg out_args[FUSE_MAX_OUT_ARGS];
};

_Static_assert(sizeof(struct __bpf_fuse_args) == 152, "spec section 12.1: 152 bytes");
_Static_assert(__builtin_offsetof(struct __bpf_fuse_args, in_args) == 32, "in_args at 32");
_Static_assert(__builtin_offsetof(struct __bpf_fuse_args, out_args) == 104, "out_args at 104");

#include "fuse_structs.h"    /* every FUSE argument struct, shared with the ABI tests */

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_trace_printk)(const char *fmt, __u32 fmt_size, ...) = (void *)6;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static __u64 (*bpf_get_current_uid_gid)(void) = (void *)15;
static void *(*bpf_fuse_get_writeable_in)(struct __bpf_fuse_args *fa, __u32 index, void *value,
					  __u64 size, _Bool copy) = (void *)208;
static void *(*bpf_fuse_get_writeable_out)(struct __bpf_fuse_args *fa, __u32 index, void *value,
					   __u64 size, _Bool copy) = (void *)209;

#endif
