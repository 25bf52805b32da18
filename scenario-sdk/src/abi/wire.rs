//! The binary encoding of the structured ABI values: an HTTP request (guest
//! to host) and its response (host to guest).
//!
//! Every number is little-endian. A string or a byte string is a `u32`
//! length followed by that many bytes; strings are UTF-8. A list is a `u32`
//! count followed by its items. There are no field names and no padding:
//! every field is there, in the order below, and a value ends exactly where
//! its bytes end. The one optional field is the last of each value: a
//! request of ABI 3 ends with its options, which a request of ABI 2 lacks,
//! and the response to a request with options ends with its extras, which
//! the response to one without lacks; so a version 2 module's bytes are
//! still read and answered as they were.
//!
//! A request:
//!
//! | field | encoding |
//! |---|---|
//! | method | string |
//! | url | string |
//! | timeout_ms | `u64`; [`NO_TIMEOUT`] for none |
//! | headers | list of (name string, value string) |
//! | tags | list of (key string, value string) |
//! | body | byte string |
//! | options (ABI 3) | list of (key string, value string); see [`RequestOptions`](super::RequestOptions) |
//!
//! A response (the first [`RESPONSE_HEAD_BYTES`] bytes have a fixed layout):
//!
//! | offset | field | encoding |
//! |---|---|---|
//! | 0 | status | `u16` |
//! | 2 | protocol | `u8`: 0 none, 1 `HTTP/1.1`, 2 `HTTP/2` |
//! | 3 | error kind | `u8`: 0 no error, else [`ErrorKind::code`] |
//! | 4 | timings | 8 × `u64`, in the order of [`Timings`]' fields |
//! | 68 | error message | string (empty without an error) |
//! | | headers | list of (name string, value string) |
//! | | body | byte string |
//! | | extras (ABI 3) | list of (key string, value string): `url`, the URL of the last request made |
//!
//! Decoding never panics and never allocates more than the input's size:
//! a length or count that runs past the end is an error.

use super::{ErrorKind, HttpError, HttpRequest, HttpResponse, Timings};

/// The `timeout_ms` of a request that has none (the host's default applies).
pub const NO_TIMEOUT: u64 = u64::MAX;

/// The size of a response's fixed part: status, protocol, error kind and
/// timings.
pub const RESPONSE_HEAD_BYTES: usize = 68;

/// Why bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The bytes end inside the named field.
    Truncated(&'static str),
    /// The named field is not UTF-8.
    NotUtf8(&'static str),
    /// The named field holds a code that means nothing.
    BadCode(&'static str, u8),
    /// Bytes are left after the last field.
    TrailingBytes(usize),
}

/// The key of a response's final URL among its extras.
const URL_EXTRA: &str = "url";

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Truncated(field) => write!(f, "the bytes end inside the {field}"),
            WireError::NotUtf8(field) => write!(f, "the {field} is not UTF-8"),
            WireError::BadCode(field, code) => write!(f, "{code} is not a valid {field}"),
            WireError::TrailingBytes(n) => write!(f, "{n} bytes are left after the last field"),
        }
    }
}

impl std::error::Error for WireError {}

/// Appends a string or byte string: its `u32` length, then its bytes.
/// Lengths over `u32::MAX` cannot occur in a 32-bit guest, and the host
/// bounds what it encodes far below that.
#[inline]
fn put_bytes<O: Out + ?Sized>(out: &mut O, bytes: &[u8]) {
    out.put(&(bytes.len() as u32).to_le_bytes());
    out.put(bytes);
}

/// Where a [`ResponseWriter`] writes: a buffer that grows (`Vec<u8>`), or
/// one of a fixed size that says when the response did not fit
/// ([`Filling`]).
pub trait Out {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
    /// How many bytes were appended so far.
    fn position(&self) -> usize;
    /// Overwrites the bytes at `at` with `bytes`, all of them appended
    /// before; nothing happens where they were not.
    fn patch(&mut self, at: usize, bytes: &[u8]);
}

