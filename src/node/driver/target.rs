//! Target directories, walked without following symbolic links.
//!
//! A target is `<kubelet dir>/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount`
//! (checked by [`super::context`] first). The kubelet directory is the
//! node's, chosen by its operator: it may be (or pass through) a symbolic
//! link, as `/var/lib/kubelet` is on some distributions. Below it, from
//! `pods` on, every name must be a real directory: a symbolic link there
//! (planted by anything that can write into a pod's directory) would move
//! the mount, and the directories the driver creates and removes, out of the
//! kubelet directory. Each name is opened with `openat2(RESOLVE_NO_SYMLINKS)`
//! relative to the directory before it, and created with `mkdirat` relative
//! to it, so what is checked is what is used.
//!
//! One gap remains: `mount(2)` takes a path, which the kernel resolves
//! again. The directories it passes through are the pod's, which only root
//! (kubelet, this driver) writes.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use secretfs_csi::{ErrorCode, VolumeError, error_types};
use secretfs_fuse::FS_TYPE;

/// Names from `pods` to `mount`: the part of a target that must hold no
/// symbolic link.
const POD_PART: usize = 6;

/// The directories a publish created, to remove again if the mount fails.
#[derive(Debug, Default)]
pub(crate) struct Created {
    /// (parent directory, name), outermost first.
    dirs: Vec<(OwnedFd, OsString)>,
}

impl Created {
    /// Removes what was created (innermost first; a directory that is not
    /// empty any more, e.g. another volume of the pod is in it now, stays).
    pub(crate) fn undo(self) {
        for (parent, name) in self.dirs.into_iter().rev() {
            if let Err(e) = rustix::fs::unlinkat(&parent, name.as_os_str(), AtFlags::REMOVEDIR) {
                tracing::debug!(name = ?name, error = %e, "a directory the failed publish created stays");
            }
        }
    }

    /// Whether anything was created.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }
}

/// What the walk found at the end of the target path.
#[derive(Debug)]
pub(crate) enum Found {
    /// The target directory: its parent and its name.
    Dir { parent: OwnedFd, name: OsString },
    /// The target, or a directory above it, does not exist.
    Missing,
}

/// Why a component cannot be used.
fn refused(target: &Path, component: &Path, what: &str) -> VolumeError {
    VolumeError::new(
        ErrorCode::InvalidArgument,
        error_types::UNEXPECTED_TARGET_PATH,
        format!(
            "target path {target:?}: {component:?} is {what}: every name from pods/ on must be a real \
             directory that kubelet made (nothing was mounted or removed); remove it and let kubelet \
             create the pod's volume directory again"
        ),
    )
}

fn failed(
    target: &Path,
    component: &Path,
    error_type: &'static str,
    e: impl std::fmt::Display,
) -> VolumeError {
    VolumeError::new(
        ErrorCode::Internal,
        error_type,
        format!("target path {target:?}: cannot open {component:?}: {e}"),
    )
}

/// The names of `target` (an absolute path checked by
/// [`super::context`]).
fn names(target: &Path) -> Vec<&OsStr> {
    target
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect()
}

/// Opens `name` in `parent` as a directory, following a symbolic link only
/// when `follow`.
fn open_dir(parent: &OwnedFd, name: &OsStr, follow: bool) -> rustix::io::Result<OwnedFd> {
    let resolve = if follow {
        ResolveFlags::empty()
    } else {
        ResolveFlags::NO_SYMLINKS
    };
    rustix::fs::openat2(
        parent,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        resolve,
    )
}

/// Walks `target`; with `create`, missing directories are made (mode 0750,
/// as upstream) and recorded in the returned [`Created`].
fn walk(
    target: &Path,
    create: bool,
    error_type: &'static str,
) -> Result<(Found, Created), VolumeError> {
    let names = names(target);
    let mut created = Created::default();
    let root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| failed(target, Path::new("/"), error_type, e))?;
    let mut dir = root;
    let mut walked = PathBuf::from("/");
    let pod_part = names.len().saturating_sub(POD_PART);
    for (index, name) in names.iter().enumerate() {
        walked.push(name);
        let follow = index < pod_part;
        let last = index + 1 == names.len();
        let opened = loop {
            match open_dir(&dir, name, follow) {
                Ok(fd) => break fd,
                Err(rustix::io::Errno::LOOP) if !follow => {
                    created.undo();
                    return Err(refused(target, &walked, "a symbolic link"));
                }
                Err(rustix::io::Errno::NOTDIR) => {
                    created.undo();
                    return Err(refused(target, &walked, "not a directory"));
                }
                Err(rustix::io::Errno::NOENT) if !create => {
                    return Ok((Found::Missing, created));
                }
                Err(rustix::io::Errno::NOENT) => {
                    match rustix::fs::mkdirat(&dir, *name, Mode::from_raw_mode(0o750)) {
                        Ok(()) => {
                            let parent = dir
                                .as_fd()
                                .try_clone_to_owned()
                                .map_err(|e| failed(target, &walked, error_type, e))?;
                            created.dirs.push((parent, name.to_os_string()));
                        }
                        // Made meanwhile by someone else (kubelet, another
                        // volume of the pod): open it again.
                        Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => {
                            created.undo();
                            return Err(failed(target, &walked, error_type, e));
                        }
                    }
                }
                Err(e) => {
                    created.undo();
                    return Err(failed(target, &walked, error_type, e));
                }
            }
        };
        if last {
            return Ok((
                Found::Dir {
                    parent: dir,
                    name: name.to_os_string(),
                },
                created,
            ));
        }
        dir = opened;
    }
    Ok((Found::Missing, created))
}

