/* FUSE argument structs (uapi linux/fuse.h + Android fuse-bpf extras), declared by
 * member type and order only: clang computes the offsets, which tests/test_abi.py
 * compares with the hand-written offsets in fdsl/abi.py. */
#ifndef FDSL_TEST_FUSE_STRUCTS_H
#define FDSL_TEST_FUSE_STRUCTS_H
typedef unsigned int u32_t;
typedef int s32_t;
typedef unsigned long long u64_t;
typedef long long s64_t;

struct fuse_attr { u64_t ino, size, blocks, atime, mtime, ctime;
    u32_t atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags; };
struct fuse_entry_out { u64_t nodeid, generation, entry_valid, attr_valid;
    u32_t entry_valid_nsec, attr_valid_nsec; struct fuse_attr attr; };
struct fuse_entry_bpf_out { u64_t backing_action, backing_fd, bpf_action, bpf_fd; };
struct fuse_attr_out { u64_t attr_valid; u32_t attr_valid_nsec, dummy; struct fuse_attr attr; };
struct fuse_getattr_in { u32_t getattr_flags, dummy; u64_t fh; };
struct fuse_setattr_in { u32_t valid, padding; u64_t fh, size, lock_owner, atime, mtime, ctime;
    u32_t atimensec, mtimensec, ctimensec, mode, unused4, uid, gid, unused5; };
struct fuse_open_in { u32_t flags, open_flags; };
struct fuse_open_out { u64_t fh; u32_t open_flags; s32_t backing_id; };
struct fuse_create_in { u32_t flags, mode, umask, open_flags; };
struct fuse_release_in { u64_t fh; u32_t flags, release_flags; u64_t lock_owner; };
struct fuse_flush_in { u64_t fh; u32_t unused, padding; u64_t lock_owner; };
struct fuse_fsync_in { u64_t fh; u32_t fsync_flags, padding; };
struct fuse_read_in { u64_t fh, offset; u32_t size, read_flags; u64_t lock_owner; u32_t flags, padding; };
struct fuse_write_in { u64_t fh, offset; u32_t size, write_flags; u64_t lock_owner; u32_t flags, padding; };
struct fuse_write_out { u32_t size, padding; };
struct fuse_read_out { u64_t offset; u32_t again, padding; };
struct fuse_bpf_rw_result { s64_t ret; };
struct fuse_mknod_in { u32_t mode, rdev, umask, padding; };
struct fuse_mkdir_in { u32_t mode, umask; };
struct fuse_rename_in { u64_t newdir; };
struct fuse_rename2_in { u64_t newdir; u32_t flags, padding; };
struct fuse_link_in { u64_t oldnodeid; };
struct fuse_setxattr_in { u32_t size, flags, setxattr_flags, padding; };
struct fuse_getxattr_in { u32_t size, padding; };
struct fuse_getxattr_out { u32_t size, padding; };
struct fuse_access_in { u32_t mask, padding; };
struct fuse_lseek_in { u64_t fh, offset; u32_t whence, padding; };
struct fuse_lseek_out { u64_t offset; };
struct fuse_fallocate_in { u64_t fh, offset, length; u32_t mode, padding; };
struct fuse_copy_file_range_in { u64_t fh_in, off_in, nodeid_out, fh_out, off_out, len, flags; };
struct fuse_statfs_out { u64_t blocks, bfree, bavail, files, ffree;
    u32_t bsize, namelen, frsize, padding, spare[6]; };
struct fuse_in_header { u32_t len, opcode; u64_t unique, nodeid; u32_t uid, gid, pid; s32_t error_in; };
struct fuse_out_header { u32_t len; s32_t error; u64_t unique; };
struct fuse_dirent { u64_t ino, off; u32_t namelen, type; char name[]; };
struct fuse_direntplus { struct fuse_entry_out entry; struct fuse_dirent dirent; };
struct fuse_init_in { u32_t major, minor, max_readahead, flags, flags2, unused[11]; };
struct fuse_init_out { u32_t major, minor, max_readahead, flags;
    unsigned short max_background, congestion_threshold; u32_t max_write, time_gran;
    unsigned short max_pages, map_alignment; u32_t flags2, max_stack_depth, unused[6]; };
struct fuse_forget_in { u64_t nlookup; };
struct fuse_batch_forget_in { u32_t count, dummy; };
struct fuse_forget_one { u64_t nodeid, nlookup; };
struct fuse_interrupt_in { u64_t unique; };
struct fuse_poll_in { u64_t fh, kh; u32_t flags, events; };
struct fuse_poll_out { u32_t revents, padding; };
struct fuse_ioctl_in { u64_t fh; u32_t flags, cmd; u64_t arg; u32_t in_size, out_size; };
struct fuse_ioctl_out { s32_t result; u32_t flags, in_iovs, out_iovs; };
struct fuse_statx_in { u32_t getattr_flags, reserved; u64_t fh; u32_t sx_flags, sx_mask; };
struct fuse_sx_time { s64_t tv_sec; u32_t tv_nsec; s32_t __reserved; };
struct fuse_statx { u32_t mask, blksize; u64_t attributes; u32_t nlink, uid, gid;
    unsigned short mode, __spare0[1]; u64_t ino, size, blocks, attributes_mask;
    struct fuse_sx_time atime, btime, ctime, mtime;
    u32_t rdev_major, rdev_minor, dev_major, dev_minor; u64_t __spare2[14]; };
struct fuse_statx_out { u64_t attr_valid; u32_t attr_valid_nsec, flags; u64_t spare[2];
    struct fuse_statx stat; };
struct fuse_backing_map { s32_t fd; u32_t flags; u64_t padding; };
struct bpf_map_def_legacy { u32_t map_type; u64_t key_size, value_size; u32_t max_entries; };
#endif
