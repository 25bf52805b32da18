//! HTTP/1.1 on a VU's own connection: one request at a time, no driver.
//!
//! Why not hyper's client connection here: for as long as it is open, a
//! hyper `http1` connection keeps a dispatch channel (a 32-slot block of
//! requests, about 8.7 KiB), an 8 KiB write buffer and a read buffer of at
//! least 8 KiB, and every request crosses that channel. A VU that sleeps
//! between requests, the common case of a load test, held all of it: about
//! 25 KiB of its 85 (docs/benchmarks.md, memory). Here a connection is only
//! its socket between requests; a request's buffers live while it is in
//! flight, and the VU's own task writes the request and reads the response.
//!
//! What it speaks is what a load generator's requests need (RFC 9112): one
//! request in flight per connection (no pipelining); a response body framed
//! by `Transfer-Encoding: chunked`, `Content-Length` or the end of the
//! connection; interim (1xx) responses skipped; no body after `HEAD`, 204 or
//! 304; and keep-alive unless either side says `Connection: close` (or the
//! server speaks HTTP/1.0 without `keep-alive`). A response that breaks the
//! framing is a `protocol` error and its connection is closed. HTTP/2 stays
//! with hyper (`super::http`).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Waker};

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::fields::Fields;

/// The longest response head (status line and headers) accepted.
const MAX_HEAD: usize = 64 << 10;
/// The most header fields one response head may have.
const MAX_HEADERS: usize = 128;
/// The most interim (1xx) responses before the final one.
const MAX_INTERIM: usize = 16;
/// The longest chunk-size line, and the most trailer bytes after the last
/// chunk.
const MAX_CHUNK_LINE: usize = 4 << 10;
const MAX_TRAILERS: usize = 64 << 10;
/// What a read asks for while a head is read, and at most while a body is.
const HEAD_READ: usize = 4 << 10;
const BODY_READ: usize = 64 << 10;
/// A body up to this size goes out in the same write as the head.
const COALESCE: usize = 16 << 10;

/// Why a request got no whole response.
#[derive(Debug)]
pub(crate) enum Error {
    /// The socket failed while sending.
    Send(io::Error),
    /// The socket failed while receiving.
    Receive(io::Error),
    /// The server closed the connection before the response was complete.
    Closed,
    /// The response breaks HTTP/1.1.
    Protocol(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Send(e) => write!(f, "cannot send the request: {e}"),
            Error::Receive(e) => write!(f, "cannot read the response: {e}"),
            Error::Closed => {
                f.write_str("the server closed the connection before the response was complete")
            }
            Error::Protocol(m) => write!(f, "invalid HTTP/1.1 response: {m}"),
        }
    }
}

/// A whole response.
pub(crate) struct Response {
    /// The status code.
    pub(crate) status: u16,
    /// The header fields, in the order they came (repeated names kept).
    pub(crate) headers: Fields,
    /// The body, at most `keep` bytes of it.
    pub(crate) body: Vec<u8>,
    /// When the request's last byte was written.
    pub(crate) sent: Instant,
    /// When the response's first byte was read.
    pub(crate) first_byte: Instant,
    /// Whether the connection may carry another request.
    pub(crate) reusable: bool,
}

/// A request, as [`exchange`] writes it.
pub(crate) struct Request<'a> {
    pub(crate) method: &'a Method,
    /// The request target: the path and query.
    pub(crate) target: &'a str,
    /// Every header field, `host` included.
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
}

