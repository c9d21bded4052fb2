//! Frames on the keeper socket (the format is described in the module
//! documentation of [`super`]): sending with an optional fd, receiving a
//! header with its fd, then reading a body field by field straight into
//! buffers of their final size.

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use zeroize::Zeroizing;

/// Largest frame (`length`: the op and the body), 64 MiB.
pub const MAX_FRAME: usize = 64 << 20;
/// Longest key, in bytes.
pub const MAX_KEY: usize = 4096;
/// Longest error message, in bytes.
pub const MAX_MESSAGE: usize = 64 << 10;

/// Requests (client to keeper).
pub const PUT: u8 = 0x01;
pub const REMOVE: u8 = 0x02;
pub const LIST: u8 = 0x03;
/// Answers (keeper to client).
pub const OK: u8 = 0x80;
pub const ENTRY: u8 = 0x81;
pub const END: u8 = 0x82;
pub const ERR: u8 = 0x83;

/// The name of an op, for messages.
pub fn op_name(op: u8) -> String {
    match op {
        PUT => "PUT".into(),
        REMOVE => "REMOVE".into(),
        LIST => "LIST".into(),
        OK => "OK".into(),
        ENTRY => "ENTRY".into(),
        END => "END".into(),
        ERR => "ERR".into(),
        other => format!("unknown op {other:#04x}"),
    }
}

/// A protocol violation: the stream cannot be trusted past it.
pub fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// The little-endian `u32` length prefix of a field (a length that does
/// not fit makes the frame too large, which [`send`] refuses).
pub fn len32(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes()
}

/// Sends one frame made of `parts` (the body, already laid out), with
/// `fd` as `SCM_RIGHTS` on the first bytes. The parts are not copied: a
/// blob goes from its own buffer to the socket.
pub fn send(
    stream: &UnixStream,
    op: u8,
    fd: Option<BorrowedFd<'_>>,
    parts: &[&[u8]],
) -> io::Result<()> {
    let len = parts
        .iter()
        .try_fold(1usize, |sum, p| sum.checked_add(p.len()))
        .filter(|&len| len <= MAX_FRAME)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} frame over the keeper's {} MiB limit",
                    op_name(op),
                    MAX_FRAME >> 20
                ),
            )
        })?;
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&len32(len));
    head[4] = op;
    let mut slices: Vec<IoSlice<'_>> = std::iter::once(&head[..])
        .chain(parts.iter().copied())
        .map(IoSlice::new)
        .collect();
    let mut slices = &mut slices[..];
    let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut fd_sent = fds.is_empty();
    while !slices.is_empty() {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fd_sent && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other("cannot attach the fd to a keeper frame"));
        }
        match sendmsg(stream, slices, &mut control, SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                fd_sent = true;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The 5 bytes that open a frame, and the fd that came with them.
#[derive(Debug)]
pub struct Header {
    pub op: u8,
    pub fd: Option<OwnedFd>,
    /// Length of the body (after the op).
    pub body: usize,
}

/// Receives the next frame header; `None` when the peer closed the
/// connection between frames.
pub fn recv_header(stream: &UnixStream) -> io::Result<Option<Header>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut truncated = false;
    while got < head.len() {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = match recvmsg(
            stream,
            &mut [IoSliceMut::new(&mut head[got..])],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(r) => r,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        truncated |= received.flags.contains(ReturnFlags::CTRUNC);
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        if received.bytes == 0 {
            if got == 0 && fds.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a frame header",
            ));
        }
        got += received.bytes;
    }
    if truncated {
        return Err(invalid(
            "the fds of a frame were cut off (MSG_CTRUNC): more than one fd was sent, \
             or the receiver is out of file descriptors (raise RLIMIT_NOFILE)",
        ));
    }
    if fds.len() > 1 {
        return Err(invalid(format!(
            "a frame carries at most one fd, this one carried {}",
            fds.len()
        )));
    }
    let [a, b, c, d, op] = head;
    let len = u32::from_le_bytes([a, b, c, d]) as usize;
    if len == 0 {
        return Err(invalid("empty frame (its length must count the op byte)"));
    }
    if len > MAX_FRAME {
        return Err(invalid(format!(
            "frame of {len} bytes is over the {} MiB limit",
            MAX_FRAME >> 20
        )));
    }
    Ok(Some(Header {
        op,
        fd: fds.pop(),
        body: len - 1,
    }))
}

/// Reads the body of a frame field by field, never past its length.
#[derive(Debug)]
pub struct Body<'s> {
    stream: &'s UnixStream,
    left: usize,
}

impl<'s> Body<'s> {
    pub fn new(stream: &'s UnixStream, header: &Header) -> Self {
        Self {
            stream,
            left: header.body,
        }
    }

    fn take(&mut self, n: usize, what: &str) -> io::Result<()> {
        self.left = self
            .left
            .checked_sub(n)
            .ok_or_else(|| invalid(format!("{what} runs past the end of its frame")))?;
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut stream = self.stream;
        stream.read_exact(buf)
    }

