//! Any `:authority` on the Unix socket.
//!
//! gRPC clients disagree on the HTTP/2 `:authority` of a Unix socket:
//! gRPC-Go (kubelet, csi-sanity) sends `localhost`, gRPC C-core (Python,
//! C++, Ruby) sends the socket path percent-encoded
//! (`tmp%2Fcsi%2Fcsi.sock`), grpc-java the path itself (`/tmp/csi.sock`).
//! The HTTP/2 server under tonic (h2) takes `:authority` for the authority
//! of a URI and resets every stream whose value is not one (`malformed
//! headers: malformed authority`), with no option to accept it. On a Unix
//! socket the authority names nothing, so [`AnyAuthority`] sits between
//! the socket and h2: it passes every byte through, except the header
//! blocks a client sends, which it decodes (HPACK, with the client's own
//! dynamic table), gives `:authority: localhost` where the value is not a
//! URI authority, and encodes again for h2 (with a table of its own).
//! What the server sends goes out unchanged.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's
/// least value): re-encoded blocks are cut to it.
const MAX_FRAME: usize = 16_384;
/// The largest header block taken (h2 refuses far less anyway).
const MAX_BLOCK: usize = 1 << 20;
/// HPACK's dynamic table size until SETTINGS change it; h2 keeps it.
const TABLE_SIZE: usize = 4096;
/// The authority given to a client whose own is no URI authority.
const LOCALHOST: &[u8] = b"localhost";

/// A connection whose client header blocks get a valid `:authority`.
pub struct AnyAuthority<IO> {
    io: IO,
    /// Bytes read from the client, not yet handled.
    input: Vec<u8>,
    /// Bytes for h2, not yet read by it.
    output: Vec<u8>,
    state: State,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    eof: bool,
}

impl<IO> std::fmt::Debug for AnyAuthority<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnyAuthority")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum State {
    Preface,
    /// Between frames.
    Frame,
    /// Copying this many more payload bytes unchanged.
    Copy(usize),
    /// A header block in pieces: the stream, the flags of its HEADERS
    /// frame, and the fragments so far.
    Block {
        stream: u32,
        flags: u8,
        block: Vec<u8>,
    },
    /// Not HTTP/2 with prior knowledge: everything unchanged.
    Passthrough,
}

impl<IO> AnyAuthority<IO> {
    pub fn new(io: IO) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        let mut encoder = loona_hpack::Encoder::new();
        encoder.set_max_table_size(TABLE_SIZE);
        Self {
            io,
            input: Vec::new(),
            output: Vec::new(),
            state: State::Preface,
            decoder,
            encoder,
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Moves what `input` allows from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match &mut self.state {
                State::Passthrough => {
                    self.output.append(&mut self.input);
                    return Ok(());
                }
                State::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.state = State::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.output.extend(self.input.drain(..PREFACE.len()));
                    self.state = State::Frame;
                }
                State::Copy(left) => {
                    let n = (*left).min(self.input.len());
                    self.output.extend(self.input.drain(..n));
                    *left -= n;
                    if *left > 0 {
                        return Ok(());
                    }
                    self.state = State::Frame;
                }
                State::Frame | State::Block { .. } => {
                    if self.input.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len = usize::from(self.input[0]) << 16
                        | usize::from(self.input[1]) << 8
                        | usize::from(self.input[2]);
                    let kind = self.input[3];
                    let flags = self.input[4];
                    let stream = u32::from_be_bytes([
                        self.input[5],
                        self.input[6],
                        self.input[7],
                        self.input[8],
                    ]) & 0x7fff_ffff;
                    let header_block = kind == HEADERS
                        || (kind == CONTINUATION && matches!(self.state, State::Block { .. }));
                    if !header_block {
                        if matches!(self.state, State::Block { .. }) {
                            return Err(invalid(
                                "a frame other than CONTINUATION inside a header block",
                            ));
                        }
                        self.output.extend(self.input.drain(..FRAME_HEADER));
                        self.state = State::Copy(len);
                        continue;
                    }
                    if self.input.len() < FRAME_HEADER + len {
                        return Ok(());
                    }
                    let frame: Vec<u8> = self.input.drain(..FRAME_HEADER + len).collect();
                    let fragment = fragment(kind, flags, &frame[FRAME_HEADER..])?;
                    let (stream, first_flags, mut block) =
                        match std::mem::replace(&mut self.state, State::Frame) {
                            State::Block {
                                stream: s,
                                flags: f,
                                block,
                            } if s == stream => (s, f, block),
                            State::Block { .. } => {
                                return Err(invalid("a CONTINUATION of another stream"));
                            }
                            _ => (stream, flags, Vec::new()),
                        };
                    block.extend_from_slice(fragment);
                    if block.len() > MAX_BLOCK {
                        return Err(invalid("a header block over 1 MiB"));
                    }
                    if flags & END_HEADERS == 0 {
                        self.state = State::Block {
                            stream,
                            flags: first_flags,
                            block,
                        };
                        continue;
                    }
                    let encoded = self.rewrite(&block)?;
                    write_headers(&mut self.output, stream, first_flags & END_STREAM, &encoded);
                }
            }
        }
    }

    /// Decodes a client's header block and encodes it again for h2, with a
    /// URI authority in `:authority`.
    fn rewrite(&mut self, block: &[u8]) -> io::Result<Vec<u8>> {
        let mut headers = self
            .decoder
            .decode(block)
            .map_err(|e| invalid(&format!("HPACK: {e}")))?;
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" && !uri_authority(value) {
                *value = LOCALHOST.to_vec();
            }
        }
        Ok(self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))))
    }
}

