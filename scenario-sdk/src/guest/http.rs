//! HTTP requests from a scenario.
//!
//! Each VU owns its connections: they are kept alive between requests and
//! iterations and reopened when the server closes them, the way a browser or
//! an API client behaves. A network failure does not panic: it comes back as
//! a [`Response`] with status 0 and an [`Response::error`].
//!
//! Each VU also has a cookie jar, as in k6: cookies the target sets are sent
//! back on later requests that match, across iterations, until
//! [`clear_cookies`]. Redirects are followed (up to 10, see
//! [`Request::max_redirects`]), each hop a request of its own in the
//! metrics.
//!
//! ```ignore
//! let res = http::get("http://127.0.0.1:8080/hello");
//! let res = Request::post("http://127.0.0.1:8080/items")
//!     .json(&serde_json::json!({"name": "fusi"}))
//!     .tag("name", "create item")
//!     .send();
//! let res = Request::post("http://127.0.0.1:8080/login")
//!     .form(&[("user", "alice"), ("password", "s3cret")])
//!     .send();
//! ```

use std::cell::{OnceCell, RefCell};
use std::ops::Range;
use std::time::Duration;

use super::sys;
use crate::abi::wire::{self, NO_TIMEOUT};
use crate::abi::{ErrorKind, HttpError, HttpRequest, RequestOptions, Timings};
pub use crate::body::Multipart;

/// The response buffer's size before any response outgrew it. Small: the
/// pages of a VU's memory that the guest touches stay resident while it
/// sleeps, and a 16 KiB buffer pushed later allocations onto pages of their
/// own (4 KiB more per VU, docs/benchmarks.md); a larger response costs one
/// host call more, once, and the buffer grows to it.
const RESPONSE_BUFFER: usize = 2 << 10;
/// The response buffer does not grow past this; larger responses come
/// through the host's result buffer.
const MAX_RESPONSE_BUFFER: usize = 1 << 20;

thread_local! {
    /// Where the host writes responses: one buffer for every request of the
    /// instance, so a response that fits costs neither an allocation nor a
    /// second host call.
    static RESPONSES: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(RESPONSE_BUFFER));
}

/// Sends a GET request.
pub fn get(url: &str) -> Response {
    Request::get(url).send()
}

/// Sends a DELETE request.
pub fn delete(url: &str) -> Response {
    Request::new("DELETE", url).send()
}

/// Sends a POST request with a body (no content type is set).
pub fn post(url: &str, body: impl Into<Vec<u8>>) -> Response {
    Request::post(url).body(body).send()
}

/// Sets which statuses this VU's requests expect from now on, for example
/// `"200-299,404"` (statuses and inclusive ranges, 100 to 599); a response
/// with any other status counts in `http_req_failed`, as in k6's
/// `http.setResponseCallback(http.expectedStatuses(...))`. An empty text
/// restores the run's (`--expected-statuses`, by default 200-399). Text
/// that is no such list fails the iteration, with the problem in its
/// failure message.
pub fn set_expected_statuses(statuses: &str) {
    // SAFETY: the pointer and length describe a live &str.
    unsafe { sys::expected_statuses(statuses.as_ptr(), statuses.len()) }
}

/// Empties this VU's cookie jar, as k6's `http.cookieJar().clear(url)`
/// for every URL at once. The jar otherwise lives as long as the VU,
/// across iterations, as k6's does.
pub fn clear_cookies() {
    // SAFETY: no arguments.
    unsafe { sys::cookies_clear() }
}

/// The value of the cookie called `name` that this VU would send to `url`,
/// if there is one. A `url` that is no `http://` or `https://` URL fails
/// the iteration.
pub fn cookie(url: &str, name: &str) -> Option<String> {
    // SAFETY: both pointer and length pairs describe live &strs.
    let len = unsafe { sys::cookie_get(url.as_ptr(), url.len(), name.as_ptr(), name.len()) };
    let len = usize::try_from(len).ok()?;
    String::from_utf8(sys::take_result(len)).ok()
}

/// A request under construction.
#[derive(Debug, Clone)]
#[must_use = "a request does nothing until .send()"]
pub struct Request {
    inner: HttpRequest,
    options: RequestOptions,
}

impl Request {
    /// A request with any method.
    pub fn new(method: &str, url: &str) -> Self {
        Request {
            inner: HttpRequest {
                method: method.to_owned(),
                url: url.to_owned(),
                ..HttpRequest::default()
            },
            options: RequestOptions::default(),
        }
    }

    /// A GET request.
    pub fn get(url: &str) -> Self {
        Request::new("GET", url)
    }

    /// A POST request.
    pub fn post(url: &str) -> Self {
        Request::new("POST", url)
    }

    /// A PUT request.
    pub fn put(url: &str) -> Self {
        Request::new("PUT", url)
    }

    /// A PATCH request.
    pub fn patch(url: &str) -> Self {
        Request::new("PATCH", url)
    }

