/* Count calls per caller uid (helper 15) in a hash map, and the total in an
 * array map; logs through bpf_trace_printk. */
#include "fuse_bpf.h"

struct bpf_map_def SEC("maps") calls_by_uid = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 64,
};

struct bpf_map_def SEC("maps") total = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 1,
};

SEC("fuse/count")
int count_uid(struct fuse_bpf_args *fa)
{
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	__u32 zero = 0;
	__u64 one = 1;
	__u64 *value;

	value = bpf_map_lookup_elem(&calls_by_uid, &uid);
	if (value)
		__sync_fetch_and_add(value, 1);
	else
		bpf_map_update_elem(&calls_by_uid, &uid, &one, BPF_NOEXIST);

	value = bpf_map_lookup_elem(&total, &zero);
	if (value)
		__sync_fetch_and_add(value, 1);
	bpf_printk("uid %u op %x", uid, fa->opcode);
	return FUSE_BPF_BACKING;
}

char _license[] SEC("license") = "GPL";
