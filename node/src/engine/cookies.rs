//! A VU's cookie jar: what `Set-Cookie` stored, sent back with the requests
//! it matches, as a browser or k6's per-VU jar does.
//!
//! The rules are RFC 6265's basics (§5.2 to §5.4): a cookie is host-only
//! unless it names a `Domain` that the host is inside; `Path` defaults to
//! the request's directory; `Secure` cookies go over `https://` only;
//! `Max-Age` wins over `Expires`, and a cookie set to expire in the past
//! deletes the one it replaces. There is no public suffix list: a `Domain`
//! with no dot in it (`com`) is refused unless it is the host itself, and
//! an IP address only matches itself.
//!
//! The jar is bounded, because the target's headers are untrusted: at most
//! [`MAX_COOKIE_BYTES`] of name and value a cookie, [`MAX_PER_DOMAIN`] a
//! domain and [`MAX_COOKIES`] in all; past a bound the oldest cookie goes
//! (expired ones first). A header that does not parse is ignored, never an
//! error. Time comes in as seconds since the epoch, so tests need no clock.

/// The most bytes of name and value one cookie may have.
pub const MAX_COOKIE_BYTES: usize = 4096;
/// The most cookies one domain may hold.
pub const MAX_PER_DOMAIN: usize = 50;
/// The most cookies one jar may hold.
pub const MAX_COOKIES: usize = 300;

/// What a cookie is matched against: the parts of a request's URL.
#[derive(Debug, Clone, Copy)]
pub struct CookieUrl<'a> {
    /// Whether the URL is `https://`.
    pub https: bool,
    /// The host, without brackets for IPv6.
    pub host: &'a str,
    /// The path, without the query.
    pub path: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
struct Cookie {
    name: String,
    value: String,
    /// Lower case, without a leading dot.
    domain: String,
    /// Sent to `domain` only, not to its subdomains.
    host_only: bool,
    path: String,
    secure: bool,
    /// Seconds since the epoch; `None` for a session cookie, which lives as
    /// long as the jar.
    expires: Option<i64>,
    /// The order cookies were first stored in, for the header's order and
    /// for eviction.
    created: u64,
}

/// One VU's cookies.
#[derive(Debug, Default)]
pub struct CookieJar {
    cookies: Vec<Cookie>,
    /// The next cookie's `created`.
    next: u64,
}

impl CookieJar {
    /// How many cookies the jar holds (expired ones included until they
    /// are next looked at).
    pub fn len(&self) -> usize {
        self.cookies.len()
    }

    /// Whether the jar holds no cookies.
    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    /// Forgets every cookie.
    pub fn clear(&mut self) {
        self.cookies.clear();
    }

    /// Stores the cookie of one `Set-Cookie` header received from `url`;
    /// ignores a header that is malformed, too large or not for `url`.
    pub fn store(&mut self, url: CookieUrl<'_>, header: &[u8], now: i64) {
        let Some(cookie) = parse(url, header, now, self.next) else {
            return;
        };
        self.next += 1;
        let old = self.cookies.iter().position(|c| {
            c.name == cookie.name && c.domain == cookie.domain && c.path == cookie.path
        });
        let created = match old {
            Some(i) => self.cookies.swap_remove(i).created,
            None => cookie.created,
        };
        if cookie.expires.is_some_and(|at| at <= now) {
            return;
        }
        self.cookies.push(Cookie { created, ..cookie });
        self.bound(now);
    }