impl Request<'_> {
    /// The head, and with it the body when that is small, into `out`
    /// (empty).
    fn encode(&self, out: &mut Vec<u8>) {
        let mut size = self.method.as_str().len() + self.target.len() + 64;
        for (name, value) in self.headers {
            size += name.as_str().len() + value.len() + 4;
        }
        let coalesce = self.body.len() <= COALESCE;
        if coalesce {
            size += self.body.len();
        }
        out.reserve(size);
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in self.headers {
            // The body's length is the body's; a scenario's own framing
            // headers would contradict it.
            if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !self.body.is_empty()
            || matches!(*self.method, Method::POST | Method::PUT | Method::PATCH)
        {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(self.body.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if coalesce {
            out.extend_from_slice(self.body);
        }
    }

    /// Whether the request itself asks to close the connection after it.
    fn closes(&self) -> bool {
        // A walk over the few fields a request has costs less than the
        // name's hash that a lookup takes.
        lists_token(
            self.headers
                .iter()
                .filter(|(name, _)| *name == CONNECTION)
                .map(|(_, v)| v.as_bytes()),
            "close",
        )
    }
}

/// Whether an idle connection was closed by the server (or sent bytes it
/// was not asked for), looked at without waiting: such a connection takes
/// no more requests.
pub(crate) fn idle_gone<S: AsyncRead + Unpin>(io: &mut S) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    // Pending: nothing to read, the connection is as it was left.
    Pin::new(io).poll_read(&mut cx, &mut buf).is_ready()
}

/// Writes `req` and reads its whole response, keeping at most `keep`
/// bytes of the body (none when `discard`). `on_head` runs once the
/// response's head has arrived.
pub(crate) async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    req: &Request<'_>,
    discard: bool,
    keep: usize,
    on_head: impl FnOnce(),
) -> Result<Response, Error> {
    let mut head = buffers::take();
    req.encode(&mut head);
    io.write_all(&head).await.map_err(Error::Send)?;
    if req.body.len() > COALESCE {
        io.write_all(req.body).await.map_err(Error::Send)?;
    }
    io.flush().await.map_err(Error::Send)?;
    buffers::give(head);
    let sent = Instant::now();

    let mut reader = Reader {
        io,
        buf: buffers::take(),
        pos: 0,
        first_byte: None,
    };
    let (status, version, headers) = reader.head().await?;
    on_head();
    let first_byte = reader.first_byte.unwrap_or_else(Instant::now);

    let no_body = *req.method == Method::HEAD || status == 204 || status == 304 || status == 101;
    let framing = if no_body {
        Framing::Length(0)
    } else {
        framing(&headers)?
    };
    let mut body = Body {
        data: Vec::new(),
        keep: if discard { 0 } else { keep },
    };
    match framing {
        Framing::Length(n) => {
            body.data.reserve(
                usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .min(body.keep)
                    .min(BODY_READ),
            );
            reader.copy(n, &mut body).await?;
        }
        Framing::Chunked => reader.chunked(&mut body).await?,
        Framing::UntilClose => reader.until_close(&mut body).await?,
    }
    let keep_alive = match version {
        1 => !has_token(&headers, "close"),
        _ => has_token(&headers, "keep-alive") && !has_token(&headers, "close"),
    };
    let reusable = keep_alive
        && status != 101
        && !req.closes()
        && !matches!(framing, Framing::UntilClose)
        && !(matches!(framing, Framing::Chunked) && headers.contains("content-length"))
        && reader.pos == reader.buf.len();
    Ok(Response {
        status,
        headers,
        body: body.data,
        sent,
        first_byte,
        reusable,
    })
}

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// The framing of a body from its head (RFC 9112, 6.3).
fn framing(headers: &Fields) -> Result<Framing, Error> {
    let mut codings = headers.get_all("transfer-encoding").peekable();
    if codings.peek().is_some() {
        let last = codings
            .filter_map(visible)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .last();
        return Ok(match last {
            Some(c) if c.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    let mut length = None;
    for value in headers.get_all("content-length") {
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            let n = decimal(part).ok_or_else(|| {
                Error::Protocol(format!(
                    "content-length {:?} is not a number",
                    String::from_utf8_lossy(value)
                ))
            })?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Protocol(
                    "content-length given twice, with different values".into(),
                ));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// The number `digits` writes in decimal: none if it is empty, has
/// anything but digits, or does not fit a u64.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

/// A header value as text, if it is visible ASCII (and tabs), as
/// `HeaderValue::to_str` has it.
fn visible(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Whether a `Connection` header field lists `token`.
fn has_token(headers: &Fields, token: &str) -> bool {
    lists_token(headers.get_all("connection"), token)
}

/// Whether one of `values`, lists of tokens, lists `token`.
fn lists_token<'a>(values: impl Iterator<Item = &'a [u8]>, token: &str) -> bool {
    values
        .filter_map(visible)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A response head at the start of `bytes`: its length, status, HTTP minor
/// version and header fields, or `None` while it is incomplete. Not async,
/// so that the array of parsed fields (4 KiB, left uninitialized) lives on
/// the stack of this call only, never in a request's future. The values
/// share one copy of the head: one allocation, however many fields.
fn parse_head(bytes: &[u8]) -> Result<Option<(usize, u16, u8, Fields)>, Error> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        bytes,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Protocol(format!(
                "more than {MAX_HEADERS} header fields"
            )));
        }
        Err(e) => return Err(Error::Protocol(e.to_string())),
    };
    // httparse checked every name (a token) and value (no control bytes
    // but tab) as `HeaderName` and `HeaderValue` would.
    let found = parsed.headers.iter().map(|f| (f.name.as_bytes(), f.value));
    let headers = Fields::within(bytes.get(..len).unwrap_or(bytes), found)
        .ok_or_else(|| Error::Protocol("a header field outside the head".into()))?;
    Ok(Some((
        len,
        parsed.code.unwrap_or(0),
        parsed.version.unwrap_or(1),
        headers,
    )))
}

/// The body being read: what is kept of it.
struct Body {
    data: Vec<u8>,
    keep: usize,
}

impl Body {
    fn take(&mut self, bytes: &[u8]) {
        let room = self.keep.saturating_sub(self.data.len());
        self.data.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// A response being read: the bytes read and not yet taken are
/// `buf[pos..]`.
struct Reader<'a, S> {
    io: &'a mut S,
    buf: Vec<u8>,
    pos: usize,
    first_byte: Option<Instant>,
}

impl<S> Drop for Reader<'_, S> {
    fn drop(&mut self) {
        buffers::give(std::mem::take(&mut self.buf));
    }
}

/// The buffers of requests' heads and of reads, kept by each runtime
/// thread between requests. A read buffer (4 KiB or more) is past what
/// the allocator keeps per thread, and its allocation and free took
/// about 300 instructions a request; a buffer from here takes a few.
///
/// Every buffer has room for a head's read from the start. A request's
/// head used to take a buffer with none and grow it to its size, and when
/// more requests were in flight than buffers kept (16 VUs or more), a read
/// then took that small buffer and grew it again, copying: 0.4 times a
/// request at 50 VUs, about 500 instructions a request. Up to 64 are kept,
/// enough for a request in flight on each of 64 VUs; at 4 KiB each, 256
/// KiB a thread.
mod buffers {
    use std::cell::RefCell;

    /// Buffers kept per thread, at most.
    const KEEP: usize = 64;
    /// The room every buffer has: a head's read.
    const ROOM: usize = super::HEAD_READ;
    /// A buffer that grew past this (a large body's reads) is freed.
    const LARGEST: usize = super::BODY_READ + super::HEAD_READ;

    thread_local! {
        static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty buffer with room for a head's read: a kept one if any.
    pub(super) fn take() -> Vec<u8> {
        FREE.try_with(|free| free.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| Vec::with_capacity(ROOM))
    }

    /// Keeps `buf` for a later [`take`] on this thread, if there is room.
    pub(super) fn give(mut buf: Vec<u8>) {
        if buf.capacity() < ROOM || buf.capacity() > LARGEST {
            return;
        }
        buf.clear();
        let _ = FREE.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < KEEP {
                free.push(buf);
            }
        });
    }
}

