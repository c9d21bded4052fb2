//! secretfs-fuse
