/* Per-opcode trace logs of the node id (ctx+0) and of file handles (offset 0
 * of the first argument), written the plain way: clang -O2's tail merging
 * turns the two loads at offset 0 into one instruction reached with the
 * context pointer on some paths and the argument buffer on others.  The
 * kernel refuses that ("same insn cannot be used with different pointers"),
 * so must our verifier.  With -DKEEP_APART the node id passes through an
 * empty asm statement (what fdsl's code generator does for every context
 * load) and the loads stay apart. */
#include "fuse_bpf.h"

#define FUSE_READ 15
#define FUSE_WRITE 16
#define FUSE_RELEASE 18
#define FUSE_FSYNC 20
#define FUSE_FLUSH 25

#define FH(i) (*(const __u64 *)fa->in_args[i].value)

#ifdef KEEP_APART
#define NODEID                                                          \
	({                                                              \
		__u64 n = fa->nodeid;                                   \
		asm volatile("" : "+r"(n));                             \
		n;                                                      \
	})
#else
#define NODEID (fa->nodeid)
#endif

SEC("fuse/root")
int ctx_merge(struct fuse_bpf_args *fa)
{
	switch (fa->opcode) {
	case FUSE_GETATTR | FUSE_PREFILTER:
		bpf_printk("v %llu", NODEID);
		break;
	case FUSE_READ | FUSE_PREFILTER:
		bpf_printk("v %llu", FH(0));
		break;
	case FUSE_FLUSH | FUSE_PREFILTER:
		bpf_printk("v %llu", NODEID);
		break;
	case FUSE_WRITE | FUSE_PREFILTER:
		bpf_printk("v %llu", FH(0));
		break;
	case FUSE_FSYNC | FUSE_PREFILTER:
		bpf_printk("v %llu", NODEID);
		break;
	case FUSE_RELEASE | FUSE_PREFILTER:
		bpf_printk("v %llu", FH(0));
		break;
	}
	return FUSE_BPF_BACKING;
}

char _license[] SEC("license") = "GPL";