impl<S: AsyncRead + Unpin> Reader<'_, S> {
    /// Reads more, about `want` bytes at most; 0 at the end of the stream.
    async fn fill(&mut self, want: usize) -> Result<usize, Error> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(want);
        let n = self
            .io
            .read_buf(&mut self.buf)
            .await
            .map_err(Error::Receive)?;
        if n > 0 && self.first_byte.is_none() {
            self.first_byte = Some(Instant::now());
        }
        Ok(n)
    }

    fn unread(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The final response's status, HTTP minor version and header fields;
    /// interim (1xx) responses are read and skipped.
    async fn head(&mut self) -> Result<(u16, u8, Fields), Error> {
        let mut interim = 0;
        loop {
            // Nothing read yet (the usual first turn): no parse, which
            // clears its array of header slots each time.
            let unread = &self.buf[self.pos..];
            if !unread.is_empty()
                && let Some((len, status, version, headers)) = parse_head(unread)?
            {
                self.pos += len;
                if (100..200).contains(&status) && status != 101 {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(Error::Protocol(format!(
                            "more than {MAX_INTERIM} interim (1xx) responses"
                        )));
                    }
                    continue;
                }
                return Ok((status, version, headers));
            }
            if self.unread() >= MAX_HEAD {
                return Err(Error::Protocol(format!(
                    "the response head is larger than {} KiB",
                    MAX_HEAD >> 10
                )));
            }
            if self.fill(HEAD_READ).await? == 0 {
                return Err(Error::Closed);
            }
        }
    }

    /// Takes the next `n` bytes into `body`.
    async fn copy(&mut self, mut n: u64, body: &mut Body) -> Result<(), Error> {
        while n > 0 {
            if self.unread() == 0 {
                let want = usize::try_from(n)
                    .unwrap_or(BODY_READ)
                    .clamp(HEAD_READ, BODY_READ);
                if self.fill(want).await? == 0 {
                    return Err(Error::Closed);
                }
            }
            let take = self.unread().min(usize::try_from(n).unwrap_or(usize::MAX));
            body.take(&self.buf[self.pos..self.pos + take]);
            self.pos += take;
            n -= take as u64;
        }
        Ok(())
    }

    /// The next line, without its line ending, as a range of `buf`; at
    /// most `max` bytes long.
    async fn line(&mut self, max: usize) -> Result<std::ops::Range<usize>, Error> {
        let mut searched = 0;
        loop {
            if let Some(i) = self.buf[self.pos + searched..]
                .iter()
                .position(|&b| b == b'\n')
            {
                let start = self.pos;
                let mut end = start + searched + i;
                self.pos = end + 1;
                if end > start && self.buf[end - 1] == b'\r' {
                    end -= 1;
                }
                return Ok(start..end);
            }
            searched = self.unread();
            if searched > max {
                return Err(Error::Protocol(format!(
                    "a chunk line longer than {max} bytes"
                )));
            }
            // `fill` keeps the unread bytes, from the start of `buf`.
            if self.fill(HEAD_READ).await? == 0 {
                return Err(Error::Closed);
            }
        }
    }

    /// A chunked body, up to and with its trailer section.
    async fn chunked(&mut self, body: &mut Body) -> Result<(), Error> {
        loop {
            let line = self.line(MAX_CHUNK_LINE).await?;
            let size = &self.buf[line];
            let digits = size
                .split(|&b| b == b';')
                .next()
                .unwrap_or(&[])
                .trim_ascii();
            let n = std::str::from_utf8(digits)
                .ok()
                .filter(|s| !s.is_empty() && s.len() <= 16)
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .ok_or_else(|| {
                    Error::Protocol(format!(
                        "invalid chunk size {:?}",
                        String::from_utf8_lossy(size)
                    ))
                })?;
            if n == 0 {
                let mut trailers = 0;
                loop {
                    let line = self.line(MAX_CHUNK_LINE).await?;
                    if line.is_empty() {
                        return Ok(());
                    }
                    trailers += line.len();
                    if trailers > MAX_TRAILERS {
                        return Err(Error::Protocol(format!(
                            "trailers longer than {} KiB",
                            MAX_TRAILERS >> 10
                        )));
                    }
                }
            }
            self.copy(n, body).await?;
            if !self.line(2).await?.is_empty() {
                return Err(Error::Protocol("a chunk longer than its size".into()));
            }
        }
    }

    /// A body that ends with the connection.
    async fn until_close(&mut self, body: &mut Body) -> Result<(), Error> {
        loop {
            body.take(&self.buf[self.pos..]);
            self.pos = self.buf.len();
            match self.fill(BODY_READ).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                // A TLS peer that closes without close_notify.
                Err(Error::Receive(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use tokio::io::duplex;

    fn get<'a>(headers: &'a HeaderMap) -> Request<'a> {
        Request {
            method: &Method::GET,
            target: "/x?y=1",
            headers,
            body: b"",
        }
    }

    #[test]
    fn every_buffer_has_room_for_a_heads_read_and_small_ones_are_not_kept() {
        // A fresh thread: nothing kept yet.
        std::thread::spawn(|| {
            let first = buffers::take();
            assert!(first.capacity() >= HEAD_READ, "{}", first.capacity());
            buffers::give(first);
            // A head that grew a buffer of its own would have left this.
            buffers::give(Vec::with_capacity(64));
            let again = buffers::take();
            assert!(again.capacity() >= HEAD_READ, "{}", again.capacity());
        })
        .join()
        .unwrap_or_else(|_| panic!("the buffer checks failed"));
    }

    /// Serves `reply` to one request and returns what the client wrote.
    async fn once(req: Request<'_>, reply: &'static [u8]) -> (Result<Response, Error>, Vec<u8>) {
        let (mut client, mut server) = duplex(1 << 20);
        let serve = tokio::spawn(async move {
            let mut got = vec![0u8; 4096];
            let n = server.read(&mut got).await.unwrap_or(0);
            got.truncate(n);
            let _ = server.write_all(reply).await;
            // Keep the connection open unless the reply ends it.
            (got, server)
        });
        let out = exchange(&mut client, &req, false, 1 << 20, || {}).await;
        let (got, _server) = serve.await.expect("server task");
        (out, got)
    }

    #[tokio::test]
    async fn writes_the_request_and_reads_a_length_framed_response() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.test"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("99"));
        let req = Request {
            method: &Method::POST,
            target: "/p",
            headers: &headers,
            body: b"abc",
        };
        let (out, got) = once(
            req,
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nok",
        )
        .await;
        let r = out.expect("response");
        assert_eq!(
            got,
            b"POST /p HTTP/1.1\r\nhost: example.test\r\ncontent-length: 3\r\n\r\nabc".to_vec()
        );
        assert_eq!(r.status, 201);
        assert_eq!(r.body, b"ok");
        assert_eq!(r.headers.get_all("x-a").count(), 2);
        assert!(r.reusable);
    }

    #[tokio::test]
    async fn reads_chunked_bodies_with_extensions_and_trailers_and_skips_interim_responses() {
        let headers = HeaderMap::new();
        let (out, got) = once(
            get(&headers),
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
        )
        .await;
        assert_eq!(got, b"GET /x?y=1 HTTP/1.1\r\n\r\n".to_vec());
        let r = out.expect("response");
        assert_eq!(
            (r.status, r.body.as_slice(), r.reusable),
            (200, &b"hello world"[..], true)
        );
    }

    #[tokio::test]
    async fn a_body_until_close_or_a_close_token_ends_the_connection() {
        let headers = HeaderMap::new();
        let (mut client, mut server) = duplex(1 << 16);
        let serve = tokio::spawn(async move {
            let mut got = [0u8; 256];
            let _ = server.read(&mut got).await;
            let _ = server.write_all(b"HTTP/1.1 200 OK\r\n\r\nall of it").await;
        });
        let r = exchange(&mut client, &get(&headers), false, 1 << 20, || {})
            .await
            .expect("response");
        serve.await.expect("server");
        assert_eq!((r.body.as_slice(), r.reusable), (&b"all of it"[..], false));

        let (out, _) = once(
            get(&headers),
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(!out.expect("response").reusable);
        let (out, _) = once(
            get(&headers),
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(!out.expect("response").reusable);
        let (out, _) = once(
            get(&headers),
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(out.expect("response").reusable);
    }

    #[tokio::test]
    async fn head_204_and_304_have_no_body_and_bodies_past_keep_are_read_not_kept() {
        let headers = HeaderMap::new();
        let head = Request {
            method: &Method::HEAD,
            ..get(&headers)
        };
        let (out, _) = once(head, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n").await;
        let r = out.expect("response");
        assert!(r.body.is_empty() && r.reusable);
        let (out, _) = once(
            get(&headers),
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
        )
        .await;
        assert!(out.expect("response").reusable);

        let (mut client, mut server) = duplex(1 << 16);
        tokio::spawn(async move {
            let mut got = [0u8; 256];
            let _ = server.read(&mut got).await;
            let _ = server
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
                .await;
            got
        });
        let r = exchange(&mut client, &get(&headers), false, 4, || {})
            .await
            .expect("response");
        assert_eq!((r.body.as_slice(), r.reusable), (&b"0123"[..], true));
    }

    #[tokio::test]
    async fn broken_framing_is_a_protocol_error_and_an_early_close_is_closed() {
        let headers = HeaderMap::new();
        for reply in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\n\r\n",
        ] {
            let (mut client, mut server) = duplex(1 << 16);
            tokio::spawn(async move {
                let mut got = [0u8; 256];
                let _ = server.read(&mut got).await;
                let _ = server.write_all(reply).await;
                server
            });
            let out = exchange(&mut client, &get(&headers), false, 1 << 20, || {}).await;
            assert!(
                matches!(out, Err(Error::Protocol(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(reply),
                out.err()
            );
        }
        for reply in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"[..],
            b"HTTP/1.1 200 O",
        ] {
            let (mut client, mut server) = duplex(1 << 16);
            tokio::spawn(async move {
                let mut got = [0u8; 256];
                let _ = server.read(&mut got).await;
                let _ = server.write_all(reply).await;
            });
            let out = exchange(&mut client, &get(&headers), false, 1 << 20, || {}).await;
            assert!(matches!(out, Err(Error::Closed)), "{:?}", out.err());
        }
    }

    #[tokio::test]
    async fn a_head_past_its_bound_is_refused_and_an_idle_close_is_seen() {
        let headers = HeaderMap::new();
        let (mut client, mut server) = duplex(1 << 20);
        tokio::spawn(async move {
            let mut got = [0u8; 256];
            let _ = server.read(&mut got).await;
            let mut reply = b"HTTP/1.1 200 OK\r\n".to_vec();
            while reply.len() <= MAX_HEAD {
                reply.extend_from_slice(b"x-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
            }
            let _ = server.write_all(&reply).await;
            server
        });
        let out = exchange(&mut client, &get(&headers), false, 1 << 20, || {}).await;
        assert!(matches!(out, Err(Error::Protocol(_))), "{:?}", out.err());

        let (mut client, server) = duplex(64);
        assert!(!idle_gone(&mut client));
        drop(server);
        assert!(idle_gone(&mut client));
    }
}