impl Out for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    #[inline]
    fn position(&self) -> usize {
        self.len()
    }

    #[inline]
    fn patch(&mut self, at: usize, bytes: &[u8]) {
        if let Some(slot) = self.get_mut(at..at + bytes.len()) {
            slot.copy_from_slice(bytes);
        }
    }
}

/// A fixed buffer a response is written into where it lies (the host
/// writes into the guest's response buffer so, with no copy in between).
/// What does not fit is counted, not written: [`Filling::written`] says
/// whether all of it fit.
pub struct Filling<'a> {
    buf: &'a mut [u8],
    /// The bytes appended, written or not.
    len: usize,
}

impl<'a> Filling<'a> {
    /// Writes from the start of `buf`.
    #[inline]
    pub fn new(buf: &'a mut [u8]) -> Filling<'a> {
        Filling { buf, len: 0 }
    }

    /// The length of what was written, or `None` when it did not all fit
    /// (the buffer then holds a part of it).
    #[inline]
    pub fn written(&self) -> Option<usize> {
        (self.len <= self.buf.len()).then_some(self.len)
    }
}

impl Out for Filling<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if let Some(slot) = self.buf.get_mut(self.len..end) {
            slot.copy_from_slice(bytes);
        }
        self.len = end;
    }

    #[inline]
    fn position(&self) -> usize {
        self.len
    }

    #[inline]
    fn patch(&mut self, at: usize, bytes: &[u8]) {
        if let Some(slot) = self.buf.get_mut(at..at + bytes.len()) {
            slot.copy_from_slice(bytes);
        }
    }
}

fn put_pairs(out: &mut Vec<u8>, pairs: &[(String, String)]) {
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
}

/// Appends the encoding of a request to `out`.
pub fn encode_request(req: &HttpRequest, out: &mut Vec<u8>) {
    put_bytes(out, req.method.as_bytes());
    put_bytes(out, req.url.as_bytes());
    out.extend_from_slice(&req.timeout_ms.unwrap_or(NO_TIMEOUT).to_le_bytes());
    put_pairs(out, &req.headers);
    put_pairs(out, &req.tags);
    put_bytes(out, &req.body);
    if let Some(options) = &req.options {
        put_pairs(out, options);
    }
}

/// Decodes a request.
pub fn decode_request(bytes: &[u8]) -> Result<HttpRequest, WireError> {
    let mut r = Reader { bytes };
    let req = HttpRequest {
        method: r.string("method")?.to_owned(),
        url: r.string("url")?.to_owned(),
        timeout_ms: Some(r.u64("timeout")?).filter(|&t| t != NO_TIMEOUT),
        headers: r.pairs("headers")?,
        tags: r.pairs("tags")?,
        body: r.bytes("body")?.to_vec(),
        options: None,
    };
    let req = HttpRequest {
        options: r.optional_pairs("options")?,
        ..req
    };
    r.end()?;
    Ok(req)
}

/// Writes a response in order: [`ResponseWriter::new`] with the fixed
/// fields, then each header, then [`ResponseWriter::finish`] with the body.
/// The host writes hyper's headers straight into the buffer this way.
pub struct ResponseWriter<'a, O: Out + ?Sized = Vec<u8>> {
    out: &'a mut O,
    /// Where the header count goes.
    count_at: usize,
    count: u32,
}

/// A response's fields but its headers and body.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    /// The HTTP status, or 0.
    pub status: u16,
    /// `HTTP/1.1`, `HTTP/2`, or empty.
    pub protocol: &'a str,
    /// Where the time went.
    pub timings: &'a Timings,
    /// Why no response arrived, if none did.
    pub error: Option<&'a HttpError>,
}

