//! A browser-like session: log in with a form POST that sets a cookie and
//! redirects, then read a page that needs the cookie; follow a chain of
//! redirects without keeping the body; send credentials and a multipart
//! upload.
//!
//! ```text
//! fusi-node run session.wasm --vus 10 --duration 1m --env TARGET=http://127.0.0.1:8080
//! ```
//!
//! Against `fusi-testnet target`, each iteration makes 13 requests: the
//! login (303) and the account page it leads to (200), `/cookies`, a chain
//! of three redirects and its end (3 × 302, 200), one redirect not followed
//! (302), a chain longer than its limit of 2 (3 × 302, the last one failed
//! with `too_many_redirects`), and two echoes. With `--env OFF_LIST=HOST:PORT` it also asks the
//! target to redirect there, and checks that the hop fails with an error
//! that names it (run it on a node whose `--allow-target` leaves that host
//! out).
//!
//! The jar is the VU's, as in k6: it keeps the session cookie across
//! iterations, which the next iteration checks before it clears the jar and
//! logs in again.

use fusi_sdk::abi::ErrorKind;
use fusi_sdk::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Account {
    user: String,
}

#[derive(Deserialize)]
struct Cookies {
    cookie: Option<String>,
}

#[derive(Deserialize)]
struct Echo {
    headers: serde_json::Map<String, serde_json::Value>,
    body_len: usize,
}

impl Echo {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    }
}

fn iteration() {
    let base = env("TARGET").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let user = format!("vu{}", vu_id());
    let session = format!("user-{user}");

    if iteration_number() > 0 {
        check(
            "the jar keeps the session across iterations",
            http::cookie(&base, "session").as_deref() == Some(session.as_str()),
        );
        http::clear_cookies();
        check(
            "clear_cookies empties the jar",
            http::cookie(&base, "session").is_none(),
        );
    }

    group("login", || {
        let res = Request::post(&format!("{base}/login"))
            .form(&[("user", user.as_str()), ("password", "s3cret p@ss")])
            .send();
        check(
            "login: lands on the account page",
            res.status() == 200 && res.url() == format!("{base}/account"),
        );
        let account = res.json::<Account>().ok();
        check(
            "login: the account page knows the user",
            account.is_some_and(|a| a.user == user),
        );
        check(
            "login: the jar holds the session cookie",
            http::cookie(&base, "session").as_deref() == Some(session.as_str()),
        );
    });

    let res = http::get(&format!("{base}/cookies"));
    let sent = res.json::<Cookies>().ok().and_then(|c| c.cookie);
    check(
        "the cookie goes with later requests",
        sent == Some(format!("session={session}")),
    );

    let res = Request::get(&format!("{base}/redirect/3"))
        .discard_body()
        .send();
    check(
        "redirects: a chain of three is followed",
        res.status() == 200 && res.url() == format!("{base}/redirect/0"),
    );
    check(
        "redirects: a discarded body is empty",
        res.body().is_empty(),
    );

    let res = Request::get(&format!("{base}/redirect/1"))
        .max_redirects(0)
        .send();
    check(
        "redirects: max_redirects(0) returns the redirect",
        res.status() == 302 && res.header("location") == Some("/redirect/0"),
    );

    let res = Request::get(&format!("{base}/redirect/5"))
        .max_redirects(2)
        .send();
    check(
        "redirects: past the limit the last redirect comes with too_many_redirects",
        res.status() == 302
            && res.url() == format!("{base}/redirect/3")
            && res
                .error()
                .is_some_and(|e| e.kind == ErrorKind::TooManyRedirects),
    );

    let res = Request::get(&format!("{base}/echo"))
        .basic_auth("alice", "open sesame")
        .send();
    let echo = res.json::<Echo>().ok();
    check(
        "auth: basic credentials are encoded",
        echo.is_some_and(|e| e.header("authorization") == "Basic YWxpY2U6b3BlbiBzZXNhbWU="),
    );

    let form = http::Multipart::new().field("title", "holiday").file(
        "photo",
        "beach.bin",
        "application/octet-stream",
        vec![7u8; 1000],
    );
    let res = Request::post(&format!("{base}/echo"))
        .bearer("t0ken")
        .multipart(form)
        .send();
    let echo = res.json::<Echo>().ok();
    check(
        "multipart: sent with its boundary and a bearer token",
        echo.is_some_and(|e| {
            e.header("authorization") == "Bearer t0ken"
                && e.header("content-type")
                    .starts_with("multipart/form-data; boundary=")
                && e.body_len > 1000
        }),
    );

    if let Some(off_list) = env("OFF_LIST") {
        let to = format!("http%3A%2F%2F{}%2F", off_list.replace(':', "%3A"));
        let res = http::get(&format!("{base}/redirect-to?url={to}"));
        let named = res.error().is_some_and(|e| {
            e.kind == ErrorKind::Connect
                && e.message.contains("redirect 1")
                && e.message.contains(&off_list)
                && e.message.contains("--allow-target")
        });
        check(
            "a redirect off the allow list fails and names the hop",
            named,
        );
    }
}

fusi_sdk::scenario!(iteration = iteration);
