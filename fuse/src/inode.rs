//! Deterministic inode numbers and generations.
//!
//! An inode number is a pure function of the volume id, the path and the
//! version of the file (its *generation counter*, 0 for the version a volume
//! is built with), so a restarted server that rebuilds a volume from the
//! same plan and the recorded counters answers for the same inode numbers the
//! kernel already holds (restart survival needs this). Each version of a
//! file is its own inode (docs/SEMANTICS.md, "Rotation and read
//! consistency"); numbers of version 0 are the ones older builds gave every
//! version, so a volume mounted by an older build keeps its numbers.
//! The hash is written out here rather than taken from `std`, whose hasher
//! may change between Rust releases: an upgraded binary must compute the same
//! numbers as the one it replaces.

/// The root directory's inode number, fixed by the FUSE protocol.
pub const ROOT_INO: u64 = 1;

/// FNV-1a over `parts`, each followed by a 0xff separator byte (which
/// cannot occur in UTF-8), then a SplitMix64 finaliser to spread the bits.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The inode number of `path` in `volume` on probe `attempt` (0 first; a
/// later attempt is used only if an earlier number is taken in the volume).
/// Never 0 (invalid) or 1 (the root).
pub fn inode_number(volume: &str, path: &str, attempt: u32) -> u64 {
    let mut attempt = attempt;
    loop {
        let ino = stable_hash(&[
            b"ino",
            volume.as_bytes(),
            path.as_bytes(),
            &attempt.to_le_bytes(),
        ]);
        if ino > ROOT_INO {
            return ino;
        }
        attempt = attempt.wrapping_add(1);
    }
}

/// The inode number of version `version` (1 and up) of the file at `path`,
/// on probe `attempt`. Version 0 is [`inode_number`]. Never 0 or 1.
pub fn version_inode_number(volume: &str, path: &str, version: u64, attempt: u32) -> u64 {
    if version == 0 {
        return inode_number(volume, path, attempt);
    }
    let mut attempt = attempt;
    loop {
        let ino = stable_hash(&[
            b"version",
            volume.as_bytes(),
            path.as_bytes(),
            &version.to_le_bytes(),
            &attempt.to_le_bytes(),
        ]);
        if ino > ROOT_INO {
            return ino;
        }
        attempt = attempt.wrapping_add(1);
    }
}

/// The generation reported with `path`'s inode: also derived, never 0.
pub fn generation(volume: &str, path: &str) -> u64 {
    stable_hash(&[b"gen", volume.as_bytes(), path.as_bytes()]) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_across_builds() {
        // Fixed expectations (computed independently in Python from the
        // definition above): if these change, restarted servers would answer
        // for different inodes than the kernel holds. Do not update casually.
        assert_eq!(inode_number("vol-1", "SECRET_1", 0), 0xd27b_ab2a_926b_5f6c);
        assert_eq!(generation("vol-1", "SECRET_1"), 0x833b_c43d_7492_0bab);
        assert_eq!(
            version_inode_number("vol-1", "SECRET_1", 0, 0),
            0xd27b_ab2a_926b_5f6c
        );
        assert_eq!(
            version_inode_number("vol-1", "SECRET_1", 1, 0),
            0x51d0_3c7b_e517_1425
        );
    }

    #[test]
    fn numbers_depend_on_volume_path_and_attempt() {
        let a = inode_number("v", "a", 0);
        assert_ne!(a, inode_number("w", "a", 0));
        assert_ne!(a, inode_number("v", "b", 0));
        assert_ne!(a, inode_number("v", "a", 1));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(inode_number("ab", "c", 0), inode_number("a", "bc", 0));
        assert!(a > ROOT_INO);
        let v = version_inode_number("v", "a", 1, 0);
        assert_ne!(v, a);
        assert_ne!(v, version_inode_number("v", "a", 2, 0));
        assert_ne!(v, version_inode_number("v", "a", 1, 1));
        assert_ne!(v, version_inode_number("w", "a", 1, 0));
    }
}
