//! A minimal, blocking RESP2 client with timeouts, used for readiness and health probes.
//!
//! Probes go through this instead of `redis-cli` because it is quick (no process per probe) and
//! because every read and write is bounded: a paused (SIGSTOPped) server makes a probe fail after
//! its timeout instead of hanging the caller.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Int(i64),
    /// `$n` bulk string, `None` for the nil bulk.
    Bulk(Option<Vec<u8>>),
    /// `*n` array, `None` for the nil array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text: simple and bulk strings (nil is empty), integers; an error reply becomes
    /// an `io::Error`.
    pub(crate) fn into_text(self) -> io::Result<String> {
        match self {
            Reply::Simple(s) => Ok(s),
            Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Reply::Bulk(None) => Ok(String::new()),
            Reply::Int(i) => Ok(i.to_string()),
            Reply::Error(e) => Err(io::Error::other(format!("redis error reply: {e}"))),
            Reply::Array(_) => Err(invalid("expected a string reply, got an array")),
        }
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Sends one command to `127.0.0.1:port` on a fresh connection and reads its reply, each step
/// bounded by `timeout`.
pub(crate) fn command(port: u16, args: &[&str], timeout: Duration) -> io::Result<Reply> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    (&stream).write_all(&request)?;
    let mut reader = BufReader::new(&stream);
    read_reply(&mut reader)
}

/// Like [`command`], returning the reply as text (see [`Reply::into_text`]).
pub(crate) fn text(port: u16, args: &[&str], timeout: Duration) -> io::Result<String> {
    command(port, args, timeout)?.into_text()
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a reply",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(invalid("reply line not terminated by CRLF"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| invalid("reply line is not UTF-8"))
}

fn parse_len(s: &str) -> io::Result<i64> {
    s.parse().map_err(|_| invalid("bad length in reply"))
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(reader)?;
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| invalid("empty reply line"))?;
    match kind {
        "+" => Ok(Reply::Simple(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => Ok(Reply::Int(parse_len(rest)?)),
        "$" => {
            let len = parse_len(rest)?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let len = usize::try_from(len).map_err(|_| invalid("bulk too long"))?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body)?;
            body.truncate(len);
            Ok(Reply::Bulk(Some(body)))
        }
        "*" => {
            let len = parse_len(rest)?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            let items = (0..len)
                .map(|_| read_reply(reader))
                .collect::<io::Result<Vec<_>>>()?;
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(invalid("unknown reply type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Reply {
        read_reply(&mut BufReader::new(bytes)).unwrap()
    }

    #[test]
    fn parses_every_reply_type() {
        assert_eq!(parse(b"+PONG\r\n"), Reply::Simple("PONG".into()));
        assert_eq!(parse(b"-ERR no\r\n"), Reply::Error("ERR no".into()));
        assert_eq!(parse(b":-3\r\n"), Reply::Int(-3));
        assert_eq!(parse(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(
            parse(b"$4\r\na\r\nb\r\n"),
            Reply::Bulk(Some(b"a\r\nb".to_vec()))
        );
        assert_eq!(
            parse(b"*2\r\n:1\r\n$1\r\nx\r\n"),
            Reply::Array(Some(vec![Reply::Int(1), Reply::Bulk(Some(b"x".to_vec()))]))
        );
        assert!(read_reply(&mut BufReader::new(&b"$5\r\nab"[..])).is_err());
    }
}
