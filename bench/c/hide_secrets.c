/* fdsl-equivalent: examples/hide_secrets.fdsl
 *
 * hide (name in {".env", ".git", "id_rsa"} or name like "*.key"): lookups
 * fail with ENOENT, creating such a name (or renaming onto one) with EACCES,
 * and readdir asks for its postfilter, which runs in the daemon (USER_FILTER:
 * BPF cannot walk dirent records).  Names arrive NUL-terminated, size
 * counting the NUL.
 *
 * What the kernel accepts: a buffer may only be read at constant offsets
 * (spec 4.1, "invalid variable buffer offset"), so the "*.key" test reads
 * the last four bytes at an offset fixed per possible size (a switch on the
 * size, one case per size 5..256).  The dispatch is in hide.h. */
#include "hide.h"

#define KEY 0x79656b2e /* ".key" read as a little-endian u32 */

/* case S: the suffix of a name of size S (NUL included) starts at S - 5.
 * Without the asm, clang moves the pointer by S - 5 in each case and loads
 * once: the kernel accepts that, our verifier does not (buffer pointers are
 * dereferenced as loaded, so the VMs' NULL check of the register suffices). */
#define K1(s)                                                           \
	case (s):                                                       \
		last = *(const __u32 *)(n + (s) - 5);                   \
		asm volatile("" : "+r"(last));                          \
		break;
#define K4(s) K1(s) K1((s) + 1) K1((s) + 2) K1((s) + 3)
#define K16(s) K4(s) K4((s) + 4) K4((s) + 8) K4((s) + 12)
#define K64(s) K16(s) K16((s) + 16) K16((s) + 32) K16((s) + 48)

static __attribute__((always_inline)) int ends_with_key(const char *n, __u32 size)
{
	__u32 last;

	switch (size) {
	K64(5) K64(69) K64(133) K16(197) K16(213) K16(229) K4(245) K4(249) K4(253)
	default:
		return 0;
	}
	return last == KEY;
}

static __attribute__((always_inline)) int secret(const char *n, __u32 size)
{
	if (size == 5 && n[0] == '.' && n[1] == 'e' && n[2] == 'n' && n[3] == 'v')
		return 1;
	if (size == 5 && n[0] == '.' && n[1] == 'g' && n[2] == 'i' && n[3] == 't')
		return 1;
	if (size == 7 && n[0] == 'i' && n[1] == 'd' && n[2] == '_' && n[3] == 'r' &&
	    n[4] == 's' && n[5] == 'a')
		return 1;
	return ends_with_key(n, size);
}

SEC("fuse/root")
int hide_secrets(struct fuse_bpf_args *fa)
{
	return hide(fa);
}

char _license[] SEC("license") = "GPL";
