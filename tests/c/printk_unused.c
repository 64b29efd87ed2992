/* trace_printk with a format of three conversions and two arguments: r5 is
 * never written.  The kernel does not look at r3-r5 (trace_printk declares
 * only the format and its size), so it loads this; so does our verifier, and
 * the log shows whatever r5 held.  The same with a %s there is refused: the
 * helper would read memory at an address nobody checked. */
#include "fuse_bpf.h"

SEC("fuse/values")
int values(struct fuse_bpf_args *fa)
{
	bpf_printk("op %u node %llu third %u", fa->opcode, fa->nodeid);
	return FUSE_BPF_BACKING;
}

SEC("fuse/string")
int string(struct fuse_bpf_args *fa)
{
	bpf_printk("op %u node %llu name %s", fa->opcode, fa->nodeid);
	return FUSE_BPF_BACKING;
}

char _license[] SEC("license") = "GPL";
