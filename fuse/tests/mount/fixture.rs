//! Shared set-up for the real-mount tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use secretfs_fuse::{
    Content, FileSpec, MountOptions, MountedVolume, ReadMode, Volume, VolumeId, VolumeSpec,
};
use secretfs_secrets::SecretBytes;

/// Whether real-mount tests can run here; panics with instructions when
/// they cannot and skipping was not asked for.
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

/// A mounted volume in a fresh directory that other users can traverse.
pub struct Mounted {
    pub runtime: tokio::runtime::Runtime,
    pub mounted: Option<MountedVolume>,
    pub target: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mounted {
    pub fn volume(&self) -> &Volume {
        self.mounted.as_ref().unwrap().volume()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.target.join(relative)
    }

    pub fn replace(&self, path: &str, bytes: &[u8]) {
        self.volume()
            .replace(path, Arc::new(SecretBytes::from_slice(bytes)))
            .unwrap();
    }

    pub fn unmount(&mut self) {
        if let Some(m) = self.mounted.take() {
            m.unmount().unwrap();
        }
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn target_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    (dir, target)
}

pub fn spec(files: Vec<FileSpec>) -> VolumeSpec {
    VolumeSpec {
        id: VolumeId::new("test-volume"),
        dir_uid: 0,
        dir_gid: 2000,
        files,
    }
}

pub fn file(path: &str, mode: u32, gid: u32, bytes: &[u8]) -> FileSpec {
    file_owned(path, mode, 0, gid, bytes)
}

pub fn file_owned(path: &str, mode: u32, uid: u32, gid: u32, bytes: &[u8]) -> FileSpec {
    FileSpec::new(path, mode, uid, gid, Content::bytes(bytes)).unwrap()
}

pub fn mount(files: Vec<FileSpec>) -> Mounted {
    mount_spec(spec(files))
}

pub fn mount_spec(spec: VolumeSpec) -> Mounted {
    mount_with(spec, &MountOptions::default())
}

/// Mounts `files` with reads served in `mode`.
pub fn mount_in(mode: ReadMode, files: Vec<FileSpec>) -> Mounted {
    let options = MountOptions {
        read_mode: mode,
        ..MountOptions::default()
    };
    mount_with(spec(files), &options)
}

pub fn mount_with(spec: VolumeSpec, options: &MountOptions) -> Mounted {
    let runtime = runtime();
    let (dir, target) = target_dir();
    let mounted = MountedVolume::mount(spec, &target, options, runtime.handle().clone()).unwrap();
    Mounted {
        runtime,
        mounted: Some(mounted),
        target,
        _dir: dir,
    }
}

/// Runs `program args` as `uid:gid` with supplementary `groups`.
pub fn run_as(uid: u32, gid: u32, groups: &[u32], program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg(program).args(args).output().unwrap()
}

/// The errno of `open(path, O_RDONLY)` made by a child process running as
/// `uid:gid` with no supplementary groups; 0 if the open succeeded. The
/// child opens the file itself, between `fork` and `exec`, and exits with
/// the errno: no program output or locale is involved.
pub fn open_errno_as(uid: u32, gid: u32, path: &Path) -> i32 {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut cmd = Command::new("true");
    // SAFETY: between fork and exec the closure calls only async-signal-safe
    // functions (setgroups, setresgid, setresuid, open, __errno_location,
    // _exit) and allocates nothing; `c_path` was built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                // Never a plausible open errno: the caller sees the set-up failed.
                libc::_exit(200);
            }
            let fd = libc::open(c_path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            let code = if fd >= 0 {
                0
            } else {
                *libc::__errno_location()
            };
            libc::_exit(code);
        });
    }
    let status = cmd.status().unwrap();
    assert_eq!(status.signal(), None, "the child was killed: {status:?}");
    let code = status.code().unwrap();
    assert_ne!(code, 200, "the child could not become {uid}:{gid}");
    code
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The `/proc/self/mounts` line for `target`, if mounted.
pub fn mount_line(target: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let target = target.to_str().unwrap();
    mounts
        .lines()
        .find(|line| line.split(' ').nth(1) == Some(target))
        .map(str::to_owned)
}

/// A file of a volume bind-mounted on its own onto a file elsewhere, as
/// kubelet mounts a `subPath` (the kernel pins the file's inode; the mount
/// has no name in the volume to look up again). Unmounted on drop.
pub struct BindMount {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl BindMount {
    /// `mount --bind source <new file>`.
    pub fn new(source: &Path) -> Self {
        Self::from(source)
    }

    /// What kubelet does: open the file (`O_PATH`, each component checked)
    /// and bind-mount `/proc/self/fd/<fd>`, so the mount is of the inode
    /// opened, whatever the name points at by the time of the mount.
    pub fn like_kubelet(source: &Path) -> Self {
        use rustix::fs::{Mode, OFlags, open};
        let fd = open(
            source,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        use std::os::fd::AsRawFd;
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let bound = Self::from(&proc_path);
        drop(fd);
        bound
    }

    /// `mount --bind source <new directory>`: a `subPath` of a directory.
    pub fn directory(source: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("subpath-dir");
        std::fs::create_dir(&path).unwrap();
        rustix::mount::mount_bind(source, &path).unwrap();
        Self { path, _dir: dir }
    }

    fn from(source: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("subpath-file");
        std::fs::write(&path, b"").unwrap();
        rustix::mount::mount_bind(source, &path).unwrap();
        Self { path, _dir: dir }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
    }
}
