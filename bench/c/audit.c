/* fdsl-equivalent: examples/audit.fdsl
 *
 * Counters and trace logs, no access decisions: every prefilter counts the
 * request (in total, per caller uid, per opcode) and remembers the caller's
 * uid per node; mkdir asks for its postfilter, which remembers and logs a
 * failure; writes by non-root callers are logged.  Counters are created on
 * first use (BPF_NOEXIST) and incremented atomically. */
#include "fuse_bpf.h"

#define FUSE_WRITE 16

struct fuse_write_in {
	__u64 fh, offset;
	__u32 size, write_flags;
	__u64 lock_owner;
	__u32 flags, padding;
};

struct bpf_map_def SEC("maps") ops = { BPF_MAP_TYPE_ARRAY, 4, 8, 1 };
struct bpf_map_def SEC("maps") by_uid = { BPF_MAP_TYPE_HASH, 4, 8, 1024 };
struct bpf_map_def SEC("maps") by_op = { BPF_MAP_TYPE_HASH, 4, 8, 64 };
struct bpf_map_def SEC("maps") last_uid = { BPF_MAP_TYPE_HASH, 8, 4, 4096 };
struct bpf_map_def SEC("maps") last_err = { BPF_MAP_TYPE_ARRAY, 4, 4, 64 };

static __attribute__((always_inline)) void count(void *map, __u32 key)
{
	__u64 *n = bpf_map_lookup_elem(map, &key);

	if (n) {
		__sync_fetch_and_add(n, 1);
	} else {
		__u64 one = 1;

		bpf_map_update_elem(map, &key, &one, BPF_NOEXIST);
	}
}

SEC("fuse/root")
int audit(struct fuse_bpf_args *fa)
{
	__u32 opcode = fa->opcode;

	if (opcode & FUSE_PREFILTER) {
		__u64 node = fa->nodeid;
		__u32 uid = bpf_get_current_uid_gid();

		count(&ops, 0);
		count(&by_uid, uid);
		count(&by_op, opcode & FUSE_OPCODE_FILTER);
		bpf_map_update_elem(&last_uid, &node, &uid, BPF_ANY);
		if (opcode == (FUSE_WRITE | FUSE_PREFILTER) && uid != 0) {
			const struct fuse_write_in *in = fa->in_args[0].value;

			bpf_printk("write of %u bytes by uid %d", in->size, uid);
		}
		if (opcode == (FUSE_MKDIR | FUSE_PREFILTER))
			return FUSE_BPF_BACKING | FUSE_BPF_POST_FILTER;
		return FUSE_BPF_BACKING;
	}
	if (opcode == (FUSE_MKDIR | FUSE_POSTFILTER) && fa->error_in) {
		__u32 key = FUSE_MKDIR;
		__u32 err = -(__s32)fa->error_in;

		bpf_map_update_elem(&last_err, &key, &err, BPF_ANY);
		bpf_printk("mkdir failed with errno %d for uid %d", err,
			   (__u32)bpf_get_current_uid_gid());
	}
	return 0;
}

char _license[] SEC("license") = "GPL";
