/* fdsl-equivalent: examples/hide_secrets.fdsl
 * fdsl-abi: rfc-v1
 *
 * hide_secrets.c for the RFC v1 ABI (spec sections 8.2 and 12): the
 * example's decisions (a secret name is refused with ENOENT by lookup and by
 * every operation that would create it) in RFC v1's codes (allow =
 * BPF_FUSE_CONTINUE, readdir asks for BPF_FUSE_POSTFILTER and its POST for
 * BPF_FUSE_USER_POSTFILTER), the name
 * read through the slot's packet pointer after proving each read below
 * end_offset, in the style of the RFC selftests.  Packet pointers may move by
 * a variable offset once bounded, so "*.key" reads the four bytes before the
 * NUL through the pointer moved to size - 5: no switch on the size.  The asm
 * statements keep clang from merging the slots' context loads into one load
 * through a moved context pointer, and from folding the moved pointer into a
 * load at a negative offset from the name's end (both refused). */
#include "fuse_bpf_rfc_v1.h"
#include "fuse_opcodes.h"


#define ENV 0x766e652e    /* ".env" as a little-endian u32 */
#define GIT 0x7469672e    /* ".git" */
#define ID_R 0x725f6469   /* "id_r" */
#define SA 0x6173         /* "sa" */
#define KEY 0x79656b2e    /* ".key" */

#define SLOT(i)                                                         \
	do {                                                            \
		name = (const char *)fa->in_args[i].value;              \
		end = (const char *)fa->in_args[i].end_offset;          \
		size = fa->in_args[i].size;                             \
		asm volatile("" : "+r"(name), "+r"(end), "+r"(size));   \
	} while (0)

static __attribute__((always_inline)) int secret(const char *n, const char *end, __u32 size)
{
	if (size == 5 && n + 4 <= end &&
	    (*(const __u32 *)n == ENV || *(const __u32 *)n == GIT))
		return 1;
	if (size == 7 && n + 6 <= end && *(const __u32 *)n == ID_R &&
	    *(const __u16 *)(n + 4) == SA)
		return 1;
	if (size >= 5 && size <= 256) {
		__u64 off = size - 5;
		const char *p;

		asm volatile("" : "+r"(off));
		p = n + off;
		if (p + 4 <= end && *(const __u32 *)p == KEY)
			return 1;
	}
	return 0;
}

SEC("fuse/root")
int hide_secrets(struct __bpf_fuse_args *fa)
{
	const char *name, *end;
	__u32 size;

	switch (fa->opcode) {
	case FUSE_LOOKUP | FUSE_PREFILTER:
	case FUSE_SYMLINK | FUSE_PREFILTER:
		SLOT(0);
		break;
	case FUSE_MKNOD | FUSE_PREFILTER:
	case FUSE_MKDIR | FUSE_PREFILTER:
	case FUSE_LINK | FUSE_PREFILTER:
	case FUSE_CREATE | FUSE_PREFILTER:
		SLOT(1);
		break;
	case FUSE_RENAME | FUSE_PREFILTER:
	case FUSE_RENAME2 | FUSE_PREFILTER:
		SLOT(2);
		break;
	case FUSE_READDIR | FUSE_PREFILTER:
		return BPF_FUSE_POSTFILTER;
	case FUSE_READDIR | FUSE_POSTFILTER:
		return BPF_FUSE_USER_POSTFILTER;
	default:
		return BPF_FUSE_CONTINUE;
	}
	return secret(name, end, size) ? -ENOENT : BPF_FUSE_CONTINUE;
}

char _license[] SEC("license") = "GPL";
