//! Real FUSE mounts, checked the way a user would: `std::fs`, `cat`, `ls`,
//! `stat`, as root and as other users. Needs root and /dev/fuse (CI has
//! both); set SECRETFS_SKIP_FUSE_TESTS=1 to skip on a machine without them.

mod mount {
    pub mod fixture;

    mod audit;
    mod errors;
    mod files;
    mod lazy;
    mod permissions;
    mod reads;
    mod rotation;
    mod stress;
    mod takeover;
}