    /// The `Cookie` header for a request to `url`, if any cookie matches:
    /// longer paths first, then older cookies first (RFC 6265 §5.4).
    pub fn header(&mut self, url: CookieUrl<'_>, now: i64) -> Option<String> {
        self.cookies.retain(|c| c.expires.is_none_or(|at| at > now));
        let mut matching: Vec<&Cookie> = self.cookies.iter().filter(|c| c.matches(url)).collect();
        if matching.is_empty() {
            return None;
        }
        matching.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then(a.created.cmp(&b.created))
        });
        let mut header = String::new();
        for c in matching {
            if !header.is_empty() {
                header.push_str("; ");
            }
            header.push_str(&c.name);
            header.push('=');
            header.push_str(&c.value);
        }
        Some(header)
    }

    /// The value of the cookie called `name` that a request to `url` would
    /// send (the first in the header's order).
    pub fn get(&self, url: CookieUrl<'_>, name: &str, now: i64) -> Option<&str> {
        self.cookies
            .iter()
            .filter(|c| c.name == name && c.expires.is_none_or(|at| at > now) && c.matches(url))
            .min_by(|a, b| {
                b.path
                    .len()
                    .cmp(&a.path.len())
                    .then(a.created.cmp(&b.created))
            })
            .map(|c| c.value.as_str())
    }

    /// Drops expired cookies, then the oldest of a full domain and of a
    /// full jar. The jar is small (at most [`MAX_COOKIES`]), so a scan per
    /// stored cookie costs little next to the request that brought it.
    fn bound(&mut self, now: i64) {
        self.cookies.retain(|c| c.expires.is_none_or(|at| at > now));
        let Some(newest) = self.cookies.last().map(|c| c.domain.clone()) else {
            return;
        };
        while self.cookies.iter().filter(|c| c.domain == newest).count() > MAX_PER_DOMAIN {
            self.evict_oldest(|c| c.domain == newest);
        }
        while self.cookies.len() > MAX_COOKIES {
            self.evict_oldest(|_| true);
        }
    }

    fn evict_oldest(&mut self, among: impl Fn(&Cookie) -> bool) {
        let oldest = self
            .cookies
            .iter()
            .enumerate()
            .filter(|(_, c)| among(c))
            .min_by_key(|(_, c)| c.created)
            .map(|(i, _)| i);
        if let Some(i) = oldest {
            self.cookies.remove(i);
        }
    }
}

impl Cookie {
    fn matches(&self, url: CookieUrl<'_>) -> bool {
        (url.https || !self.secure)
            && if self.host_only {
                url.host.eq_ignore_ascii_case(&self.domain)
            } else {
                domain_matches(url.host, &self.domain)
            }
            && path_matches(url.path, &self.path)
    }
}

/// Parses one `Set-Cookie` header received from `url` (RFC 6265 §5.2, §5.3).
fn parse(url: CookieUrl<'_>, header: &[u8], now: i64, created: u64) -> Option<Cookie> {
    let header = std::str::from_utf8(header).ok()?;
    let mut parts = header.split(';');
    let (name, value) = parts.next()?.split_once('=')?;
    let (name, value) = (name.trim(), value.trim());
    // A cookie goes back inside a `Cookie` header: nothing in it may end
    // the pair or the header.
    let bad = |s: &str| s.chars().any(|c| c.is_control() || c == ';');
    if name.is_empty()
        || bad(name)
        || bad(value)
        || name.contains(['=', ' ', '\t', ','])
        || name.len() + value.len() > MAX_COOKIE_BYTES
    {
        return None;
    }
    let host = url.host.to_ascii_lowercase();
    let mut cookie = Cookie {
        name: name.to_owned(),
        value: value.to_owned(),
        domain: host.clone(),
        host_only: true,
        path: default_path(url.path).to_owned(),
        secure: false,
        expires: None,
        created,
    };
    let mut max_age = None;
    let mut expires = None;
    for attribute in parts {
        let (key, value) = match attribute.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (attribute.trim(), ""),
        };
        if key.eq_ignore_ascii_case("max-age") {
            let digits = value.strip_prefix('-').unwrap_or(value);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                // Beyond i64, the number is "forever" or "already past".
                let secs = value.parse::<i64>().unwrap_or(if value.starts_with('-') {
                    i64::MIN
                } else {
                    i64::MAX
                });
                max_age = Some(if secs <= 0 {
                    i64::MIN
                } else {
                    now.saturating_add(secs)
                });
            }
        } else if key.eq_ignore_ascii_case("expires") {
            if let Some(at) = parse_date(value) {
                expires = Some(at);
            }
        } else if key.eq_ignore_ascii_case("domain") {
            let domain = value
                .strip_prefix('.')
                .unwrap_or(value)
                .to_ascii_lowercase();
            if domain.is_empty() {
                continue;
            }
            if domain != host && (!domain.contains('.') || !domain_matches(&host, &domain)) {
                return None;
            }
            cookie.domain = domain;
            cookie.host_only = false;
        } else if key.eq_ignore_ascii_case("path") {
            if value.starts_with('/') && !bad(value) {
                cookie.path = value.to_owned();
            }
        } else if key.eq_ignore_ascii_case("secure") {
            cookie.secure = true;
        }
    }
    if cookie.path.len() + cookie.domain.len() > MAX_COOKIE_BYTES {
        return None;
    }
    cookie.expires = max_age.or(expires);
    Some(cookie)
}

