//! Splitting a server-sent-events byte stream into whole events as the bytes arrive, so
//! that each event is relayed as soon as its last byte is in (and never later), and can be
//! read (or, for the usage chunk tollgate asked for, dropped) on the way.

use bytes::{Bytes, BytesMut};

/// Collects bytes and hands out complete events (each with its terminating blank line).
#[derive(Debug, Default)]
pub struct Framer {
    buf: BytesMut,
}

impl Framer {
    /// An empty framer.
    pub fn new() -> Self {
        Framer::default()
    }

    /// Adds bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, if one is in.
    pub fn next_event(&mut self) -> Option<Bytes> {
        let end = boundary(&self.buf)?;
        Some(self.buf.split_to(end).freeze())
    }

    /// Whatever is left (an event the stream ended in the middle of).
    pub fn rest(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

/// The end (exclusive) of the first event in `b`: after its blank line (`\n\n`, `\r\n\r\n`
/// or `\r\r`).
fn boundary(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'\n', b'\n') | (b'\r', b'\r') => return Some(i + 2),
            (b'\r', b'\n') if b.get(i + 2..i + 4) == Some(b"\r\n") => return Some(i + 4),
            _ => i += 1,
        }
    }
    None
}

/// An event's `event:` name and its `data:` lines joined with newlines.
pub fn parse_event(raw: &str) -> (Option<&str>, String) {
    let mut event = None;
    let mut data = String::new();
    let mut first = true;
    for line in raw.lines() {
        if let Some(rest) = line.strip_prefix("data:") {
            if !first {
                data.push('\n');
            }
            first = false;
            data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        } else if let Some(rest) = line.strip_prefix("event:") {
            event = Some(rest.strip_prefix(' ').unwrap_or(rest).trim_end());
        }
    }
    (event, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut f = Framer::new();
        f.push(b"data: {\"a\":1}\n\nda");
        assert_eq!(f.next_event().unwrap(), &b"data: {\"a\":1}\n\n"[..]);
        assert!(f.next_event().is_none());
        f.push(b"ta: 2\r\n\r\nevent: x\ndata: 3\n\n");
        assert_eq!(f.next_event().unwrap(), &b"data: 2\r\n\r\n"[..]);
        let e = f.next_event().unwrap();
        let s = std::str::from_utf8(&e).unwrap();
        assert_eq!(parse_event(s), (Some("x"), "3".to_owned()));
        f.push(b"data: tail");
        assert!(f.next_event().is_none());
        assert_eq!(f.rest().unwrap(), &b"data: tail"[..]);
    }
}
