//! The few facts of the FUSE wire protocol (`include/uapi/linux/fuse.h`)
//! that the relay and our notifications need. Everything else is parsed by
//! fuser.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

/// `sizeof(struct fuse_in_header)`: len, opcode, unique, nodeid, uid, gid,
/// pid, total_extlen, padding.
pub(crate) const IN_HEADER_LEN: usize = 40;
/// `sizeof(struct fuse_out_header)`: len, error, unique.
pub(crate) const OUT_HEADER_LEN: usize = 16;

pub(crate) const OP_FORGET: u32 = 2;
pub(crate) const OP_INIT: u32 = 26;
pub(crate) const OP_INTERRUPT: u32 = 36;
pub(crate) const OP_DESTROY: u32 = 38;
pub(crate) const OP_BATCH_FORGET: u32 = 42;

const NOTIFY_INVAL_INODE: i32 = 2;
const NOTIFY_INVAL_ENTRY: i32 = 3;
const NOTIFY_STORE: i32 = 4;
/// Linux 6.9+: the kernel queues again every request that was read from
/// the connection and not answered (e.g. by a process that was killed).
const NOTIFY_RESEND: i32 = 7;

/// Opcode and unique id of a request read from the kernel.
pub(crate) fn request_id(message: &[u8]) -> Option<(u32, u64)> {
    if message.len() < IN_HEADER_LEN {
        return None;
    }
    let opcode = u32::from_ne_bytes(message[4..8].try_into().ok()?);
    let unique = u64::from_ne_bytes(message[8..16].try_into().ok()?);
    Some((opcode, unique))
}

/// The id of our own DESTROY requests (the kernel's ids count up from 1
/// and use the top bit only to mark resent requests).
pub(crate) const DESTROY_UNIQUE: u64 = u64::MAX >> 1;

/// A DESTROY request, as the kernel sends when a connection ends.
pub(crate) fn destroy_request() -> [u8; IN_HEADER_LEN] {
    let mut message = [0u8; IN_HEADER_LEN];
    message[0..4].copy_from_slice(&(IN_HEADER_LEN as u32).to_ne_bytes());
    message[4..8].copy_from_slice(&OP_DESTROY.to_ne_bytes());
    message[8..16].copy_from_slice(&DESTROY_UNIQUE.to_ne_bytes());
    message
}

/// Whether the kernel expects an answer to a request with `opcode`.
pub(crate) fn expects_reply(opcode: u32) -> bool {
    !matches!(opcode, OP_FORGET | OP_BATCH_FORGET | OP_INTERRUPT)
}

/// The unique id a reply (or 0, a notification) answers.
pub(crate) fn reply_unique(message: &[u8]) -> Option<u64> {
    if message.len() < OUT_HEADER_LEN {
        return None;
    }
    Some(u64::from_ne_bytes(message[8..16].try_into().ok()?))
}

/// The `max_write` of an INIT reply (`struct fuse_init_out` after the
/// header: major, minor, max_readahead, flags, max_background,
/// congestion_threshold, max_write).
pub(crate) fn init_reply_max_write(reply: &[u8]) -> Option<u32> {
    let at = OUT_HEADER_LEN + 20;
    Some(u32::from_ne_bytes(reply.get(at..at + 4)?.try_into().ok()?))
}

/// Error of an out message (0 for success; negative errno).
pub(crate) fn reply_error(message: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(message.get(4..8)?.try_into().ok()?))
}

fn notification(code: i32, body: &[u8]) -> Vec<u8> {
    let len = OUT_HEADER_LEN + body.len();
    let mut message = Vec::with_capacity(len);
    message.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    message.extend_from_slice(&code.to_ne_bytes());
    message.extend_from_slice(&0u64.to_ne_bytes());
    message.extend_from_slice(body);
    message
}

/// Writes notifications straight to the kernel connection. They do not
/// go through the relay, so an invalidation that waits for a read in
/// progress never blocks the thread that must deliver that read's answer.
#[derive(Debug, Clone)]
pub(crate) struct Notifier {
    dev: std::sync::Arc<std::os::fd::OwnedFd>,
}

impl Notifier {
    pub(crate) fn new(dev: std::sync::Arc<std::os::fd::OwnedFd>) -> Self {
        Self { dev }
    }

