/* RFC v1 only (ACK cannot change an argument's size from BPF): READDIR's POST program
 * shrinks each page of dirents through helper 209 to its first record when that name
 * has at most 8 bytes (one 32-byte record; the helper's size must be a constant here),
 * else leaves the page alone. */
#include "fuse_bpf_rfc_v1.h"

#define FUSE_READDIR 28
#define EIO 5

SEC("fuse/root")
int first_entry_only(struct __bpf_fuse_args *fa)
{
	const struct fuse_dirent *d;
	void *out;

	switch (fa->opcode) {
	case FUSE_READDIR | FUSE_PREFILTER:
		return BPF_FUSE_POSTFILTER;
	case FUSE_READDIR | FUSE_POSTFILTER:
		d = (const struct fuse_dirent *)(long)fa->out_args[1].value;
		if ((const char *)(d + 1) > (const char *)(long)fa->out_args[1].end_offset)
			return BPF_FUSE_CONTINUE;          /* no record: nothing to cut */
		if (d->namelen > 8)
			return BPF_FUSE_CONTINUE;
		out = bpf_fuse_get_writeable_out(fa, 1, (void *)(long)fa->out_args[1].value, 32, 1);
		if (!out)
			return -EIO;
		return BPF_FUSE_CONTINUE;
	}
	return BPF_FUSE_CONTINUE;
}

char _license[] SEC("license") = "GPL";