/// Whether `value` is what h2 takes for a URI authority.
fn uri_authority(value: &[u8]) -> bool {
    !value.is_empty() && http::uri::Authority::try_from(value).is_ok()
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 from the client: {what}"),
    )
}

/// The header block fragment of a HEADERS or CONTINUATION payload (padding
/// and priority removed).
fn fragment(kind: u8, flags: u8, payload: &[u8]) -> io::Result<&[u8]> {
    if kind == CONTINUATION {
        return Ok(payload);
    }
    let mut start = 0;
    let mut end = payload.len();
    if flags & PADDED != 0 {
        let pad = usize::from(
            *payload
                .first()
                .ok_or_else(|| invalid("empty padded HEADERS"))?,
        );
        start = 1;
        end = end
            .checked_sub(pad)
            .filter(|e| *e >= start)
            .ok_or_else(|| invalid("padding longer than the HEADERS frame"))?;
    }
    if flags & PRIORITY != 0 {
        start += 5;
        if start > end {
            return Err(invalid("HEADERS too short for its priority"));
        }
    }
    Ok(&payload[start..end])
}

/// A HEADERS frame with `block` (and CONTINUATIONs if it is longer than a
/// frame), END_STREAM as the client sent it.
fn write_headers(out: &mut Vec<u8>, stream: u32, end_stream: u8, block: &[u8]) {
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let mut kind = HEADERS;
    let mut flags = end_stream;
    if chunks.peek().is_none() {
        frame_header(out, 0, HEADERS, end_stream | END_HEADERS, stream);
        return;
    }
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_none() {
            flags |= END_HEADERS;
        }
        frame_header(out, chunk.len(), kind, flags, stream);
        out.extend_from_slice(chunk);
        kind = CONTINUATION;
        flags = 0;
    }
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

impl<IO: AsyncRead + Unpin> AsyncRead for AnyAuthority<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
                // A frame cut short stays unread: h2 sees the end.
                continue;
            }
            this.input.extend_from_slice(read.filled());
            this.process()?;
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AnyAuthority<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for AnyAuthority<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's HEADERS frame for `headers`, encoded by `encoder`.
    fn headers_frame(
        encoder: &mut loona_hpack::Encoder<'static>,
        headers: &[(&str, &str)],
        flags: u8,
    ) -> Vec<u8> {
        let block = encoder.encode(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        let mut out = Vec::new();
        frame_header(&mut out, block.len(), HEADERS, flags | END_HEADERS, 1);
        out.extend_from_slice(&block);
        out
    }

    /// What h2 would get for `input` fed in pieces of `step` bytes.
    fn through(input: &[u8], step: usize) -> Vec<u8> {
        let mut conn = AnyAuthority::new(());
        for piece in input.chunks(step) {
            conn.input.extend_from_slice(piece);
            conn.process().unwrap();
        }
        conn.output
    }

    /// The header lists of every HEADERS block in `output` (after the
    /// preface), decoded as h2 would.
    fn decoded(output: &[u8]) -> Vec<Vec<(String, String)>> {
        let mut decoder = loona_hpack::Decoder::new();
        let mut rest = &output[PREFACE.len()..];
        let mut out = Vec::new();
        while rest.len() >= FRAME_HEADER {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
            if rest[3] == HEADERS {
                out.push(
                    decoder
                        .decode(payload)
                        .unwrap()
                        .into_iter()
                        .map(|(n, v)| {
                            (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
                        })
                        .collect(),
                );
            }
            rest = &rest[FRAME_HEADER + len..];
        }
        out
    }

    #[test]
    fn a_path_authority_becomes_localhost_and_the_rest_is_unchanged() {
        let mut client = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        // SETTINGS (empty), then two requests: the second reuses the
        // client's dynamic table entries of the first.
        frame_header(&mut input, 0, 0x4, 0, 0);
        let request = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/csi.v1.Identity/GetPluginInfo"),
            (":authority", "tmp%2Fcsi%2Fnode%2Fcsi.sock"),
            ("te", "trailers"),
            ("content-type", "application/grpc"),
        ];
        input.extend(headers_frame(&mut client, &request, 0));
        frame_header(&mut input, 5, 0x0, END_STREAM, 1);
        input.extend_from_slice(&[0, 0, 0, 0, 0]);
        input.extend(headers_frame(&mut client, &request, END_STREAM));
        for step in [1, 7, 4096] {
            let output = through(&input, step);
            assert_eq!(
                &output[..PREFACE.len() + FRAME_HEADER],
                &input[..PREFACE.len() + FRAME_HEADER]
            );
            let blocks = decoded(&output);
            assert_eq!(blocks.len(), 2, "step {step}");
            for block in &blocks {
                let authority = block.iter().find(|(n, _)| n == ":authority").unwrap();
                assert_eq!(authority.1, "localhost");
                assert!(block.contains(&(":path".into(), "/csi.v1.Identity/GetPluginInfo".into())));
                assert_eq!(block.len(), request.len());
            }
        }
        // A valid authority is kept.
        let mut client = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(
            &mut client,
            &[(":authority", "localhost:1234")],
            0,
        ));
        assert_eq!(decoded(&through(&input, 3))[0][0].1, "localhost:1234");
    }

    #[test]
    fn not_http2_passes_unchanged() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(through(input, 5), input);
    }
}
