/* fdsl-equivalent: bench/policies/per_op_log.fdsl
 *
 * Per-opcode trace logs of the node id (context offset 0) and of file
 * handles (offset 0 of the argument); lookup and open ask for their
 * postfilters, which log the reply.  The empty asm after each context load
 * keeps clang from merging it with a buffer load at the same offset into one
 * instruction reached with two pointer kinds ("same insn cannot be used with
 * different pointers"). */
#include "fuse_bpf.h"

#define FUSE_READ 15
#define FUSE_WRITE 16
#define FUSE_RELEASE 18
#define FUSE_FSYNC 20
#define FUSE_FLUSH 25

#define NODEID(v)                                                       \
	({                                                              \
		__u64 v = fa->nodeid;                                   \
		asm volatile("" : "+r"(v));                             \
		v;                                                      \
	})
#define FH(i) (*(const __u64 *)fa->in_args[i].value)

SEC("fuse/root")
int per_op_log(struct fuse_bpf_args *fa)
{
	switch (fa->opcode) {
	case FUSE_LOOKUP | FUSE_PREFILTER:
	case FUSE_OPEN | FUSE_PREFILTER:
		return FUSE_BPF_BACKING | FUSE_BPF_POST_FILTER;
	case FUSE_LOOKUP | FUSE_POSTFILTER:
		bpf_printk("lookup %llu -> %llu", NODEID(n), FH(1));
		return 0;
	case FUSE_GETATTR | FUSE_PREFILTER:
		bpf_printk("getattr %llu", NODEID(n));
		break;
	case FUSE_OPEN | FUSE_POSTFILTER:
		bpf_printk("open %llu fh %llu", NODEID(n), FH(1));
		return 0;
	case FUSE_READ | FUSE_PREFILTER:
		bpf_printk("read fh %llu", FH(0));
		break;
	case FUSE_WRITE | FUSE_PREFILTER:
		bpf_printk("write fh %llu", FH(0));
		break;
	case FUSE_FLUSH | FUSE_PREFILTER:
		bpf_printk("flush %llu", NODEID(n));
		break;
	case FUSE_RELEASE | FUSE_PREFILTER:
		bpf_printk("release fh %llu", FH(0));
		break;
	case FUSE_FSYNC | FUSE_PREFILTER:
		bpf_printk("fsync %llu", NODEID(n));
		break;
	default:
		return fa->opcode & FUSE_POSTFILTER ? 0 : FUSE_BPF_BACKING;
	}
	return FUSE_BPF_BACKING;
}

char _license[] SEC("license") = "GPL";