    pub fn u8(&mut self, what: &str) -> io::Result<u8> {
        self.take(1, what)?;
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    /// A field's length prefix, checked against `max` and what is left.
    fn field_len(&mut self, what: &str, max: usize) -> io::Result<usize> {
        self.take(4, what)?;
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        let len = u32::from_le_bytes(b) as usize;
        if len > max {
            return Err(invalid(format!(
                "{what} of {len} bytes is over the {max}-byte limit"
            )));
        }
        self.take(len, what)?;
        Ok(len)
    }

    /// A UTF-8 field of at most `max` bytes.
    pub fn text(&mut self, what: &str, max: usize) -> io::Result<String> {
        let len = self.field_len(what, max)?;
        let mut buf = vec![0u8; len];
        self.fill(&mut buf)?;
        String::from_utf8(buf).map_err(|_| invalid(format!("{what} is not UTF-8")))
    }

    /// A secret field, read into a wiped-on-drop buffer of its final size.
    pub fn secret(&mut self, what: &str) -> io::Result<Zeroizing<Vec<u8>>> {
        let len = self.field_len(what, MAX_FRAME)?;
        let mut buf = Zeroizing::new(vec![0u8; len]);
        self.fill(&mut buf)?;
        Ok(buf)
    }

    /// The body must be consumed exactly.
    pub fn end(self) -> io::Result<()> {
        match self.left {
            0 => Ok(()),
            n => Err(invalid(format!(
                "{n} unexpected byte(s) at the end of a frame"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Round trips of every frame of the protocol table (module
    //! documentation of [`super`]) through [`send`], [`recv_header`] and
    //! [`Body`], on a socket pair; and damaged frames (every truncation, any
    //! bit flip) refused with an error, never a panic.

    use std::io::{Read as _, Write as _};
    use std::os::fd::AsFd as _;

    use proptest::prelude::*;

    use super::*;

    /// A frame as the protocol table describes it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Frame {
        Put {
            key: String,
            has_fd: bool,
            blob: Vec<u8>,
        },
        Remove {
            key: String,
        },
        List,
        Ok,
        Entry {
            key: String,
            blob: Vec<u8>,
        },
        End,
        Err {
            message: String,
        },
    }

    impl Frame {
        fn op(&self) -> u8 {
            match self {
                Frame::Put { .. } => PUT,
                Frame::Remove { .. } => REMOVE,
                Frame::List => LIST,
                Frame::Ok => OK,
                Frame::Entry { .. } => ENTRY,
                Frame::End => END,
                Frame::Err { .. } => ERR,
            }
        }

        /// Whether an fd travels with the frame.
        fn carries_fd(&self) -> bool {
            matches!(self, Frame::Put { has_fd: true, .. } | Frame::Entry { .. })
        }
    }

    /// Lays `frame` out as the client and the keeper do, and sends it.
    fn encode(stream: &UnixStream, frame: &Frame, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let fd = fd.filter(|_| frame.carries_fd());
        match frame {
            Frame::Put { key, has_fd, blob } => send(
                stream,
                PUT,
                fd,
                &[
                    &len32(key.len()),
                    key.as_bytes(),
                    &[u8::from(*has_fd)],
                    &len32(blob.len()),
                    blob,
                ],
            ),
            Frame::Remove { key } => send(stream, REMOVE, fd, &[&len32(key.len()), key.as_bytes()]),
            Frame::Entry { key, blob } => send(
                stream,
                ENTRY,
                fd,
                &[&len32(key.len()), key.as_bytes(), &len32(blob.len()), blob],
            ),
            Frame::Err { message } => send(
                stream,
                ERR,
                fd,
                &[&len32(message.len()), message.as_bytes()],
            ),
            Frame::List | Frame::Ok | Frame::End => send(stream, frame.op(), fd, &[]),
        }
    }

    /// Reads one frame as the keeper (requests) and the client (answers)
    /// do; `None` when the peer closed between frames.
    fn decode(stream: &UnixStream) -> io::Result<Option<(Frame, bool)>> {
        let Some(header) = recv_header(stream)? else {
            return Ok(None);
        };
        let with_fd = header.fd.is_some();
        let mut body = Body::new(stream, &header);
        let frame = match header.op {
            PUT => {
                let key = body.text("key", MAX_KEY)?;
                let has_fd = match body.u8("fd flag")? {
                    0 => false,
                    1 => true,
                    other => return Err(invalid(format!("PUT fd flag {other} is not 0 or 1"))),
                };
                let blob = body.secret("blob")?.to_vec();
                Frame::Put { key, has_fd, blob }
            }
            REMOVE => Frame::Remove {
                key: body.text("key", MAX_KEY)?,
            },
            LIST => Frame::List,
            OK => Frame::Ok,
            ENTRY => Frame::Entry {
                key: body.text("key", MAX_KEY)?,
                blob: body.secret("blob")?.to_vec(),
            },
            END => Frame::End,
            ERR => Frame::Err {
                message: body.text("error message", MAX_MESSAGE)?,
            },
            other => return Err(invalid(format!("unknown op {}", op_name(other)))),
        };
        body.end()?;
        Ok(Some((frame, with_fd)))
    }

    fn key() -> impl Strategy<Value = String> {
        // Any UTF-8, up to the key limit (multi-byte characters included).
        proptest::string::string_regex("(?s).{0,64}")
            .unwrap()
            .prop_filter("at most MAX_KEY bytes", |k| k.len() <= MAX_KEY)
    }

    fn blob() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..256),
            1 => proptest::collection::vec(any::<u8>(), 0..70_000),
        ]
    }

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (key(), any::<bool>(), blob()).prop_map(|(key, has_fd, blob)| Frame::Put {
                key,
                has_fd,
                blob
            }),
            key().prop_map(|key| Frame::Remove { key }),
            Just(Frame::List),
            Just(Frame::Ok),
            (key(), blob()).prop_map(|(key, blob)| Frame::Entry { key, blob }),
            Just(Frame::End),
            "(?s).{0,200}".prop_map(|message| Frame::Err { message }),
        ]
    }

    /// The bytes `send` writes for `frame` (no fd).
    fn bytes_of(frame: &Frame) -> Vec<u8> {
        let (a, mut b) = UnixStream::pair().unwrap();
        let sender = {
            let frame = frame.clone();
            std::thread::spawn(move || encode(&a, &frame, None))
        };
        let mut bytes = Vec::new();
        b.read_to_end(&mut bytes).unwrap();
        sender.join().unwrap().unwrap();
        bytes
    }

    /// Decodes `bytes` written by a peer that then closes.
    fn decode_bytes(bytes: &[u8]) -> io::Result<Option<(Frame, bool)>> {
        let (mut a, b) = UnixStream::pair().unwrap();
        let bytes = bytes.to_vec();
        let writer = std::thread::spawn(move || {
            // The reader may stop early (an error); a broken pipe then is fine.
            let _ = a.write_all(&bytes);
        });
        let decoded = decode(&b);
        drop(b);
        writer.join().unwrap();
        decoded
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Every frame of the table, encoded then decoded, is itself, its
        /// fd included; the next frame on the stream is read after it.
        #[test]
        fn any_frame_round_trips(frames in proptest::collection::vec(frame(), 1..4)) {
            let (a, b) = UnixStream::pair().unwrap();
            let file = std::fs::File::open("/dev/null").unwrap();
            let sender = {
                let frames = frames.clone();
                std::thread::spawn(move || -> io::Result<()> {
                    for frame in &frames {
                        encode(&a, frame, Some(file.as_fd()))?;
                    }
                    Ok(())
                })
            };
            for frame in &frames {
                let (decoded, with_fd) = decode(&b).unwrap().expect("a frame");
                prop_assert_eq!(&decoded, frame);
                prop_assert_eq!(with_fd, frame.carries_fd());
            }
            sender.join().unwrap().unwrap();
            prop_assert!(decode(&b).unwrap().is_none(), "nothing after the frames");
        }

        /// A frame cut anywhere is refused (a cut before its first byte is
        /// a closed connection, not a frame).
        #[test]
        fn every_truncation_is_refused(frame in frame(), cut in any::<prop::sample::Index>()) {
            let bytes = bytes_of(&frame);
            let cut = cut.index(bytes.len());
            match decode_bytes(&bytes[..cut]) {
                Err(_) => {}
                Ok(None) => prop_assert_eq!(cut, 0),
                Ok(Some(decoded)) => {
                    return Err(TestCaseError::fail(format!(
                        "{cut} of {} bytes decoded as {decoded:?}",
                        bytes.len()
                    )));
                }
            }
        }

        /// A bit flipped anywhere gives an error or another well-formed
        /// frame, never a panic or a read past the frame; a flip in the
        /// length prefix is always refused.
        #[test]
        fn a_flipped_bit_is_refused_cleanly(frame in frame(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = bytes_of(&frame);
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
            let decoded = decode_bytes(&bytes);
            if at < 4 {
                prop_assert!(decoded.is_err(), "length flipped at byte {at}: {decoded:?}");
            }
        }
    }

    #[test]
    fn unknown_ops_and_oversized_frames_are_refused() {
        let mut unknown = 1u32.to_le_bytes().to_vec();
        unknown.push(0x42);
        assert!(decode_bytes(&unknown).is_err());
        let mut huge = u32::try_from(MAX_FRAME + 1).unwrap().to_le_bytes().to_vec();
        huge.push(PUT);
        let err = decode_bytes(&huge).unwrap_err();
        assert!(err.to_string().contains("over the 64 MiB limit"), "{err}");
        let empty = 0u32.to_le_bytes();
        assert!(decode_bytes(&empty).is_err());
    }
}
