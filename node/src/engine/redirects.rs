//! Following redirects: which answers are redirects, where they lead, and
//! what the next request is. The host's `http_request` sends each hop
//! through the VU's client, so every hop is checked against
//! `--allow-target`, gets the jar's cookies and is recorded as a request of
//! its own; this module only decides.
//!
//! The rules are k6's, which are Go's `net/http` client's: 301, 302, 303,
//! 307 and 308 with a `Location` are followed; 301, 302 and 303 turn any
//! method but GET and HEAD into GET and drop the body, 307 and 308 keep
//! both. A hop to another domain (not the same host nor one of its
//! subdomains) drops the `Authorization` and `Cookie` headers the scenario
//! set, so a token is not handed to whoever a redirect names.

use fusi_sdk::abi::{ErrorKind, HttpError, HttpRequest};
use url::Url;

use super::http::Answer;

/// What follows `answer`, the answer to `req`, hop `hop` (0 for the
/// scenario's own request) of a request that allows `max` redirects: the
/// next hop, or `None` when `answer` is the last. A redirect past the
/// limit gets the error `too_many_redirects`, and one that cannot be
/// followed the error `protocol`; a run that is `stopping` follows none.
pub fn next_hop(
    req: &HttpRequest,
    answer: &mut Answer,
    hop: u32,
    max: u32,
    stopping: impl FnOnce() -> bool,
) -> Option<HttpRequest> {
    if answer.error.is_some() || !is_redirect(answer.status) || stopping() {
        return None;
    }
    let location = answer.headers.get("location")?;
    if hop >= max {
        if max > 0 {
            answer.error = Some(HttpError {
                kind: ErrorKind::TooManyRedirects,
                message: format!(
                    "stopped after {max} redirects: {} redirects again, to {:?}; a redirect loop, or \
                     raise the limit with .max_redirects(n)",
                    req.url,
                    String::from_utf8_lossy(location)
                ),
            });
        }
        return None;
    }
    match follow(req, answer.status, location) {
        Ok(to) => Some(to),
        Err(message) => {
            answer.error = Some(HttpError {
                kind: ErrorKind::Protocol,
                message,
            });
            None
        }
    }
}

/// Whether an answer with `status` is a redirect to follow (given a
/// `Location`).
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// The request that follows a redirect with `status` and `location` in
/// answer to `req`, or why there is none: a `Location` that is not
/// UTF-8, not a URL, or not `http://` or `https://`.
pub fn follow(req: &HttpRequest, status: u16, location: &[u8]) -> Result<HttpRequest, String> {
    let location = std::str::from_utf8(location)
        .map_err(|_| "the redirect's Location header is not UTF-8".to_owned())?;
    let to = resolve(&req.url, location)?;
    let keeps_body = matches!(status, 307 | 308);
    let method = if keeps_body || req.method.eq_ignore_ascii_case("HEAD") {
        req.method.clone()
    } else {
        "GET".to_owned()
    };
    let same_site = same_site(&req.url, &to);
    let headers = req
        .headers
        .iter()
        .filter(|(name, _)| {
            let dropped: &[&str] = match (keeps_body, same_site) {
                (true, true) => &["host"],
                (true, false) => &["host", "authorization", "cookie"],
                (false, true) => &["host", "content-type", "content-length"],
                (false, false) => &[
                    "host",
                    "content-type",
                    "content-length",
                    "authorization",
                    "cookie",
                ],
            };
            !dropped.iter().any(|d| name.eq_ignore_ascii_case(d))
        })
        .cloned()
        .collect();
    Ok(HttpRequest {
        method,
        url: to,
        headers,
        body: if keeps_body {
            req.body.clone()
        } else {
            Vec::new()
        },
        timeout_ms: req.timeout_ms,
        tags: req.tags.clone(),
        options: req.options.clone(),
    })
}

/// `location` (absolute, or relative to `base` as RFC 3986 says) as an
/// absolute `http://` or `https://` URL.
fn resolve(base: &str, location: &str) -> Result<String, String> {
    let base = Url::parse(base).map_err(|e| format!("the URL {base:?} is not absolute: {e}"))?;
    let to = base.join(location.trim()).map_err(|e| {
        format!(
            "the redirect's Location {:?} is not a URL: {e}",
            location.escape_debug()
        )
    })?;
    match to.scheme() {
        "http" | "https" if to.host_str().is_some_and(|h| !h.is_empty()) => Ok(to.into()),
        _ => Err(format!(
            "the redirect's Location {:?} is not an http:// or https:// URL",
            location.escape_debug()
        )),
    }
}

