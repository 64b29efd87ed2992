/* ACK fuse-bpf program context and the helpers it may call, in the style of
 * the kernel selftests (tools/testing/selftests/filesystems/fuse).  Written
 * from the ABI spec (docs: ../shared/fuse-bpf-abi.md sections 4, 8, 10);
 * used only to build test objects with `clang -target bpf -O2 -c`. */
#ifndef FDSL_TEST_FUSE_BPF_H
#define FDSL_TEST_FUSE_BPF_H

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

#define FUSE_BPF_USER_FILTER 1
#define FUSE_BPF_BACKING 2
#define FUSE_BPF_POST_FILTER 4

#define FUSE_BPF_FORCE (1 << 0)
#define FUSE_BPF_OUT_ARGVAR (1 << 6)

#define FUSE_LOOKUP 1
#define FUSE_GETATTR 3
#define FUSE_MKDIR 9
#define FUSE_OPEN 14

#define ENOENT 2
#define EPERM 1
#define EEXIST 17

struct fuse_bpf_in_arg {
	__u32 size;
	const void *value;
	const void *end_offset;
};

struct fuse_bpf_arg {
	__u32 size;
	void *value;
	void *end_offset;
};

#define FUSE_MAX_IN_ARGS 5
#define FUSE_MAX_OUT_ARGS 3

struct fuse_bpf_args {
	__u64 nodeid;
	__u32 opcode;
	__u32 error_in;
	__u32 in_numargs;
	__u32 out_numargs;
	__u32 flags;
	struct fuse_bpf_in_arg in_args[FUSE_MAX_IN_ARGS];
	struct fuse_bpf_arg out_args[FUSE_MAX_OUT_ARGS];
};

_Static_assert(sizeof(struct fuse_bpf_args) == 224, "spec section 4: 224 bytes");
_Static_assert(__builtin_offsetof(struct fuse_bpf_args, in_args) == 32, "in_args at 32");
_Static_assert(__builtin_offsetof(struct fuse_bpf_args, out_args) == 152, "out_args at 152");

struct fuse_attr {
	__u64 ino, size, blocks, atime, mtime, ctime;
	__u32 atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags;
};

struct fuse_entry_out {
	__u64 nodeid, generation, entry_valid, attr_valid;
	__u32 entry_valid_nsec, attr_valid_nsec;
	struct fuse_attr attr;
};

struct fuse_entry_bpf_out {
	__u64 backing_action, backing_fd, bpf_action, bpf_fd;
};

struct fuse_open_in {
	__u32 flags, open_flags;
};

struct fuse_open_out {
	__u64 fh;
	__u32 open_flags, padding;
};

_Static_assert(sizeof(struct fuse_entry_out) == 128, "fuse_entry_out is 128 bytes");
_Static_assert(__builtin_offsetof(struct fuse_entry_out, attr.mode) == 100, "attr.mode at 100");

struct fuse_mkdir_in {
	__u32 mode, umask;
};

/* legacy map definition read by the selftest loader (section "maps") */
struct bpf_map_def {
	int type;
	__u64 key_size;
	__u64 value_size;
	int max_entries;
};

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_EXIST 2

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_trace_printk)(const char *fmt, __u32 fmt_size, ...) = (void *)6;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static __u64 (*bpf_get_current_uid_gid)(void) = (void *)15;

#define bpf_printk(fmt, ...)                                            \
	({                                                              \
		char ____fmt[] = fmt;                                   \
		bpf_trace_printk(____fmt, sizeof(____fmt), ##__VA_ARGS__); \
	})

#endif