    fn send(&self, message: &[u8]) -> std::io::Result<()> {
        match rustix::io::write(self.dev.as_fd(), message) {
            Ok(_) => Ok(()),
            // Not cached by the kernel: nothing to drop.
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Drops the attributes and cached pages of `ino`.
    pub(crate) fn inval_inode(&self, ino: u64) -> std::io::Result<()> {
        let mut body = Vec::with_capacity(24);
        body.extend_from_slice(&ino.to_ne_bytes());
        body.extend_from_slice(&0i64.to_ne_bytes());
        body.extend_from_slice(&0i64.to_ne_bytes());
        self.send(&notification(NOTIFY_INVAL_INODE, &body))
    }

    /// Drops the cached name `name` in directory `parent`.
    pub(crate) fn inval_entry(&self, parent: u64, name: &OsStr) -> std::io::Result<()> {
        let name = name.as_bytes();
        let mut body = Vec::with_capacity(16 + name.len() + 1);
        body.extend_from_slice(&parent.to_ne_bytes());
        body.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend_from_slice(name);
        body.push(0);
        self.send(&notification(NOTIFY_INVAL_ENTRY, &body))
    }

    /// Puts `data` into the kernel's page cache of `ino` at `offset` (a
    /// whole page from offset 0, or up to the end of the file, is then
    /// read from there without a request). Nothing happens if the kernel
    /// does not know `ino`.
    pub(crate) fn store(&self, ino: u64, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let len = OUT_HEADER_LEN + 24 + data.len();
        // It holds secret bytes: built at its final size, wiped after.
        let mut message = zeroize::Zeroizing::new(Vec::with_capacity(len));
        message.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
        message.extend_from_slice(&NOTIFY_STORE.to_ne_bytes());
        message.extend_from_slice(&0u64.to_ne_bytes());
        message.extend_from_slice(&ino.to_ne_bytes());
        message.extend_from_slice(&offset.to_ne_bytes());
        message.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_ne_bytes());
        message.extend_from_slice(&0u32.to_ne_bytes());
        message.extend_from_slice(data);
        self.send(&message)
    }

    /// Asks the kernel to send again the requests a previous server read
    /// and never answered. Fails with `EINVAL` before Linux 6.9.
    pub(crate) fn resend(&self) -> std::io::Result<()> {
        rustix::io::write(self.dev.as_fd(), &notification(NOTIFY_RESEND, &[]))
            .map(|_| ())
            .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_where_fuse_h_puts_them() {
        let mut request = vec![0u8; IN_HEADER_LEN];
        request[0..4].copy_from_slice(&40u32.to_ne_bytes());
        request[4..8].copy_from_slice(&OP_INIT.to_ne_bytes());
        request[8..16].copy_from_slice(&(1u64 << 63 | 7).to_ne_bytes());
        assert_eq!(request_id(&request), Some((OP_INIT, 1 << 63 | 7)));
        assert_eq!(request_id(&request[..39]), None);

        let note = notification(NOTIFY_RESEND, &[]);
        assert_eq!(note.len(), OUT_HEADER_LEN);
        assert_eq!(reply_unique(&note), Some(0));
        assert_eq!(reply_error(&note), Some(NOTIFY_RESEND));
        assert_eq!(&note[0..4], &16u32.to_ne_bytes());
    }

    #[test]
    fn forgets_and_interrupts_get_no_reply() {
        assert!(!expects_reply(OP_FORGET));
        assert!(!expects_reply(OP_BATCH_FORGET));
        assert!(!expects_reply(OP_INTERRUPT));
        assert!(expects_reply(OP_INIT));
        assert!(expects_reply(15)); // READ
    }

    #[test]
    fn max_write_is_read_from_an_init_reply() {
        let mut reply = vec![0u8; OUT_HEADER_LEN + 64];
        reply[OUT_HEADER_LEN + 20..OUT_HEADER_LEN + 24].copy_from_slice(&131_072u32.to_ne_bytes());
        assert_eq!(init_reply_max_write(&reply), Some(131_072));
        assert_eq!(init_reply_max_write(&reply[..30]), None);
    }
}
