//! HTTP/1.1 request framing, followed alongside hyper: which bytes of a connection are a
//! request's head and which its body.
//!
//! Two things need it. A request that carries both `Content-Length` and `Transfer-Encoding`
//! is framed by hyper by the encoding (RFC 9112 §6.1), and hyper does not tell the service
//! that a length was there; a proxy in front of the service may have framed the same bytes by
//! the length, and the difference is how requests are smuggled past it. Such a request is
//! refused with 400. And the connection's timeouts ([`crate::conn`]) need to know when a
//! request's first byte arrived and when its last one did.
//!
//! The reader follows the same rules as hyper (the same head parser, `httparse`; the same
//! length and chunk rules). On bytes it cannot frame (which hyper refuses as well, closing the
//! connection) it stops following the connection rather than guess.

/// The largest request head accepted. hyper is given the same limit, so that both refuse the
/// same heads.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a head (hyper's default).
const MAX_HEADERS: usize = 100;
/// The longest chunk-size or trailer line followed.
const MAX_LINE: usize = 4 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between requests, or inside a head (held in `buf` so far).
    Head,
    /// A body of known length: bytes left.
    Body(u64),
    /// A chunk-size line (held in `buf` so far).
    ChunkSize,
    /// Chunk data: bytes left.
    ChunkData(u64),
    /// The CRLF after chunk data: bytes of it seen.
    ChunkEnd(u8),
    /// Trailer lines after the last chunk, until an empty one (the current one in `buf`).
    Trailers,
    /// Framing lost: nothing more is followed on this connection.
    Off,
}

/// The framing of one connection's requests so far.
#[derive(Debug)]
pub(crate) struct Framing {
    state: State,
    buf: Vec<u8>,
    /// Bytes of trailers seen for the current body.
    trailer_bytes: usize,
    /// Requests whose first byte has arrived.
    pub(crate) started: u64,
    /// Requests read whole, head and body.
    pub(crate) complete: u64,
    /// The first request (counting from 1) that had both `Content-Length` and
    /// `Transfer-Encoding`.
    pub(crate) conflict: Option<u64>,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            state: State::Head,
            buf: Vec::new(),
            trailer_bytes: 0,
            started: 0,
            complete: 0,
            conflict: None,
        }
    }
}

/// Where a head ends in `s` (the index after its empty line), if it does.
fn head_end(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = s
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
    {
        let lf = i + p;
        match (s.get(lf + 1), s.get(lf + 2)) {
            (Some(b'\n'), _) => return Some(lf + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(lf + 3),
            _ => i = lf + 1,
        }
    }
    None
}

/// A `Content-Length` value as hyper reads it: ASCII digits only.
fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Whether a `Transfer-Encoding` value ends with `chunked` (as hyper decides).
fn ends_chunked(v: &[u8]) -> bool {
    v.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The size on a chunk-size line (without its line ending): hex digits, then optional
/// whitespace and extensions.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = &line[digits..];
    if !rest.is_empty() && !matches!(rest[0], b';' | b' ' | b'\t') {
        return None;
    }
    std::str::from_utf8(&line[..digits])
        .ok()
        .and_then(|h| u64::from_str_radix(h, 16).ok())
}

/// Takes a line from `bytes` into `buf`: the rest of `bytes` once the line is whole (its
/// `\n` included), or `None` when more is needed.
fn take_line<'a>(buf: &mut Vec<u8>, bytes: &'a [u8]) -> Option<&'a [u8]> {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(p) => {
            buf.extend_from_slice(&bytes[..=p]);
            Some(&bytes[p + 1..])
        }
        None => {
            buf.extend_from_slice(bytes);
            None
        }
    }
}

