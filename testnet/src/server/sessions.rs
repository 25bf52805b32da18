//! The routes a session test needs: redirects, cookies, and a login form
//! that sets a session cookie and redirects to a page that wants it. They
//! keep no state: the session cookie's value names its user, so any
//! number of VUs log in without the target remembering them.

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderValue};

use super::{Resp, error_json, json, text};

/// The most redirects `/redirect/{n}` chains.
const MAX_REDIRECTS: u32 = 100;
/// The name of the cookie `POST /login` sets.
const SESSION_COOKIE: &str = "session";

/// `/redirect/{n}`, any method: a `302` to `/redirect/{n-1}` (a relative
/// Location), and `200 redirected` at 0.
pub(super) fn redirect_chain(n: &str) -> Resp {
    let Some(n) = n.parse::<u32>().ok().filter(|n| *n <= MAX_REDIRECTS) else {
        return error_json(
            StatusCode::BAD_REQUEST,
            format!("invalid count `{n}`: expected redirects in 0..={MAX_REDIRECTS}"),
        );
    };
    if n == 0 {
        return text(StatusCode::OK, Bytes::from_static(b"redirected\n"));
    }
    redirect(StatusCode::FOUND, &format!("/redirect/{}", n - 1))
}

/// `/redirect-to?url=URL[&status=CODE]`, any method: a redirect (302 by
/// default; 301, 303, 307 or 308 when asked) to `url`, wherever it is.
pub(super) fn redirect_to(query: Option<&str>) -> Resp {
    let pairs = parse_form(query.unwrap_or("").as_bytes());
    let Some(url) = find(&pairs, "url") else {
        return error_json(StatusCode::BAD_REQUEST, "missing `url` in the query".into());
    };
    let status = match find(&pairs, "status").unwrap_or("302") {
        "301" => StatusCode::MOVED_PERMANENTLY,
        "302" => StatusCode::FOUND,
        "303" => StatusCode::SEE_OTHER,
        "307" => StatusCode::TEMPORARY_REDIRECT,
        "308" => StatusCode::PERMANENT_REDIRECT,
        other => {
            return error_json(
                StatusCode::BAD_REQUEST,
                format!("invalid status `{other}`: expected 301, 302, 303, 307 or 308"),
            );
        }
    };
    redirect(status, url)
}

/// `GET /cookies`: the request's `Cookie` header as JSON
/// `{"cookie": "a=1; b=2"}` (`null` without one).
pub(super) fn cookies(parts: &http::request::Parts) -> Resp {
    let cookie = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .reduce(|a, b| format!("{a}; {b}"));
    json(StatusCode::OK, &serde_json::json!({ "cookie": cookie }))
}

/// `/cookies/set?NAME=VALUE&...`, any method: sets each cookie (`Path=/`)
/// and redirects (302) to `/cookies`.
pub(super) fn set_cookies(query: Option<&str>) -> Resp {
    let mut resp = redirect(StatusCode::FOUND, "/cookies");
    for (name, value) in parse_form(query.unwrap_or("").as_bytes()) {
        if let Ok(v) = HeaderValue::from_str(&format!("{name}={value}; Path=/")) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// `POST /login` with a form body `user=NAME&password=...`: a `303` to
/// `/account` that sets the cookie `session=user-NAME` (`Path=/;
/// HttpOnly`); 400 without a user. `counted` hears each user logged in.
pub(super) fn login(body: &[u8], counted: impl FnOnce(&str)) -> Resp {
    let pairs = parse_form(body);
    let Some(user) = find(&pairs, "user").filter(|u| is_token(u)) else {
        return error_json(
            StatusCode::BAD_REQUEST,
            "the form needs a `user` of letters, digits, '-' and '_'".into(),
        );
    };
    counted(user);
    let mut resp = redirect(StatusCode::SEE_OTHER, "/account");
    let cookie = format!("{SESSION_COOKIE}=user-{user}; Path=/; HttpOnly");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /account`: `200 {"user": NAME}` with the cookie `POST /login`
/// set; 401 without it.
pub(super) fn account(parts: &http::request::Parts) -> Resp {
    let user = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .and_then(|(_, value)| value.strip_prefix("user-"));
    match user {
        Some(user) => json(StatusCode::OK, &serde_json::json!({ "user": user })),
        None => error_json(
            StatusCode::UNAUTHORIZED,
            format!("no `{SESSION_COOKIE}` cookie: log in with POST /login first"),
        ),
    }
}

fn redirect(status: StatusCode, location: &str) -> Resp {
    let mut resp = text(status, Bytes::from(format!("see {location}\n")));
    match HeaderValue::from_str(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
            resp
        }
        Err(_) => error_json(
            StatusCode::BAD_REQUEST,
            "the redirect's URL is not a valid header value".into(),
        ),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) fn find<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `application/x-www-form-urlencoded` (a query or a form body): at most
/// 64 pairs, `+` as space, `%XX` decoded, invalid UTF-8 replaced.
pub(super) fn parse_form(bytes: &[u8]) -> Vec<(String, String)> {
    bytes
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .take(64)
        .map(|pair| {
            let mut kv = pair.splitn(2, |&b| b == b'=');
            let k = decode(kv.next().unwrap_or_default());
            let v = decode(kv.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

fn decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = hex {
                    out.push(b);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_stay_bounded() {
        assert_eq!(
            parse_form(b"user=alice+smith&pass=a%26b%3D%C3%A9&bad=%zz%4&empty&&=v"),
            vec![
                ("user".into(), "alice smith".into()),
                ("pass".into(), "a&b=é".into()),
                ("bad".into(), "%zz%4".into()),
                ("empty".into(), String::new()),
                (String::new(), "v".into()),
            ]
        );
        assert_eq!(parse_form(&b"a=1&".repeat(1000)).len(), 64);
        assert!(is_token("alice_1-x"));
        assert!(!is_token("a b") && !is_token("") && !is_token(&"a".repeat(65)));
    }
}
