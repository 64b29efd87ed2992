/* fdsl-equivalent: examples/readonly.fdsl
 *
 * What a careful C programmer writes for `readonly`: every mutating opcode's
 * prefilter fails with EROFS, and so does an open for writing or with
 * O_TRUNC; everything else goes to the backing file in the kernel. */
#include "fuse_bpf.h"

#define EROFS 30
#define O_ACCMODE 3
#define O_RDONLY 0
#define O_TRUNC 01000

#define FUSE_SETATTR 4
#define FUSE_SYMLINK 6
#define FUSE_MKNOD 8
#define FUSE_UNLINK 10
#define FUSE_RMDIR 11
#define FUSE_RENAME 12
#define FUSE_LINK 13
#define FUSE_WRITE 16
#define FUSE_SETXATTR 21
#define FUSE_REMOVEXATTR 24
#define FUSE_CREATE 35
#define FUSE_FALLOCATE 43
#define FUSE_RENAME2 45
#define FUSE_COPY_FILE_RANGE 47

SEC("fuse/root")
int readonly(struct fuse_bpf_args *fa)
{
	switch (fa->opcode) {
	case FUSE_SETATTR | FUSE_PREFILTER:
	case FUSE_SYMLINK | FUSE_PREFILTER:
	case FUSE_MKNOD | FUSE_PREFILTER:
	case FUSE_MKDIR | FUSE_PREFILTER:
	case FUSE_UNLINK | FUSE_PREFILTER:
	case FUSE_RMDIR | FUSE_PREFILTER:
	case FUSE_RENAME | FUSE_PREFILTER:
	case FUSE_LINK | FUSE_PREFILTER:
	case FUSE_WRITE | FUSE_PREFILTER:
	case FUSE_SETXATTR | FUSE_PREFILTER:
	case FUSE_REMOVEXATTR | FUSE_PREFILTER:
	case FUSE_CREATE | FUSE_PREFILTER:
	case FUSE_FALLOCATE | FUSE_PREFILTER:
	case FUSE_RENAME2 | FUSE_PREFILTER:
	case FUSE_COPY_FILE_RANGE | FUSE_PREFILTER:
		return -EROFS;
	case FUSE_OPEN | FUSE_PREFILTER: {
		const struct fuse_open_in *in = fa->in_args[0].value;

		if ((in->flags & O_ACCMODE) != O_RDONLY || (in->flags & O_TRUNC))
			return -EROFS;
		return FUSE_BPF_BACKING;
	}
	}
	return FUSE_BPF_BACKING;
}

char _license[] SEC("license") = "GPL";