    /// Adds a header (names may repeat).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.inner.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.inner.body = body.into();
        self
    }

    /// Sets a JSON body and the `content-type: application/json` header.
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_default();
        self.header("content-type", "application/json").body(body)
    }

    /// Sets an HTML form body (`application/x-www-form-urlencoded`): each
    /// key and value percent-encoded, as a browser submits a form.
    pub fn form(self, fields: &[(&str, &str)]) -> Self {
        let body = crate::body::form_urlencoded(fields);
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }

    /// Sets a `multipart/form-data` body (fields and files) and its
    /// content type.
    pub fn multipart(self, form: Multipart) -> Self {
        let (content_type, body) = form.encode();
        self.header("content-type", &content_type).body(body)
    }

    /// Adds `authorization: Basic ...` for `user` and `password`.
    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        let credentials = crate::body::base64(format!("{user}:{password}").as_bytes());
        self.header("authorization", &format!("Basic {credentials}"))
    }

    /// Adds `authorization: Bearer TOKEN`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Follows at most `n` redirects (default 10, as k6's `maxRedirects`;
    /// at most 100); 0 returns the redirect itself. Past the limit the
    /// response is the last redirect, with the error kind
    /// `TooManyRedirects`.
    pub fn max_redirects(mut self, n: u32) -> Self {
        self.options.max_redirects = n.min(RequestOptions::MAX_REDIRECTS);
        self
    }

    /// Reads the response body without handing it to the scenario, as
    /// k6's `responseType: 'none'`: its bytes are still received and
    /// counted (`data_received`, `http_req_receiving`), but
    /// [`Response::body`] is empty and nothing is copied into the module.
    pub fn discard_body(mut self) -> Self {
        self.options.discard_body = true;
        self
    }

    /// Gives up after `timeout` (default 60 s; the iteration timeout always
    /// applies). Redirects followed count within it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.inner.timeout_ms = Some(ms.min(NO_TIMEOUT - 1));
        self
    }

    /// Tags this request's metrics. `name` is special: it replaces the URL in
    /// the metrics, so that `/items/1` and `/items/2` count as one series.
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.inner.tags.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sends the request and waits for the whole response.
    pub fn send(mut self) -> Response {
        self.inner.options = Some(self.options.to_pairs());
        let mut req = Vec::with_capacity(64 + self.inner.url.len() + self.inner.body.len());
        wire::encode_request(&self.inner, &mut req);
        RESPONSES.with_borrow_mut(|buf| {
            buf.clear();
            // SAFETY: `req` is a live Vec; `buf` has room for `buf.capacity()`
            // bytes, which is all the host writes there.
            let n = unsafe {
                sys::http_request(req.as_ptr(), req.len(), buf.as_mut_ptr(), buf.capacity())
            };
            let n = usize::try_from(n).unwrap_or(0);
            if n <= buf.capacity() {
                // SAFETY: the host wrote the response's `n` bytes to `buf`.
                unsafe { buf.set_len(n) };
                Response::read(buf.to_vec())
            } else {
                let raw = sys::take_result(n);
                if n <= MAX_RESPONSE_BUFFER {
                    buf.reserve(n);
                }
                Response::read(raw)
            }
        })
    }
}

/// A response, or the reason there is none.
///
/// It keeps the host's encoded response whole and reads it in place
/// ([`wire::ResponseView`]): a request allocates one buffer for it, not a
/// string per header and a vector for the body, and the headers become
/// strings only if [`Response::headers`] asks for all of them.
#[derive(Debug, Clone)]
pub struct Response {
    /// The host's encoded response; empty when it did not decode.
    raw: Vec<u8>,
    status: u16,
    protocol: &'static str,
    timings: Timings,
    error: Option<HttpError>,
    /// Where the body lies in `raw`.
    body: Range<usize>,
    /// Where the URL of the last request lies in `raw`, when the host said.
    url: Option<Range<usize>>,
    /// Every header as strings, made when first asked for.
    headers: OnceCell<Vec<(String, String)>>,
}

/// Where `part` lies in `whole`, of which it is a slice.
fn range_of(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    start..start + part.len()
}

impl Response {
    /// A response read from the host's encoded bytes.
    fn read(raw: Vec<u8>) -> Response {
        let view = match wire::ResponseView::parse(&raw) {
            Ok(view) => view,
            Err(e) => {
                return Response::failed(HttpError {
                    kind: ErrorKind::Protocol,
                    message: format!("the host's response did not decode: {e}"),
                });
            }
        };
        let body = range_of(&raw, view.body);
        let url = view.url.map(|u| range_of(&raw, u.as_bytes()));
        let (status, protocol, timings) = (view.status, view.protocol, view.timings);
        let error = view.error.map(|(kind, message)| HttpError {
            kind,
            message: message.to_owned(),
        });
        Response {
            raw,
            status,
            protocol,
            timings,
            error,
            body,
            url,
            headers: OnceCell::new(),
        }
    }

    /// No response, for `error`.
    fn failed(error: HttpError) -> Response {
        Response {
            raw: Vec::new(),
            status: 0,
            protocol: "",
            timings: Timings::default(),
            error: Some(error),
            body: 0..0,
            url: None,
            headers: OnceCell::new(),
        }
    }

    /// The encoded response, read again: it decoded once, so it does again.
    fn view(&self) -> Option<wire::ResponseView<'_>> {
        wire::ResponseView::parse(&self.raw).ok()
    }

    /// The status code; 0 when no response arrived.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The URL of the last request made: where the redirects led, or the
    /// request's own URL.
    pub fn url(&self) -> &str {
        self.url
            .clone()
            .and_then(|r| self.raw.get(r))
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    /// `HTTP/1.1` or `HTTP/2`.
    pub fn protocol(&self) -> &str {
        self.protocol
    }

    /// The first value of a header (names are compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.view()?
            .headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// All headers, names in lower case.
    pub fn headers(&self) -> &[(String, String)] {
        self.headers.get_or_init(|| {
            self.view()
                .map(|v| {
                    v.headers()
                        .map(|(n, v)| (n.to_owned(), v.to_owned()))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        self.raw.get(self.body.clone()).unwrap_or_default()
    }

    /// The body as text (invalid UTF-8 is replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.body()).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.body())
    }

    /// Where the time went.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Why there is no response, if there is none.
    pub fn error(&self) -> Option<&HttpError> {
        self.error.as_ref()
    }

    /// True for a status in 200..=399, which is also what fusi counts as a
    /// non-failed request in `http_req_failed`.
    pub fn ok(&self) -> bool {
        (200..400).contains(&self.status)
    }
}