/// RFC 6265 §5.1.3: `host` is `domain` or inside it, and is a name, not
/// an IP address.
fn domain_matches(host: &str, domain: &str) -> bool {
    if host.eq_ignore_ascii_case(domain) {
        return true;
    }
    host.len() > domain.len()
        && host.parse::<std::net::IpAddr>().is_err()
        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
        && host.as_bytes()[host.len() - domain.len()..].eq_ignore_ascii_case(domain.as_bytes())
}

/// RFC 6265 §5.1.4: the request's directory.
fn default_path(path: &str) -> &str {
    if !path.starts_with('/') {
        return "/";
    }
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// RFC 6265 §5.1.4: `path` is `cookie_path` or below it.
fn path_matches(path: &str, cookie_path: &str) -> bool {
    let path = if path.is_empty() { "/" } else { path };
    path == cookie_path
        || (path.starts_with(cookie_path)
            && (cookie_path.ends_with('/')
                || path.as_bytes().get(cookie_path.len()) == Some(&b'/')))
}

/// RFC 6265 §5.1.1's lenient date: a time, a day, a month and a year in
/// any order among delimiters, as servers write `Expires` in several
/// formats. Seconds since the epoch, or `None` for no such date.
fn parse_date(text: &str) -> Option<i64> {
    let mut time = None;
    let mut day = None;
    let mut month = None;
    let mut year = None;
    let tokens = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|t| !t.is_empty());
    for token in tokens {
        if time.is_none()
            && let Some(t) = parse_time(token)
        {
            time = Some(t);
        } else if day.is_none()
            && (1..=2).contains(&token.len())
            && token.bytes().all(|b| b.is_ascii_digit())
        {
            day = token.parse::<u32>().ok();
        } else if month.is_none()
            && let Some(m) = parse_month(token)
        {
            month = Some(m);
        } else if year.is_none()
            && (2..=4).contains(&token.len())
            && token.bytes().all(|b| b.is_ascii_digit())
        {
            year = token.parse::<i64>().ok();
        }
    }
    let (hour, minute, second) = time?;
    let (day, month) = (day?, month?);
    let year = match year? {
        y @ 70..=99 => y + 1900,
        y @ 0..=69 => y + 2000,
        y => y,
    };
    if !(1..=31).contains(&day) || year < 1601 || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + i64::from(hour * 3600 + minute * 60 + second))
}