/// Whether `to`'s host is `from`'s or inside it (Go's rule for keeping
/// sensitive headers).
fn same_site(from: &str, to: &str) -> bool {
    let host = |u: &str| {
        Url::parse(u)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
    };
    match (host(from), host(to)) {
        (Some(from), Some(to)) => {
            to == from
                || to
                    .strip_suffix(from.as_str())
                    .is_some_and(|sub| sub.ends_with('.'))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fields::Fields;

    fn req(method: &str, url: &str) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            url: url.into(),
            headers: vec![
                (
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                ("authorization".into(), "Bearer t".into()),
                ("Cookie".into(), "mine=1".into()),
                ("x-keep".into(), "1".into()),
                ("host".into(), "h".into()),
            ],
            body: b"a=1".to_vec(),
            timeout_ms: Some(5),
            tags: vec![("name".into(), "login".into())],
            options: Some(Vec::new()),
        }
    }

    fn names(r: &HttpRequest) -> Vec<&str> {
        r.headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn answer(status: u16, location: Option<&'static str>) -> Answer {
        Answer {
            status,
            headers: location
                .map(|l| Fields::from_pairs([("location", l)]))
                .unwrap_or_default(),
            ..Answer::default()
        }
    }

    #[test]
    fn a_chain_stops_at_its_limit_with_too_many_redirects() {
        let r = req("GET", "http://h/a");
        let mut a = answer(302, Some("/b"));
        let next = next_hop(&r, &mut a, 0, 2, || false);
        assert_eq!(next.map(|n| n.url).as_deref(), Some("http://h/b"));
        assert!(a.error.is_none());
        let mut a = answer(302, Some("/b"));
        assert!(next_hop(&r, &mut a, 1, 2, || false).is_some());
        let mut a = answer(302, Some("/b"));
        assert!(next_hop(&r, &mut a, 2, 2, || false).is_none());
        let e = a.error.unwrap_or_else(|| panic!("no error past the limit"));
        assert_eq!(e.kind, ErrorKind::TooManyRedirects);
        assert!(
            e.message
                .contains("stopped after 2 redirects: http://h/a redirects again, to \"/b\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn what_is_not_followed_is_returned_as_it_is() {
        let r = req("GET", "http://h/a");
        for (mut a, max, stopping) in [
            (answer(302, Some("/b")), 0, false),
            (answer(302, Some("/b")), 10, true),
            (answer(302, None), 10, false),
            (answer(304, Some("/b")), 10, false),
            (answer(200, Some("/b")), 10, false),
        ] {
            assert!(next_hop(&r, &mut a, 0, max, || stopping).is_none());
            assert!(a.error.is_none(), "{} max {max}", a.status);
        }
        let mut a = answer(301, Some("ftp://h/"));
        assert!(next_hop(&r, &mut a, 0, 10, || false).is_none());
        assert_eq!(a.error.map(|e| e.kind), Some(ErrorKind::Protocol));
    }

    #[test]
    fn only_the_five_redirect_statuses_are_followed() {
        for s in [301, 302, 303, 307, 308] {
            assert!(is_redirect(s), "{s}");
        }
        for s in [200, 300, 304, 305, 306, 309, 400] {
            assert!(!is_redirect(s), "{s}");
        }
    }

    #[test]
    fn locations_resolve_against_the_request_url() {
        let base = "http://127.0.0.1:8080/a/b?q=1";
        for (location, to) in [
            ("/x", "http://127.0.0.1:8080/x"),
            ("c", "http://127.0.0.1:8080/a/c"),
            ("../c?z", "http://127.0.0.1:8080/c?z"),
            ("?only=query", "http://127.0.0.1:8080/a/b?only=query"),
            ("//other:9/p", "http://other:9/p"),
            ("https://h/s", "https://h/s"),
            ("  /trimmed ", "http://127.0.0.1:8080/trimmed"),
        ] {
            assert_eq!(resolve(base, location).as_deref(), Ok(to), "{location}");
        }
        for bad in ["ftp://h/", "javascript:alert(1)", "http://", "http://[::1"] {
            let e = resolve(base, bad).err().unwrap_or_default();
            assert!(e.contains("Location"), "{bad}: {e}");
        }
        let e = follow(&req("GET", base), 302, &[0xff])
            .err()
            .unwrap_or_default();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn see_other_and_moved_become_get_without_a_body() {
        for (method, status) in [
            ("POST", 303),
            ("POST", 302),
            ("POST", 301),
            ("PUT", 303),
            ("DELETE", 301),
        ] {
            let next = follow(&req(method, "http://h/login"), status, b"/home").ok();
            let next = next.unwrap_or_default();
            assert_eq!(next.method, "GET", "{method} {status}");
            assert!(next.body.is_empty());
            assert_eq!(
                names(&next),
                ["authorization", "Cookie", "x-keep"],
                "same host keeps credentials"
            );
            assert_eq!(next.tags, req(method, "http://h/").tags);
            assert_eq!(next.timeout_ms, Some(5));
            assert_eq!(next.options, Some(Vec::new()));
        }
        let head = follow(&req("HEAD", "http://h/"), 301, b"/x")
            .ok()
            .unwrap_or_default();
        assert_eq!(head.method, "HEAD");
    }

    #[test]
    fn temporary_and_permanent_keep_method_and_body() {
        for status in [307, 308] {
            let next = follow(&req("POST", "http://h/"), status, b"http://sub.h/up")
                .ok()
                .unwrap_or_default();
            assert_eq!(
                (next.method.as_str(), next.body.as_slice()),
                ("POST", &b"a=1"[..])
            );
            assert_eq!(next.url, "http://sub.h/up");
            assert_eq!(
                names(&next),
                ["Content-Type", "authorization", "Cookie", "x-keep"]
            );
        }
    }

    #[test]
    fn another_domain_gets_no_credentials() {
        let next = follow(&req("GET", "http://a.example/"), 302, b"http://example/")
            .ok()
            .unwrap_or_default();
        assert_eq!(names(&next), ["x-keep"]);
        let next = follow(
            &req("POST", "http://a.example/"),
            307,
            b"http://evil.example/",
        )
        .ok()
        .unwrap_or_default();
        assert_eq!(names(&next), ["Content-Type", "x-keep"]);
        assert!(!same_site("http://h/", "http://xh/"));
        assert!(same_site("http://h/", "http://a.h:81/"));
    }
}
