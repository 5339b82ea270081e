//! A minimal HTTP/1.1 client over one keep-alive connection: it writes a request prepared in
//! advance and reads the answer (content-length or chunked), noting when the first byte of the
//! body arrived. Hand-written so that the load generator costs as little CPU as possible and
//! measures the server, not a client library.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One connection.
pub(crate) struct Conn {
    stream: BufReader<TcpStream>,
    line: Vec<u8>,
}

/// What one call came to.
pub(crate) struct Answer {
    /// The status code.
    pub(crate) status: u16,
    /// When the first byte of the body arrived (the head's end for an empty body).
    pub(crate) first_byte: Instant,
    /// Whether the server will close the connection.
    pub(crate) close: bool,
}

impl Conn {
    /// Connects to `addr` (no Nagle delay).
    pub(crate) async fn open(addr: SocketAddr) -> io::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::with_capacity(16 * 1024, tcp),
            line: Vec::with_capacity(256),
        })
    }

    /// Sends `request` (a whole HTTP/1.1 request) and reads the answer.
    pub(crate) async fn call(&mut self, request: &[u8]) -> io::Result<Answer> {
        self.stream.get_mut().write_all(request).await?;
        self.read_head_and_body().await
    }

    /// Sends `request` and reads only up to the first byte of the body: the connection then
    /// stays in the middle of the answer (a stream held open; see [`drain`](Self::drain)).
    pub(crate) async fn start(&mut self, request: &[u8]) -> io::Result<(u16, Instant)> {
        self.stream.get_mut().write_all(request).await?;
        let (status, _, _) = self.read_head().await?;
        self.stream.fill_buf().await?;
        Ok((status, Instant::now()))
    }

    /// Reads and drops whatever arrives until the server closes the connection.
    pub(crate) async fn drain(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        while self.stream.read(&mut buf).await? > 0 {}
        Ok(())
    }

    async fn read_line(&mut self) -> io::Result<&[u8]> {
        self.line.clear();
        let n = self.stream.read_until(b'\n', &mut self.line).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(trim_crlf(&self.line))
    }

    /// The status, the body's framing (content length, or `None` for chunked) and whether the
    /// server closes the connection afterwards.
    async fn read_head(&mut self) -> io::Result<(u16, Option<usize>, bool)> {
        let status_line = self.read_line().await?;
        let status = status_line
            .split(|b| *b == b' ')
            .nth(1)
            .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
            .ok_or_else(|| io::Error::other("a bad status line"))?;
        let (mut length, mut chunked, mut close) = (Some(0), false, false);
        loop {
            let line = self.read_line().await?;
            if line.is_empty() {
                break;
            }
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"content-length") {
                length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = value.eq_ignore_ascii_case(b"chunked");
            } else if name.eq_ignore_ascii_case(b"connection") {
                close = value.eq_ignore_ascii_case(b"close");
            }
        }
        Ok((status, if chunked { None } else { length }, close))
    }

    async fn read_head_and_body(&mut self) -> io::Result<Answer> {
        let (status, length, close) = self.read_head().await?;
        let mut first_byte = Instant::now();
        match length {
            Some(n) => {
                if n > 0 {
                    self.stream.fill_buf().await?;
                    first_byte = Instant::now();
                }
                self.skip(n).await?;
            }
            None => {
                let mut first = true;
                loop {
                    let size_line = self.read_line().await?;
                    let hex = size_line.split(|b| *b == b';').next().unwrap_or(b"");
                    let size = std::str::from_utf8(hex)
                        .ok()
                        .and_then(|h| usize::from_str_radix(h.trim(), 16).ok())
                        .ok_or_else(|| io::Error::other("a bad chunk size"))?;
                    if first {
                        first_byte = Instant::now();
                        first = false;
                    }
                    if size == 0 {
                        // Trailers (none expected), then the empty line.
                        while !self.read_line().await?.is_empty() {}
                        break;
                    }
                    self.skip(size + 2).await?;
                }
            }
        }
        Ok(Answer {
            status,
            first_byte,
            close,
        })
    }

    async fn skip(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            let buf = self.stream.fill_buf().await?;
            if buf.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let take = buf.len().min(n);
            self.stream.consume(take);
            n -= take;
        }
        Ok(())
    }
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// A whole `POST` request with a JSON body and extra header lines (each `name: value`).
pub(crate) fn post(host: &str, path: &str, headers: &[String], body: &str) -> Vec<u8> {
    let mut r = format!("POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len());
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}
