/* Log the full opcode and the byte size of a setxattr value, as real
 * fuse-bpf programs do; the fdsl equivalent is
 *     on setxattr pre { log "op %x size %u", opcode, sizeof(value) }
 */
#include "fuse_bpf.h"

#define FUSE_SETXATTR 21

SEC("fuse/root")
int xattr_size(struct fuse_bpf_args *fa)
{
	if (fa->opcode == (FUSE_SETXATTR | FUSE_PREFILTER))
		bpf_printk("op %x size %u", fa->opcode, fa->in_args[2].size);
	return FUSE_BPF_BACKING;
}

char _license[] SEC("license") = "GPL";
