//! The record of a tree's file versions ([`FileVersions`]) that a process
//! leaves for the next one taking over its volume: the "SFV1" format, its
//! encoder and its decoder. It holds no secrets.

use super::FileVersions;

/// The record of [`FileVersions`] a process leaves for the next: "SFV1",
/// then per file: path (u32 length, bytes), latest version (u64), inode
/// count (u32) and inode numbers (u64 each); little-endian.
const VERSIONS_MAGIC: &[u8; 4] = b"SFV1";

pub(crate) fn encode_versions(files: &[FileVersions]) -> Vec<u8> {
    let mut out = VERSIONS_MAGIC.to_vec();
    out.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for file in files {
        out.extend_from_slice(&(file.path.len() as u32).to_le_bytes());
        out.extend_from_slice(file.path.as_bytes());
        out.extend_from_slice(&file.latest.to_le_bytes());
        out.extend_from_slice(&(file.inodes.len() as u32).to_le_bytes());
        for ino in &file.inodes {
            out.extend_from_slice(&ino.to_le_bytes());
        }
    }
    out
}

/// Reads [`encode_versions`]' output; `Ok(None)` for an empty record (a
/// build that recorded no versions).
pub(crate) fn decode_versions(bytes: &[u8]) -> Result<Option<Vec<FileVersions>>, &'static str> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
            if self.0.len() < n {
                return Err("truncated");
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn u32(&mut self) -> Result<u32, &'static str> {
            Ok(u32::from_le_bytes(
                self.take(4)?.try_into().map_err(|_| "truncated")?,
            ))
        }
        fn u64(&mut self) -> Result<u64, &'static str> {
            Ok(u64::from_le_bytes(
                self.take(8)?.try_into().map_err(|_| "truncated")?,
            ))
        }
    }
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut r = Reader(bytes);
    if r.take(4)? != VERSIONS_MAGIC {
        return Err("unknown format");
    }
    let mut files = Vec::new();
    for _ in 0..r.u32()? {
        let len = r.u32()? as usize;
        let path = String::from_utf8(r.take(len)?.to_vec()).map_err(|_| "not UTF-8")?;
        let latest = r.u64()?;
        let n = r.u32()? as usize;
        let mut inodes = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            inodes.push(r.u64()?);
        }
        files.push(FileVersions {
            path,
            latest,
            inodes,
        });
    }
    if !r.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok(Some(files))
}
