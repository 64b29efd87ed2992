/* fdsl-equivalent: bench/policies/hide_one.fdsl
 *
 * hide name == "secret" (the dispatch is in hide.h). */
#include "hide.h"

static __attribute__((always_inline)) int secret(const char *n, __u32 size)
{
	return size == 7 && n[0] == 's' && n[1] == 'e' && n[2] == 'c' && n[3] == 'r' &&
	       n[4] == 'e' && n[5] == 't';
}

SEC("fuse/root")
int hide_one(struct fuse_bpf_args *fa)
{
	return hide(fa);
}

char _license[] SEC("license") = "GPL";