/// Makes sure the target directory exists for a publish, with no symbolic
/// link from `pods/` on; returns what was created, for [`Created::undo`].
pub(crate) fn ensure(target: &Path) -> Result<Created, VolumeError> {
    walk(target, true, error_types::FAILED_TO_ENSURE_MOUNT_POINT).map(|(_, created)| created)
}

/// Finds the target directory for an unpublish, with no symbolic link from
/// `pods/` on; creates nothing.
pub(crate) fn find(target: &Path) -> Result<Found, VolumeError> {
    walk(target, false, error_types::FAILED_TO_CLEANUP_MOUNT_POINT).map(|(found, _)| found)
}

/// Removes the target directory found by [`find`] (it must be empty and
/// unmounted). Gone already: fine.
pub(crate) fn remove(target: &Path, found: Found) -> Result<(), VolumeError> {
    let Found::Dir { parent, name } = found else {
        return Ok(());
    };
    match rustix::fs::unlinkat(&parent, name.as_os_str(), AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(VolumeError::new(
            ErrorCode::Internal,
            error_types::FAILED_TO_CLEANUP_MOUNT_POINT,
            format!("cannot remove target path {target:?}: {e}"),
        )),
    }
}

/// Unmounts `target` if it is a secretfs mount; anything else is left.
pub(super) fn unmount_stale(target: &Path) -> Result<(), VolumeError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let wanted = target.to_string_lossy();
    let ours = mounts.lines().any(|line| {
        let mut fields = line.split(' ');
        let (_, mount_point, fs_type) = (fields.next(), fields.next(), fields.next());
        mount_point == Some(wanted.as_ref()) && fs_type == Some(FS_TYPE)
    });
    if !ours {
        return Ok(());
    }
    rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH).map_err(|e| {
        VolumeError::new(
            ErrorCode::Internal,
            error_types::FAILED_TO_UNMOUNT,
            format!("unmounting stale {target:?} failed: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(root: &Path) -> PathBuf {
        root.join("pods/u1/volumes/kubernetes.io~csi/v/mount")
    }

    #[test]
    fn missing_directories_are_made_and_undone() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("pods/u1/volumes")).unwrap();
        let t = target(root.path());
        let created = ensure(&t).unwrap();
        assert!(t.is_dir());
        created.undo();
        assert!(
            !root
                .path()
                .join("pods/u1/volumes/kubernetes.io~csi")
                .exists()
        );
        assert!(
            root.path().join("pods/u1/volumes").is_dir(),
            "what was there stays"
        );
        // Existing: nothing created.
        std::fs::create_dir_all(&t).unwrap();
        assert!(ensure(&t).unwrap().is_empty());
    }

    #[test]
    fn a_symbolic_link_below_pods_is_refused_by_name() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("pods/u1")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join("pods/u1/volumes")).unwrap();
        let err = ensure(&target(root.path())).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(
            err.message.contains("pods/u1/volumes\" is a symbolic link"),
            "{}",
            err.message
        );
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
        assert!(
            matches!(find(&target(root.path())), Err(e) if e.code == ErrorCode::InvalidArgument)
        );
    }

    #[test]
    fn the_kubelet_directory_itself_may_be_a_link() {
        let real = tempfile::tempdir().unwrap();
        let links = tempfile::tempdir().unwrap();
        let kubelet = links.path().join("kubelet");
        std::os::unix::fs::symlink(real.path(), &kubelet).unwrap();
        let created = ensure(&target(&kubelet)).unwrap();
        assert!(target(real.path()).is_dir());
        let found = find(&target(&kubelet)).unwrap();
        remove(&target(&kubelet), found).unwrap();
        assert!(!target(real.path()).exists());
        drop(created);
    }
}