impl<'a, O: Out + ?Sized> ResponseWriter<'a, O> {
    /// Appends the fixed fields to `out`.
    pub fn new(out: &'a mut O, head: ResponseHead<'_>) -> ResponseWriter<'a, O> {
        let t = head.timings;
        let mut fixed = [0u8; RESPONSE_HEAD_BYTES];
        fixed[..2].copy_from_slice(&head.status.to_le_bytes());
        fixed[2] = protocol_code(head.protocol);
        fixed[3] = head.error.map_or(0, |e| e.kind.code());
        for (i, us) in [
            t.dns_us,
            t.connect_us,
            t.tls_us,
            t.sending_us,
            t.waiting_us,
            t.receiving_us,
            t.duration_us,
            t.total_us,
        ]
        .into_iter()
        .enumerate()
        {
            fixed[4 + 8 * i..12 + 8 * i].copy_from_slice(&us.to_le_bytes());
        }
        out.put(&fixed);
        put_bytes(out, head.error.map_or("", |e| &e.message).as_bytes());
        let count_at = out.position();
        out.put(&0u32.to_le_bytes());
        ResponseWriter {
            out,
            count_at,
            count: 0,
        }
    }

    /// Appends a header.
    pub fn header(&mut self, name: &str, value: &str) {
        put_bytes(self.out, name.as_bytes());
        put_bytes(self.out, value.as_bytes());
        self.count += 1;
    }

    /// Appends the body and fills in the header count; with `url`, the
    /// extras too (only in answer to a request with options).
    pub fn finish(self, body: &[u8], url: Option<&str>) {
        self.out.patch(self.count_at, &self.count.to_le_bytes());
        put_bytes(self.out, body);
        if let Some(url) = url {
            self.out.put(&1u32.to_le_bytes());
            put_bytes(self.out, URL_EXTRA.as_bytes());
            put_bytes(self.out, url.as_bytes());
        }
    }
}

/// Appends the encoding of a response to `out`.
pub fn encode_response<O: Out + ?Sized>(resp: &HttpResponse, out: &mut O) {
    let head = ResponseHead {
        status: resp.status,
        protocol: &resp.protocol,
        timings: &resp.timings,
        error: resp.error.as_ref(),
    };
    let mut w = ResponseWriter::new(out, head);
    for (name, value) in &resp.headers {
        w.header(name, value);
    }
    w.finish(&resp.body, resp.url.as_deref());
}

/// Decodes a response.
pub fn decode_response(bytes: &[u8]) -> Result<HttpResponse, WireError> {
    let view = ResponseView::parse(bytes)?;
    Ok(HttpResponse {
        status: view.status,
        protocol: view.protocol.to_owned(),
        headers: view
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        body: view.body.to_vec(),
        timings: view.timings,
        error: view.error.map(|(kind, message)| HttpError {
            kind,
            message: message.to_owned(),
        }),
        url: view.url.map(str::to_owned),
    })
}

/// A response read in place: what [`decode_response`] decodes, borrowed
/// from the encoded bytes, so that reading one allocates nothing. The
/// guest keeps its responses this way and makes strings of the headers
/// only when asked for all of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResponseView<'a> {
    /// The HTTP status, or 0 when no response arrived.
    pub status: u16,
    /// `HTTP/1.1`, `HTTP/2`, or empty.
    pub protocol: &'static str,
    /// Where the time went.
    pub timings: Timings,
    /// Why no response arrived, if none did: the kind and the message.
    pub error: Option<(ErrorKind, &'a str)>,
    /// The headers, as encoded: read with [`ResponseView::headers`].
    headers: &'a [u8],
    /// The body.
    pub body: &'a [u8],
    /// The URL of the last request made, when the host says it.
    pub url: Option<&'a str>,
}

