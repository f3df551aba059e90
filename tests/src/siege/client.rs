//! A small HTTP/1.1 client over raw sockets, for the siege: any method
//! token, any bytes in the target, keep-alive, answers of any size read
//! without holding them (only their head and tail are kept), and a client
//! that hangs up in the middle of an answer.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How much of an answer's body is kept at each end.
const KEEP: usize = 16 << 10;

/// An answer: its status, headers, length, and the first and last
/// [`KEEP`] bytes of its body.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
    /// The server said it closes the connection after this answer.
    pub closes: bool,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body when it was small enough to keep whole.
    pub fn text(&self) -> Option<String> {
        (self.body_len == self.head.len()).then(|| String::from_utf8_lossy(&self.head).into_owned())
    }

    /// `next_cursor` of a `GET /notifications` page (at the end of its body).
    pub fn page_cursor(&self) -> Option<String> {
        let tail = String::from_utf8_lossy(&self.tail);
        let at = tail.rfind("\"next_cursor\":\"")?;
        let rest = &tail[at + "\"next_cursor\":\"".len()..];
        Some(rest[..rest.find('"')?].to_owned())
    }
}

/// A request as bytes: `method target` with `headers` and `body`.
pub fn request_bytes(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8], close: bool) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: siege\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A keep-alive connection.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn { addr, stream: None }
    }

    /// Sends one request and reads its answer whole (keeping its head and
    /// tail), within `timeout`; reconnects when the server closed.
    pub async fn send(&mut self, request: &[u8], timeout: Duration) -> std::io::Result<Answer> {
        self.send_keeping(request, timeout, KEEP).await
    }

    /// [`Conn::send`], keeping the first `keep` bytes of the body (all of a
    /// body no longer than that: see [`Answer::text`]).
    pub async fn send_keeping(&mut self, request: &[u8], timeout: Duration, keep: usize) -> std::io::Result<Answer> {
        match tokio::time::timeout(timeout, self.send_inner(request, keep)).await {
            Ok(r) => {
                if r.is_err() {
                    self.stream = None;
                }
                r
            }
            Err(_) => {
                self.stream = None;
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))
            }
        }
    }

    async fn send_inner(&mut self, request: &[u8], keep: usize) -> std::io::Result<Answer> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(BufReader::with_capacity(64 << 10, s));
        }
        let Some(stream) = self.stream.as_mut() else { unreachable!() };
        stream.get_mut().write_all(request).await?;
        let answer = read_answer(stream, usize::MAX, keep).await?;
        if answer.closes {
            self.stream = None;
        }
        Ok(answer)
    }
}

/// One request on a connection of its own.
pub async fn once(addr: SocketAddr, request: &[u8], timeout: Duration) -> std::io::Result<Answer> {
    Conn::new(addr).send(request, timeout).await
}

/// Sends a request, reads the status line, the headers and `keep` bytes of
/// the body, then hangs up. Returns the status, if one came within `timeout`.
pub async fn hang_up_after(addr: SocketAddr, request: &[u8], keep: usize, timeout: Duration) -> Option<u16> {
    let go = async {
        let s = TcpStream::connect(addr).await.ok()?;
        let mut stream = BufReader::new(s);
        stream.get_mut().write_all(request).await.ok()?;
        let answer = read_answer(&mut stream, keep, KEEP).await.ok()?;
        Some(answer.status)
    };
    tokio::time::timeout(timeout, go).await.ok().flatten()
}

/// Reads an answer, keeping the first `keep` bytes of its body; stops
/// reading the body after `limit` bytes (and then the connection cannot be
/// used again).
async fn read_answer(stream: &mut BufReader<TcpStream>, limit: usize, keep: usize) -> std::io::Result<Answer> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before answering"));
    }
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad(&line))?;
    let mut answer = Answer { status, ..Answer::default() };
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err(bad("closed in the headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            answer.headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    answer.closes = answer.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
    let chunked = answer.header("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let length: Option<usize> = answer.header("content-length").and_then(|l| l.parse().ok());
    let mut buf = vec![0u8; 64 << 10];
    let take = |answer: &mut Answer, bytes: &[u8]| {
        answer.body_len += bytes.len();
        if answer.head.len() < keep {
            let room = keep - answer.head.len();
            answer.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        answer.tail.extend_from_slice(bytes);
        if answer.tail.len() > 2 * KEEP {
            answer.tail.drain(..answer.tail.len() - KEEP);
        }
    };
    if chunked {
        loop {
            line.clear();
            stream.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    line.clear();
                    if stream.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut left = size;
            while left > 0 {
                let n = stream.read(&mut buf[..left.min(64 << 10)]).await?;
                if n == 0 {
                    return Err(bad("closed in a chunk"));
                }
                take(&mut answer, &buf[..n]);
                left -= n;
                if answer.body_len >= limit {
                    return Ok(answer);
                }
            }
            line.clear();
            stream.read_line(&mut line).await?;
        }
    } else if let Some(mut left) = length {
        while left > 0 {
            let n = stream.read(&mut buf[..left.min(64 << 10)]).await?;
            if n == 0 {
                return Err(bad("closed in the body"));
            }
            take(&mut answer, &buf[..n]);
            left -= n;
            if answer.body_len >= limit {
                return Ok(answer);
            }
        }
    } else if status >= 200 && status != 204 && status != 304 {
        // Until the server closes.
        answer.closes = true;
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            take(&mut answer, &buf[..n]);
            if answer.body_len >= limit {
                return Ok(answer);
            }
        }
    }
    if answer.tail.len() > KEEP {
        let cut = answer.tail.len() - KEEP;
        answer.tail.drain(..cut);
    }
    Ok(answer)
}
