/* fdsl-equivalent: bench/policies/log_op.fdsl
 *
 * on all pre { log "fdsl op %u", op }: every prefilter logs its opcode and
 * goes to the backing file; postfilters (never requested) keep the result. */
#include "fuse_bpf.h"

SEC("fuse/root")
int log_op(struct fuse_bpf_args *fa)
{
	if (fa->opcode & FUSE_PREFILTER) {
		bpf_printk("fdsl op %u", fa->opcode & FUSE_OPCODE_FILTER);
		return FUSE_BPF_BACKING;
	}
	return fa->opcode & FUSE_POSTFILTER ? 0 : FUSE_BPF_BACKING;
}

char _license[] SEC("license") = "GPL";