impl<'a> ResponseView<'a> {
    /// Reads an encoded response, checking all of it.
    ///
    /// # Errors
    ///
    /// The bytes are not a response: cut short, a bad code, text that is
    /// not UTF-8, or bytes left over.
    pub fn parse(bytes: &'a [u8]) -> Result<ResponseView<'a>, WireError> {
        let mut r = Reader { bytes };
        let status = r.u16("status")?;
        let protocol = match r.u8("protocol")? {
            0 => "",
            1 => "HTTP/1.1",
            2 => "HTTP/2",
            code => return Err(WireError::BadCode("protocol", code)),
        };
        let kind = match r.u8("error kind")? {
            0 => None,
            code => Some(ErrorKind::from_code(code).ok_or(WireError::BadCode("error kind", code))?),
        };
        let mut t = [0u64; 8];
        for slot in &mut t {
            *slot = r.u64("timings")?;
        }
        let message = r.string("error message")?;
        let before = r.bytes;
        r.skip_pairs("headers")?;
        let headers = &before[..before.len() - r.bytes.len()];
        let body = r.bytes("body")?;
        let mut url = None;
        if !r.bytes.is_empty() {
            let count = r.u32("extras")?;
            for _ in 0..count {
                let k = r.string("extras")?;
                let v = r.string("extras")?;
                if k == URL_EXTRA {
                    url = Some(v);
                }
            }
        }
        r.end()?;
        Ok(ResponseView {
            status,
            protocol,
            timings: Timings {
                dns_us: t[0],
                connect_us: t[1],
                tls_us: t[2],
                sending_us: t[3],
                waiting_us: t[4],
                receiving_us: t[5],
                duration_us: t[6],
                total_us: t[7],
            },
            error: kind.map(|kind| (kind, message)),
            headers,
            body,
            url,
        })
    }

    /// The headers, names and values, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        let mut r = Reader {
            bytes: self.headers,
        };
        // Checked by `parse`: these reads do not fail.
        let count = r.u32("headers").unwrap_or(0);
        (0..count).map_while(move |_| Some((r.string("headers").ok()?, r.string("headers").ok()?)))
    }
}

fn protocol_code(protocol: &str) -> u8 {
    match protocol {
        "HTTP/1.1" => 1,
        "HTTP/2" => 2,
        _ => 0,
    }
}

