//! Which inodes of a volume bind mounts pin (kubelet's `subPath`), read
//! from this process's `/proc/self/mountinfo`.

/// The inodes among `candidates` that are the root of a bind mount of the
/// file system on device `dev`, as this process's mount table lists them.
pub(super) fn pinned_by_bind_mounts(dev: (u32, u32), candidates: &[u64]) -> Vec<u64> {
    use rustix::fs::{AtFlags, CWD, StatxFlags, statx};
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut pinned = Vec::new();
    for line in table.lines() {
        let Some(mount) = MountInfo::parse(line) else {
            continue;
        };
        // A mount of a subtree of ours (root "/" is the volume itself).
        if mount.dev != dev || mount.root == "/" {
            continue;
        }
        // Its root's inode, from the kernel's cache: no request reaches
        // this process.
        let Ok(stat) = statx(
            CWD,
            mount.mount_point.as_str(),
            AtFlags::STATX_DONT_SYNC | AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
            StatxFlags::INO,
        ) else {
            continue;
        };
        if (stat.stx_dev_major, stat.stx_dev_minor) == dev
            && candidates.contains(&stat.stx_ino)
            && !pinned.contains(&stat.stx_ino)
        {
            pinned.push(stat.stx_ino);
        }
    }
    pinned
}

/// The fields of a `/proc/self/mountinfo` line this crate needs.
#[derive(Debug, PartialEq, Eq)]
struct MountInfo {
    dev: (u32, u32),
    root: String,
    mount_point: String,
}

impl MountInfo {
    /// `id parent major:minor root mount-point options …`; paths have
    /// space, tab, newline and backslash escaped as `\ooo`.
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split(' ');
        let (_id, _parent) = (fields.next()?, fields.next()?);
        let (major, minor) = fields.next()?.split_once(':')?;
        let root = unescape(fields.next()?)?;
        let mount_point = unescape(fields.next()?)?;
        Some(Self {
            dev: (major.parse().ok()?, minor.parse().ok()?),
            root,
            mount_point,
        })
    }
}

fn unescape(field: &str) -> Option<String> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4);
        if bytes[i] == b'\\'
            && let Some(digits) = octal.filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
        {
            let code = std::str::from_utf8(digits).ok()?;
            out.push(u8::from_str_radix(code, 8).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_device_root_and_mount_point_unescaped() {
        let line = "612 29 0:57 /dir/SECRET\\040one//deleted /var/lib/kubelet/pods/u/volume-subpaths/v/c/0 ro,relatime shared:1 - fuse.secretfs secretfs ro,user_id=0";
        assert_eq!(
            MountInfo::parse(line),
            Some(MountInfo {
                dev: (0, 57),
                root: "/dir/SECRET one//deleted".into(),
                mount_point: "/var/lib/kubelet/pods/u/volume-subpaths/v/c/0".into(),
            })
        );
        assert_eq!(unescape("a\\134b\\011c\\012"), Some("a\\b\tc\n".into()));
        // A backslash not followed by three octal digits stays.
        assert_eq!(unescape("a\\9"), Some("a\\9".into()));
        assert_eq!(MountInfo::parse("612 29 x /a /b"), None);
        assert_eq!(MountInfo::parse(""), None);
    }
}
