//! What tests with real mounts need from the machine.

use std::path::Path;

/// Whether real FUSE mounts can run here (root and `/dev/fuse`). When they
/// cannot, this panics with instructions, unless
/// `SECRETFS_SKIP_FUSE_TESTS` is set, in which case it returns `false` and
/// the test returns early (CI runs as root with `/dev/fuse`, so it never
/// skips there).
pub fn fuse_available() -> bool {
    let root = rustix::process::geteuid().is_root();
    let dev = Path::new("/dev/fuse").exists();
    if root && dev {
        return true;
    }
    if std::env::var_os("SECRETFS_SKIP_FUSE_TESTS").is_some() {
        eprintln!("skipping: real FUSE mounts need root and /dev/fuse");
        return false;
    }
    panic!(
        "real FUSE mount tests need root and /dev/fuse (root: {root}, /dev/fuse: {dev}); \
         set SECRETFS_SKIP_FUSE_TESTS=1 to skip them"
    );
}