/// Reads fields off the front of a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.bytes.len() {
            return Err(WireError::Truncated(field));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    #[inline]
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    #[inline]
    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        self.array::<1>(field).map(|[b]| b)
    }

    #[inline]
    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        self.array(field).map(u16::from_le_bytes)
    }

    #[inline]
    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        self.array(field).map(u32::from_le_bytes)
    }

    #[inline]
    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        self.array(field).map(u64::from_le_bytes)
    }

    #[inline]
    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], WireError> {
        let len = self.u32(field)?;
        self.take(len as usize, field)
    }

    fn string(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes(field)?).map_err(|_| WireError::NotUtf8(field))
    }

    fn pairs(&mut self, field: &'static str) -> Result<Vec<(String, String)>, WireError> {
        let count = self.u32(field)?;
        // Each pair takes at least 8 bytes: never reserve more than fits.
        let mut pairs = Vec::with_capacity((count as usize).min(self.bytes.len() / 8));
        for _ in 0..count {
            let k = self.string(field)?;
            let v = self.string(field)?;
            pairs.push((k.to_owned(), v.to_owned()));
        }
        Ok(pairs)
    }

    /// Reads past a list of pairs, checking its strings.
    /// Skips a list of pairs of strings, checking that each is UTF-8: in
    /// one pass over the whole list when all its bytes are ASCII (its
    /// lengths too, as they are for strings under 128 bytes), string by
    /// string otherwise. Most responses' headers are ASCII, and one pass
    /// costs a fraction of a check per string.
    fn skip_pairs(&mut self, field: &'static str) -> Result<(), WireError> {
        let list = self.bytes;
        let count = self.u32(field)?;
        for _ in 0..count {
            self.bytes(field)?;
            self.bytes(field)?;
        }
        let list = &list[..list.len() - self.bytes.len()];
        if list.is_ascii() {
            return Ok(());
        }
        let mut again = Reader { bytes: list };
        again.u32(field)?;
        for _ in 0..count {
            again.string(field)?;
            again.string(field)?;
        }
        Ok(())
    }

    /// A list of pairs that is the last field, when any bytes are left.
    fn optional_pairs(
        &mut self,
        field: &'static str,
    ) -> Result<Option<Vec<(String, String)>>, WireError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        self.pairs(field).map(Some)
    }

    fn end(&self) -> Result<(), WireError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(WireError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            url: "http://127.0.0.1:1/x".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-a".into(), "".into()),
            ],
            body: vec![7; 10_000],
            timeout_ms: Some(1500),
            tags: vec![("name".into(), "x".into())],
            options: Some(vec![("redirects".into(), "3".into())]),
        }
    }

    fn response() -> HttpResponse {
        HttpResponse {
            status: 201,
            protocol: "HTTP/1.1".into(),
            headers: vec![("a".into(), "b".into())],
            body: vec![1; 5000],
            timings: Timings {
                dns_us: 1,
                connect_us: 2,
                tls_us: 3,
                sending_us: 4,
                waiting_us: 5,
                receiving_us: 6,
                duration_us: 7,
                total_us: 9,
            },
            error: Some(HttpError {
                kind: ErrorKind::Timeout,
                message: "slow".into(),
            }),
            url: Some("http://127.0.0.1:1/y".into()),
        }
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let req = request();
        let mut bytes = Vec::new();
        encode_request(&req, &mut bytes);
        assert_eq!(decode_request(&bytes), Ok(req));
        let none = HttpRequest {
            method: "GET".into(),
            url: "http://h/".into(),
            ..HttpRequest::default()
        };
        let mut bytes = Vec::new();
        encode_request(&none, &mut bytes);
        assert_eq!(decode_request(&bytes), Ok(none));
        let old = HttpRequest {
            options: None,
            ..request()
        };
        let mut bytes = Vec::new();
        encode_request(&old, &mut bytes);
        assert_eq!(decode_request(&bytes), Ok(old));
        for resp in [
            response(),
            HttpResponse {
                url: None,
                ..response()
            },
            HttpResponse::default(),
            HttpResponse {
                protocol: "HTTP/2".into(),
                status: 200,
                ..HttpResponse::default()
            },
        ] {
            let mut bytes = Vec::new();
            encode_response(&resp, &mut bytes);
            assert_eq!(decode_response(&bytes), Ok(resp));
        }
    }

    #[test]
    fn a_response_filled_in_place_is_the_bytes_a_vec_gets_or_says_it_did_not_fit() {
        let mut resp = response();
        resp.headers.push(("c".into(), "d".into()));
        let mut expected = Vec::new();
        encode_response(&resp, &mut expected);
        // Room to spare: the bytes are the same, and only they are written.
        let mut buf = vec![0xEE; expected.len() + 7];
        let mut filling = Filling::new(&mut buf);
        encode_response(&resp, &mut filling);
        assert_eq!(filling.written(), Some(expected.len()));
        assert_eq!(&buf[..expected.len()], &expected[..]);
        assert!(buf[expected.len()..].iter().all(|&b| b == 0xEE));
        assert_eq!(decode_response(&buf[..expected.len()]), Ok(resp.clone()));
        // Exactly the room it needs.
        let mut exact = vec![0; expected.len()];
        let mut filling = Filling::new(&mut exact);
        encode_response(&resp, &mut filling);
        assert_eq!(filling.written(), Some(expected.len()));
        assert_eq!(exact, expected);
        // A byte short anywhere, the header count's slot included: it
        // says so, and nothing is written past the buffer.
        for short in [0, 1, RESPONSE_HEAD_BYTES + 4, expected.len() - 1] {
            let mut small = vec![0; short];
            let mut filling = Filling::new(&mut small);
            encode_response(&resp, &mut filling);
            assert_eq!(filling.written(), None, "{short} bytes");
            assert_eq!(filling.position(), expected.len());
        }
    }

    #[test]
    fn a_response_read_in_place_says_what_its_decoding_says() {
        let mut resp = response();
        resp.headers
            .push(("Content-Type".into(), "text/plain".into()));
        let mut bytes = Vec::new();
        encode_response(&resp, &mut bytes);
        let view = ResponseView::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(view.status, 201);
        assert_eq!(view.protocol, "HTTP/1.1");
        assert_eq!(view.timings, resp.timings);
        assert_eq!(view.error, Some((ErrorKind::Timeout, "slow")));
        assert_eq!(
            view.headers().collect::<Vec<_>>(),
            [("a", "b"), ("Content-Type", "text/plain")]
        );
        assert_eq!(view.body, &resp.body[..]);
        assert_eq!(view.url, Some("http://127.0.0.1:1/y"));
        // The body and the URL lie in the bytes, copied nowhere.
        let within = |part: &[u8]| {
            let range = bytes.as_ptr_range();
            range.contains(&part.as_ptr()) && part.len() <= bytes.len()
        };
        assert!(within(view.body) && within(view.url.unwrap_or_default().as_bytes()));
        // A header that is not UTF-8 fails the whole response, as decoding does.
        let at = bytes
            .windows(10)
            .position(|w| w == b"text/plain")
            .unwrap_or_else(|| panic!("the header's value is in the bytes"));
        bytes[at] = 0xff;
        assert!(ResponseView::parse(&bytes).is_err());
        assert!(decode_response(&bytes).is_err());
    }

    #[test]
    fn the_url_extra_is_read_and_checked() {
        for url in ["http://127.0.0.1:1/y", "http://h/café"] {
            let resp = HttpResponse {
                url: Some(url.to_owned()),
                ..response()
            };
            let mut bytes = Vec::new();
            encode_response(&resp, &mut bytes);
            let view = ResponseView::parse(&bytes).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(view.url, Some(url));
            let last = bytes.len() - 1;
            bytes[last] = 0xff;
            assert_eq!(
                ResponseView::parse(&bytes),
                Err(WireError::NotUtf8("extras")),
                "{url}"
            );
        }
    }

    #[test]
    fn headers_are_checked_whether_or_not_they_are_ascii() {
        let long = "v".repeat(200);
        for headers in [
            vec![("a", "b")],
            vec![("set-cookie", "café"), ("a", "b")],
            vec![("x-long", long.as_str())],
            vec![],
        ] {
            let resp = HttpResponse {
                headers: headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..response()
            };
            let mut bytes = Vec::new();
            encode_response(&resp, &mut bytes);
            let view = ResponseView::parse(&bytes).unwrap_or_else(|e| panic!("{headers:?}: {e}"));
            assert_eq!(view.headers().collect::<Vec<_>>(), headers);
            // A value's last byte made 0xff: no longer UTF-8, and said so,
            // on the one-pass path (all ASCII before) and the other.
            if let Some((_, value)) = headers.last() {
                let end = bytes
                    .windows(value.len())
                    .position(|w| w == value.as_bytes())
                    .unwrap_or_else(|| panic!("the value is in the bytes"))
                    + value.len();
                bytes[end - 1] = 0xff;
                assert_eq!(
                    ResponseView::parse(&bytes),
                    Err(WireError::NotUtf8("headers")),
                    "{headers:?}"
                );
            }
        }
    }

    #[test]
    fn the_smallest_request_and_the_response_head_are_laid_out_as_documented() {
        let req = HttpRequest {
            method: "GET".into(),
            url: "http://127.0.0.1:8080/hello".into(),
            ..HttpRequest::default()
        };
        let mut bytes = Vec::new();
        encode_request(&req, &mut bytes);
        let mut expected = vec![3, 0, 0, 0];
        expected.extend(b"GET");
        expected.extend([27, 0, 0, 0]);
        expected.extend(b"http://127.0.0.1:8080/hello");
        expected.extend([0xff; 8]);
        expected.extend([0; 12]);
        assert_eq!(bytes, expected);
        assert_eq!(bytes.len(), 58, "a version 2 request");
        let with_options = HttpRequest {
            options: Some(vec![("body".into(), "discard".into())]),
            ..req
        };
        let mut bytes = Vec::new();
        encode_request(&with_options, &mut bytes);
        let mut options = vec![1, 0, 0, 0, 4, 0, 0, 0];
        options.extend(b"body");
        options.extend([7, 0, 0, 0]);
        options.extend(b"discard");
        assert_eq!(&bytes[58..], &options[..]);

        let mut bytes = Vec::new();
        encode_response(&response(), &mut bytes);
        assert_eq!(&bytes[..4], &[201, 0, 1, ErrorKind::Timeout.code()]);
        assert_eq!(&bytes[4..12], &1u64.to_le_bytes());
        assert_eq!(&bytes[60..68], &9u64.to_le_bytes());
        assert_eq!(&bytes[68..72], &4u32.to_le_bytes());
        assert_eq!(&bytes[72..76], b"slow");
    }

    #[test]
    fn every_cut_and_every_garbage_byte_is_an_error_not_a_panic() {
        let mut req = Vec::new();
        encode_request(&request(), &mut req);
        let mut resp = Vec::new();
        encode_response(&response(), &mut resp);
        // Cut right before its optional last field, a value is whole.
        let mut req_v2 = Vec::new();
        encode_request(
            &HttpRequest {
                options: None,
                ..request()
            },
            &mut req_v2,
        );
        let mut resp_v2 = Vec::new();
        encode_response(
            &HttpResponse {
                url: None,
                ..response()
            },
            &mut resp_v2,
        );
        for n in (0..req.len()).filter(|&n| n != req_v2.len()) {
            assert!(decode_request(&req[..n]).is_err(), "request cut at {n}");
        }
        for n in (0..resp.len()).filter(|&n| n != resp_v2.len()) {
            assert!(decode_response(&resp[..n]).is_err(), "response cut at {n}");
        }
        assert!(decode_request(&req[..req_v2.len()]).is_ok_and(|r| r.options.is_none()));
        assert!(decode_response(&resp[..resp_v2.len()]).is_ok_and(|r| r.url.is_none()));
        let mut longer = req.clone();
        longer.push(0);
        assert_eq!(decode_request(&longer), Err(WireError::TrailingBytes(1)));
        let mut longer = resp.clone();
        longer.push(0);
        assert_eq!(decode_response(&longer), Err(WireError::TrailingBytes(1)));
        let mut bad = resp.clone();
        bad[2] = 9;
        assert_eq!(
            decode_response(&bad),
            Err(WireError::BadCode("protocol", 9))
        );
        bad[2] = 1;
        bad[3] = 200;
        assert_eq!(
            decode_response(&bad),
            Err(WireError::BadCode("error kind", 200))
        );
        let mut not_utf8 = Vec::new();
        put_bytes(&mut not_utf8, &[0xff]);
        assert_eq!(decode_request(&not_utf8), Err(WireError::NotUtf8("method")));
        // A huge count with nothing behind it fails without reserving memory.
        let mut huge = Vec::new();
        put_bytes(&mut huge, b"GET");
        put_bytes(&mut huge, b"http://h/");
        huge.extend(NO_TIMEOUT.to_le_bytes());
        huge.extend(u32::MAX.to_le_bytes());
        assert_eq!(decode_request(&huge), Err(WireError::Truncated("headers")));
        for seed in 0..2000u32 {
            let garbage: Vec<u8> = (0..(seed % 97))
                .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 40_503) >> 13) as u8)
                .collect();
            let _ = decode_request(&garbage);
            let _ = decode_response(&garbage);
        }
    }
}
