/* FUSE opcode numbers the bench programs name (spec section 11), for both ABIs'
 * headers, which leave them to the program. */
#ifndef FDSL_BENCH_FUSE_OPCODES_H
#define FDSL_BENCH_FUSE_OPCODES_H

#define FUSE_SYMLINK 6
#define FUSE_MKNOD 8
#define FUSE_RENAME 12
#define FUSE_LINK 13
#define FUSE_READDIR 28
#define FUSE_CREATE 35
#define FUSE_RENAME2 45

#endif