fn parse_time(token: &str) -> Option<(u32, u32, u32)> {
    let mut parts = token.split(':');
    let mut next = || {
        parts
            .next()
            .filter(|p| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
    };
    let t = (next()?, next()?, next()?);
    parts.next().is_none().then_some(t)
}

fn parse_month(token: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let prefix = token.get(..3)?.to_ascii_lowercase();
    MONTHS
        .iter()
        .position(|m| *m == prefix)
        .map(|i| i as u32 + 1)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn url(spec: &str) -> CookieUrl<'_> {
        let (https, rest) = match spec.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, spec.strip_prefix("http://").unwrap_or(spec)),
        };
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        CookieUrl { https, host, path }
    }

    fn jar_with(from: &str, headers: &[&str]) -> CookieJar {
        let mut jar = CookieJar::default();
        for h in headers {
            jar.store(url(from), h.as_bytes(), NOW);
        }
        jar
    }

    #[test]
    fn host_only_cookies_go_back_to_their_host_only() {
        let mut jar = jar_with("http://a.example.com/", &["sid=1"]);
        assert_eq!(
            jar.header(url("http://a.example.com/x"), NOW).as_deref(),
            Some("sid=1")
        );
        assert_eq!(
            jar.header(url("http://A.EXAMPLE.com/"), NOW).as_deref(),
            Some("sid=1")
        );
        assert_eq!(jar.header(url("http://b.a.example.com/"), NOW), None);
        assert_eq!(jar.header(url("http://example.com/"), NOW), None);
    }

    #[test]
    fn a_domain_cookie_reaches_subdomains_and_a_foreign_domain_is_refused() {
        let mut jar = jar_with(
            "http://www.example.com/",
            &[
                "d=1; Domain=.Example.com",
                "evil=1; Domain=other.com",
                "tld=1; Domain=com",
            ],
        );
        assert_eq!(jar.len(), 1);
        assert_eq!(
            jar.header(url("http://example.com/"), NOW).as_deref(),
            Some("d=1")
        );
        assert_eq!(
            jar.header(url("http://x.y.example.com/"), NOW).as_deref(),
            Some("d=1")
        );
        assert_eq!(jar.header(url("http://notexample.com/"), NOW), None);
        // An IP address is only ever its own domain.
        let mut jar = jar_with(
            "http://127.0.0.1/",
            &["a=1; Domain=127.0.0.1", "b=1; Domain=0.0.1"],
        );
        assert_eq!(
            jar.header(url("http://127.0.0.1/"), NOW).as_deref(),
            Some("a=1")
        );
        assert_eq!(jar.len(), 1);
        let jar = jar_with("http://localhost/", &["l=1; Domain=localhost"]);
        assert_eq!(jar.len(), 1, "a dotless domain that is the host itself");
    }

    #[test]
    fn paths_default_to_the_directory_and_match_on_segments() {
        let mut jar = jar_with(
            "http://h/account/login",
            &["a=1", "b=2; Path=/account/settings", "c=3; Path=/"],
        );
        assert_eq!(
            jar.header(url("http://h/account/settings/x"), NOW)
                .as_deref(),
            Some("b=2; a=1; c=3"),
            "longer paths first, then older first"
        );
        assert_eq!(
            jar.header(url("http://h/account"), NOW).as_deref(),
            Some("a=1; c=3")
        );
        assert_eq!(
            jar.header(url("http://h/accounts"), NOW).as_deref(),
            Some("c=3")
        );
        assert_eq!(jar.header(url("http://h"), NOW).as_deref(), Some("c=3"));
        assert_eq!(default_path("/login"), "/");
        assert_eq!(default_path(""), "/");
        assert_eq!(default_path("/a/b/"), "/a/b");
    }

    #[test]
    fn secure_cookies_need_https() {
        let mut jar = jar_with("https://h/", &["s=1; Secure; HttpOnly", "p=2"]);
        assert_eq!(
            jar.header(url("https://h/"), NOW).as_deref(),
            Some("s=1; p=2")
        );
        assert_eq!(jar.header(url("http://h/"), NOW).as_deref(), Some("p=2"));
    }

    #[test]
    fn expiry_deletes_and_max_age_wins_over_expires() {
        let mut jar = jar_with("http://h/", &["a=1", "b=2; Max-Age=60"]);
        assert_eq!(
            jar.header(url("http://h/"), NOW).as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(
            jar.header(url("http://h/"), NOW + 61).as_deref(),
            Some("a=1")
        );
        // Setting the same cookie expired deletes it.
        jar.store(url("http://h/"), b"a=gone; Max-Age=0", NOW);
        assert_eq!(jar.header(url("http://h/"), NOW), None);
        jar.store(
            url("http://h/"),
            b"c=1; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            NOW,
        );
        assert!(jar.is_empty());
        jar.store(
            url("http://h/"),
            b"d=1; Max-Age=100; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            NOW,
        );
        assert_eq!(jar.get(url("http://h/"), "d", NOW), Some("1"));
        jar.store(
            url("http://h/"),
            b"e=1; Max-Age=99999999999999999999999",
            NOW,
        );
        assert_eq!(jar.get(url("http://h/"), "e", NOW), Some("1"));
        jar.store(
            url("http://h/"),
            b"e=1; Max-Age=-99999999999999999999999",
            NOW,
        );
        assert_eq!(jar.get(url("http://h/"), "e", NOW), None);
        // An unreadable Max-Age is ignored.
        jar.store(url("http://h/"), b"f=1; Max-Age=soon", NOW);
        assert_eq!(jar.get(url("http://h/"), "f", NOW + 1_000_000), Some("1"));
    }

    #[test]
    fn a_cookie_replaces_the_one_of_its_name_domain_and_path_and_keeps_its_place() {
        let mut jar = jar_with("http://h/", &["a=1", "b=1", "a=2", "a=3; Path=/x"]);
        assert_eq!(
            jar.header(url("http://h/"), NOW).as_deref(),
            Some("a=2; b=1")
        );
        assert_eq!(
            jar.header(url("http://h/x"), NOW).as_deref(),
            Some("a=3; a=2; b=1")
        );
        assert_eq!(jar.get(url("http://h/x"), "a", NOW), Some("3"));
        jar.clear();
        assert_eq!(jar.header(url("http://h/"), NOW), None);
    }

    #[test]
    fn dates_in_the_formats_servers_write_parse() {
        let at = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06-Nov-1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_date(text), Some(at), "{text}");
        }
        assert_eq!(
            parse_date("Wed, 21 Oct 2026 07:28:00 GMT"),
            Some(1_792_567_680)
        );
        for bad in [
            "",
            "tomorrow",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "06 Nov 1994",
            "Sun, 06 Nov 1994 25:00:00",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_jar_is_bounded_per_domain_and_in_all() {
        let mut jar = CookieJar::default();
        for i in 0..2 * MAX_PER_DOMAIN {
            jar.store(url("http://h/"), format!("c{i}=1").as_bytes(), NOW);
        }
        assert_eq!(jar.len(), MAX_PER_DOMAIN);
        assert_eq!(
            jar.get(url("http://h/"), "c0", NOW),
            None,
            "the oldest went"
        );
        assert_eq!(
            jar.get(
                url("http://h/"),
                &format!("c{}", 2 * MAX_PER_DOMAIN - 1),
                NOW
            ),
            Some("1")
        );
        for d in 0..20 {
            for i in 0..MAX_PER_DOMAIN {
                let host = format!("h{d}.example");
                let u = CookieUrl {
                    https: false,
                    host: &host,
                    path: "/",
                };
                jar.store(u, format!("c{i}=1").as_bytes(), NOW);
            }
        }
        assert_eq!(jar.len(), MAX_COOKIES);
        let big = format!("big={}", "x".repeat(MAX_COOKIE_BYTES));
        let mut jar = jar_with("http://h/", &[&big]);
        assert!(
            jar.is_empty(),
            "a cookie over {MAX_COOKIE_BYTES} bytes is refused"
        );
        assert_eq!(jar.header(url("http://h/"), NOW), None);
    }

    #[test]
    fn hostile_and_malformed_headers_are_ignored() {
        let jar = jar_with(
            "http://h/",
            &[
                "",
                "=",
                "=value",
                "novalue",
                ";;;",
                "a b=1",
                "a=1\r\nInjected: yes",
                "a=\u{7f}",
                "ok=1; Path=relative; Domain=; Max-Age=; Expires=; =; Secure=no",
                "\u{feff}=1",
            ],
        );
        assert_eq!(jar.len(), 2);
        let mut jar = jar;
        assert_eq!(
            jar.header(url("https://h/"), NOW).as_deref(),
            Some("ok=1; \u{feff}=1")
        );
        let mut jar = CookieJar::default();
        jar.store(url("http://h/"), &[0xff, b'=', 0xfe], NOW);
        assert!(jar.is_empty(), "not UTF-8");
        for seed in 0..3000u32 {
            let garbage: Vec<u8> = (0..(seed % 113))
                .map(|i| {
                    let b = (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 40_503) >> 11) as u8;
                    b"=;, .-:/aZ09\t"[usize::from(b) % 13]
                })
                .collect();
            jar.store(url("http://h/p/q"), &garbage, NOW);
            let _ = jar.header(url("http://h/p/q"), NOW);
        }
        assert!(jar.len() <= MAX_PER_DOMAIN);
    }
}