/// A line without its ending (`\r\n` or `\n`).
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Framing {
    /// Follows the bytes read next on the connection.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            bytes = match self.state {
                State::Head => self.head(bytes),
                State::Body(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    let left = left - n as u64;
                    if left == 0 {
                        self.finish();
                    } else {
                        self.state = State::Body(left);
                    }
                    &bytes[n..]
                }
                State::ChunkSize => match take_line(&mut self.buf, bytes) {
                    Some(rest) => {
                        match chunk_size(trim_eol(&self.buf)) {
                            Some(0) => self.state = State::Trailers,
                            Some(n) => self.state = State::ChunkData(n),
                            None => return self.off(),
                        }
                        self.buf.clear();
                        rest
                    }
                    None if self.buf.len() > MAX_LINE => return self.off(),
                    None => return,
                },
                State::ChunkData(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd(0)
                    } else {
                        State::ChunkData(left)
                    };
                    &bytes[n..]
                }
                State::ChunkEnd(seen) => {
                    let want = if seen == 0 { b'\r' } else { b'\n' };
                    if bytes[0] != want {
                        return self.off();
                    }
                    self.state = if seen == 0 {
                        State::ChunkEnd(1)
                    } else {
                        State::ChunkSize
                    };
                    &bytes[1..]
                }
                State::Trailers => match take_line(&mut self.buf, bytes) {
                    Some(rest) => {
                        if trim_eol(&self.buf).is_empty() {
                            self.finish();
                        } else {
                            self.trailer_bytes += self.buf.len();
                            if self.trailer_bytes > MAX_HEAD {
                                return self.off();
                            }
                        }
                        self.buf.clear();
                        rest
                    }
                    None if self.buf.len() > MAX_LINE => return self.off(),
                    None => return,
                },
                State::Off => return,
            };
        }
    }

    /// Bytes of a head (or of the empty lines that may precede one).
    fn head<'a>(&mut self, mut bytes: &'a [u8]) -> &'a [u8] {
        if self.buf.is_empty() {
            // Empty lines before a request line are skipped, as httparse does.
            let blank = bytes
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            bytes = &bytes[blank..];
            if bytes.is_empty() {
                return bytes;
            }
            self.started += 1;
        }
        let had = self.buf.len();
        // The empty line that ends the head may begin up to two bytes before this read.
        let from = had.saturating_sub(2);
        self.buf.extend_from_slice(bytes);
        let Some(end) = head_end(&self.buf[from..]).map(|e| e + from) else {
            if self.buf.len() > MAX_HEAD {
                self.off();
            }
            return &[];
        };
        self.buf.truncate(end);
        let rest = &bytes[end - had..];
        if end > MAX_HEAD {
            self.off();
            return &[];
        }
        self.parse_head();
        self.buf.clear();
        rest
    }

    /// Reads the framing of the head in `buf`.
    fn parse_head(&mut self) {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut fields);
        match req.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) if n == self.buf.len() => {}
            _ => return self.off(),
        }
        let http_11 = req.version == Some(1);
        let (mut te, mut chunked, mut length, mut has_length) = (false, false, None, false);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                chunked = ends_chunked(h.value);
            } else if h.name.eq_ignore_ascii_case("content-length") {
                has_length = true;
                match (content_length(h.value), length) {
                    (None, _) => return self.off(),
                    (Some(n), Some(m)) if n != m => return self.off(),
                    (n, _) => length = n,
                }
            }
        }
        if te && has_length {
            // Refused with 400 and the connection closed: nothing after it is followed.
            self.conflict.get_or_insert(self.started);
            self.complete += 1;
            return self.off();
        }
        if te {
            if !http_11 || !chunked {
                return self.off();
            }
            self.state = State::ChunkSize;
        } else {
            match length {
                Some(n) if n > 0 => self.state = State::Body(n),
                _ => self.finish(),
            }
        }
    }

    /// A request read whole.
    fn finish(&mut self) {
        self.complete += 1;
        self.trailer_bytes = 0;
        self.state = State::Head;
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.buf = Vec::new();
    }

    /// Whether the framing is still followed.
    #[cfg(test)]
    fn following(&self) -> bool {
        self.state != State::Off
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes.
    fn fed(input: &[u8], step: usize) -> Framing {
        let mut f = Framing::default();
        for piece in input.chunks(step) {
            f.feed(piece);
        }
        f
    }

    fn every_split(input: &[u8], check: impl Fn(&Framing)) {
        for step in [1, 2, 3, 7, 64, input.len()] {
            check(&fed(input, step));
        }
    }

    #[test]
    fn requests_are_counted_as_they_start_and_end() {
        let get = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
        every_split(get, |f| {
            assert_eq!((f.started, f.complete, f.conflict), (1, 1, None));
            assert!(f.following());
        });
        let mut f = Framing::default();
        f.feed(b"POST /v1/check HTTP/1.1\r\ncontent-length: 5\r\n\r\nab");
        assert_eq!((f.started, f.complete), (1, 0), "the body is not whole yet");
        f.feed(b"cde");
        assert_eq!((f.started, f.complete), (1, 1));
        f.feed(b"\r\n");
        assert_eq!(f.started, 1, "empty lines between requests start nothing");
        f.feed(b"G");
        assert_eq!((f.started, f.complete), (2, 1));
    }

    #[test]
    fn pipelined_requests_with_bodies_are_told_apart() {
        let three = b"POST /a HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET POST /b HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
        every_split(three, |f| {
            assert_eq!((f.started, f.complete, f.conflict), (3, 3, None));
            assert!(f.following());
        });
    }

    #[test]
    fn a_request_with_both_length_and_encoding_is_found() {
        for (a, b) in [
            ("Content-Length: 3", "Transfer-Encoding: chunked"),
            ("transfer-encoding: chunked", "content-length: 3"),
        ] {
            let input = format!(
                "GET / HTTP/1.1\r\n\r\nPOST /v1/check HTTP/1.1\r\n{a}\r\n{b}\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            );
            every_split(input.as_bytes(), |f| {
                assert_eq!(f.conflict, Some(2), "{input}");
                assert_eq!(f.started, f.complete, "not waiting for its body");
                assert!(!f.following());
            });
        }
    }

    #[test]
    fn framing_hyper_refuses_is_not_followed() {
        for bad in [
            &b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\ncontent-length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n1\r\naXY",
            b"NOT A REQUEST\r\n\r\n",
        ] {
            let f = fed(bad, 1);
            assert!(!f.following(), "{}", String::from_utf8_lossy(bad));
            assert_eq!(f.conflict, None);
        }
        let mut huge = b"GET / HTTP/1.1\r\nx: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        assert!(!fed(&huge, 4096).following());
    }
}
