//! In-process tests of the target, over real loopback connections.

use std::future::Future;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::{Latency, SourceLatency, StallWindow, Stats, Target, TargetConfig, spawn_target};

/// Every test is bounded, whatever goes wrong.
async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(out) => out,
        Err(_) => panic!("test timed out"),
    }
}

/// A minimal HTTP/1.1 client over one connection.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Client {
    async fn connect(target: &Target) -> Client {
        let stream = TcpStream::connect(target.addr()).await.expect("connect");
        Client::handshake(target, stream).await
    }

    /// Connects from `source` (any port), as a region's load would.
    async fn connect_from(target: &Target, source: Ipv4Addr) -> Client {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind the client to its source address");
        let stream = socket.connect(target.addr()).await.expect("connect");
        assert_eq!(
            stream.local_addr().expect("local address").ip(),
            IpAddr::V4(source)
        );
        Client::handshake(target, stream).await
    }

    async fn handshake(target: &Target, stream: TcpStream) -> Client {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Client {
            sender,
            host: target.addr().to_string(),
        }
    }

    async fn send(&mut self, method: Method, path: &str, body: &[u8]) -> (StatusCode, Bytes) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.host)
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        let resp = self.sender.send_request(req).await.expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }

    async fn get(&mut self, path: &str) -> (StatusCode, Bytes) {
        self.send(Method::GET, path, b"").await
    }

    /// A request with headers; the response's status, headers and body.
    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.host);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        let resp = self.sender.send_request(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (parts.status, parts.headers, body)
    }
}

/// One request on a fresh connection.
async fn get(target: &Target, path: &str) -> (StatusCode, Bytes) {
    Client::connect(target).await.get(path).await
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("JSON body")
}

async fn start(cfg: TargetConfig) -> Target {
    Target::start(cfg).await.expect("start target")
}

#[tokio::test]
async fn routes_answer_and_stats_count_them() {
    bounded(async {
        let target = start(TargetConfig::default()).await;
        assert!(target.url().starts_with("http://127.0.0.1:"));
        let mut c = Client::connect(&target).await;

        assert_eq!(c.get("/").await, (StatusCode::OK, Bytes::from("hello\n")));
        assert_eq!(
            c.get("/hello").await,
            (StatusCode::OK, Bytes::from("hello\n"))
        );

        let (status, body) = c.send(Method::POST, "/items", br#"{"a": [1, 2]}"#).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(
            json(&body),
            serde_json::json!({"id": 1, "item": {"a": [1, 2]}})
        );
        let (status, body) = c.send(Method::POST, "/items", b"7").await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(json(&body), serde_json::json!({"id": 2, "item": 7}));
        let (status, body) = c.send(Method::POST, "/items", b"{nope").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(json(&body)["error"].is_string());

        let (status, body) = c.get("/items/1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            json(&body),
            serde_json::json!({"id": 1, "item": {"a": [1, 2]}})
        );
        assert_eq!(c.get("/items/3").await.0, StatusCode::NOT_FOUND);
        assert_eq!(c.get("/items/x").await.0, StatusCode::BAD_REQUEST);

        assert_eq!(c.get("/status/418").await.0, StatusCode::IM_A_TEAPOT);
        let (status, body) = c.get("/status/204").await;
        assert_eq!((status, body.len()), (StatusCode::NO_CONTENT, 0));
        assert_eq!(c.get("/status/99").await.0, StatusCode::BAD_REQUEST);
        assert_eq!(c.get("/status/600").await.0, StatusCode::BAD_REQUEST);
        assert_eq!(c.get("/status/abc").await.0, StatusCode::BAD_REQUEST);

        let (status, body) = c.get("/bytes/1000").await;
        assert_eq!((status, body.len()), (StatusCode::OK, 1000));
        assert_eq!(c.get("/bytes/0").await, (StatusCode::OK, Bytes::new()));
        assert_eq!(c.get("/bytes/99999999999").await.0, StatusCode::BAD_REQUEST);

        assert_eq!(c.get("/delay/1").await.0, StatusCode::OK);
        assert_eq!(c.get("/delay/60001").await.0, StatusCode::BAD_REQUEST);

        let (status, body) = c.send(Method::PUT, "/echo?x=1", b"abc").await;
        assert_eq!(status, StatusCode::OK);
        let echo = json(&body);
        assert_eq!(echo["method"], "PUT");
        assert_eq!(echo["path"], "/echo");
        assert_eq!(echo["query"], "x=1");
        assert_eq!(echo["body_len"], 3);
        assert_eq!(echo["headers"]["host"], target.addr().to_string());

        assert_eq!(c.get("/nope").await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            c.send(Method::DELETE, "/hello", b"").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );

        let stats = target.stats();
        assert_eq!(stats.requests, 21);
        assert_eq!(stats.connections, 1);
        assert_eq!(stats.by_status.values().sum::<u64>(), stats.requests);
        assert_eq!(stats.by_status.get(&200), Some(&7));
        assert_eq!(stats.by_status.get(&201), Some(&2));
        assert_eq!(stats.by_status.get(&400), Some(&7));
        assert_eq!(stats.by_status.get(&404), Some(&2));
        assert_eq!(stats.errors_injected, 0);
        assert_eq!(stats.stalled, 0);
        assert_eq!(stats.bytes_received, 13 + 1 + 5 + 3);
        assert!(stats.bytes_sent >= 1000 + 2 * 6);

        // The stats endpoint reports the same, and is not counted, neither
        // on a new connection nor on a counted one.
        let (status, body) = get(&target, "/__fusi/stats").await;
        assert_eq!(status, StatusCode::OK);
        let served: Stats = serde_json::from_slice(&body).expect("stats JSON");
        assert_eq!(served, stats);
        assert_eq!(c.get("/__fusi/stats").await.0, StatusCode::OK);
        assert_eq!(target.stats(), stats);

        target.reset_stats();
        assert_eq!(target.stats(), Stats::default());
        // The same connection is counted again after a reset.
        c.get("/").await;
        let after = target.stats();
        assert_eq!((after.requests, after.connections), (1, 1));

        let (status, body) = c.send(Method::DELETE, "/__fusi/stats", b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            serde_json::from_slice::<Stats>(&body).expect("stats"),
            after
        );
        assert_eq!(target.stats(), Stats::default());

        let last = target.shutdown().await;
        assert_eq!(last, Stats::default());
    })
    .await;
}

#[tokio::test]
async fn session_routes_redirect_set_cookies_and_want_them() {
    bounded(async {
        let target = start(TargetConfig::default()).await;
        let mut c = Client::connect(&target).await;
        let location = |h: &http::HeaderMap| {
            h.get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (status, headers, _) = c.exchange(Method::GET, "/redirect/2", &[], b"").await;
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(location(&headers).as_deref(), Some("/redirect/1"));
        assert_eq!(
            c.get("/redirect/0").await,
            (StatusCode::OK, Bytes::from("redirected\n"))
        );
        assert_eq!(c.get("/redirect/101").await.0, StatusCode::BAD_REQUEST);

        let (status, headers, _) = c
            .exchange(
                Method::POST,
                "/redirect-to?url=http%3A%2F%2F127.0.0.9%3A1%2Fx&status=307",
                &[],
                b"",
            )
            .await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(location(&headers).as_deref(), Some("http://127.0.0.9:1/x"));
        assert_eq!(
            c.get("/redirect-to?url=/x&status=200").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(c.get("/redirect-to").await.0, StatusCode::BAD_REQUEST);

        let (status, headers, _) = c
            .exchange(Method::GET, "/cookies/set?a=1&b=2", &[], b"")
            .await;
        assert_eq!(status, StatusCode::FOUND);
        let set: Vec<_> = headers.get_all(http::header::SET_COOKIE).iter().collect();
        assert_eq!(set, ["a=1; Path=/", "b=2; Path=/"]);
        let (_, _, body) = c
            .exchange(Method::GET, "/cookies", &[("cookie", "a=1; b=2")], b"")
            .await;
        assert_eq!(json(&body), serde_json::json!({"cookie": "a=1; b=2"}));
        assert_eq!(
            json(&c.get("/cookies").await.1),
            serde_json::json!({"cookie": null})
        );

        let (status, headers, _) = c
            .exchange(
                Method::POST,
                "/login",
                &[("content-type", "application/x-www-form-urlencoded")],
                b"user=alice&password=x",
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location(&headers).as_deref(), Some("/account"));
        assert_eq!(
            headers
                .get(http::header::SET_COOKIE)
                .and_then(|v| v.to_str().ok()),
            Some("session=user-alice; Path=/; HttpOnly")
        );
        assert_eq!(
            c.send(Method::POST, "/login", b"user=a%20b").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(c.get("/login").await.0, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            target.stats().logins,
            std::collections::BTreeMap::from([("alice".to_owned(), 1)]),
            "the target counts logins by user, and not the refused one"
        );
        let (status, _, body) = c
            .exchange(
                Method::GET,
                "/account",
                &[("cookie", "x=1; session=user-alice")],
                b"",
            )
            .await;
        assert_eq!(
            (status, json(&body)),
            (StatusCode::OK, serde_json::json!({"user": "alice"}))
        );
        assert_eq!(c.get("/account").await.0, StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn latency_is_added() {
    bounded(async {
        let fixed = Duration::from_millis(150);
        let target = start(TargetConfig {
            latency: Latency::Fixed(fixed),
            ..Default::default()
        })
        .await;
        let mut c = Client::connect(&target).await;
        for _ in 0..2 {
            let t0 = Instant::now();
            assert_eq!(c.get("/hello").await.0, StatusCode::OK);
            assert!(t0.elapsed() >= fixed, "{:?}", t0.elapsed());
        }
        // Knobs do not apply to the stats endpoint.
        let t0 = Instant::now();
        assert_eq!(c.get("/__fusi/stats").await.0, StatusCode::OK);
        assert!(t0.elapsed() < fixed, "{:?}", t0.elapsed());
        target.shutdown().await;

        let (min, max) = (Duration::from_millis(60), Duration::from_millis(90));
        let target = start(TargetConfig {
            latency: Latency::Uniform { min, max },
            ..Default::default()
        })
        .await;
        let t0 = Instant::now();
        assert_eq!(get(&target, "/").await.0, StatusCode::OK);
        assert!(t0.elapsed() >= min, "{:?}", t0.elapsed());
        target.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn source_latency_applies_to_its_range_only() {
    bounded(async {
        let common = Duration::from_millis(20);
        let extra = Duration::from_millis(200);
        let target = start(TargetConfig {
            latency: Latency::Fixed(common),
            source_latency: vec![SourceLatency {
                from: "127.0.2.0/24".parse().expect("literal range"),
                latency: Latency::Fixed(extra),
            }],
            ..Default::default()
        })
        .await;

        let mut far = Client::connect_from(&target, Ipv4Addr::new(127, 0, 2, 1)).await;
        let mut near = Client::connect_from(&target, Ipv4Addr::LOCALHOST).await;
        for _ in 0..2 {
            let t0 = Instant::now();
            assert_eq!(far.get("/hello").await.0, StatusCode::OK);
            assert!(t0.elapsed() >= common + extra, "{:?}", t0.elapsed());

            let t0 = Instant::now();
            assert_eq!(near.get("/hello").await.0, StatusCode::OK);
            let took = t0.elapsed();
            assert!(common <= took && took < common + extra, "{took:?}");
        }
        assert_eq!(target.stats().requests, 4);
        target.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn stall_window_holds_arriving_and_in_flight_requests() {
    bounded(async {
        let after = Duration::from_millis(200);
        let duration = Duration::from_millis(400);
        let target = start(TargetConfig {
            stall: Some(StallWindow { after, duration }),
            ..Default::default()
        })
        .await;
        let started = Instant::now();
        let window_end = started + after + duration;

        // In flight when the window opens: answered only when it closes.
        let mut early = Client::connect(&target).await;
        let in_flight = tokio::spawn(async move { early.get("/delay/300").await });
        // Before the window: not held.
        assert_eq!(get(&target, "/").await.0, StatusCode::OK);
        assert_eq!(target.stats().stalled, 0);

        tokio::time::sleep_until(started + after + Duration::from_millis(50)).await;
        let mut c = Client::connect(&target).await;
        assert_eq!(c.get("/hello").await.0, StatusCode::OK);
        assert!(
            Instant::now() >= window_end,
            "arriving request was not held"
        );
        // The stats endpoint is never held.
        assert!(c.get("/__fusi/stats").await.0 == StatusCode::OK);

        assert_eq!(in_flight.await.expect("task").0, StatusCode::OK);
        assert!(
            Instant::now() >= window_end,
            "in-flight request was not held"
        );

        // After the window: not held.
        let t0 = Instant::now();
        assert_eq!(c.get("/").await.0, StatusCode::OK);
        assert!(t0.elapsed() < Duration::from_millis(200));

        let stats = target.shutdown().await;
        assert_eq!(stats.stalled, 2);
        assert_eq!(stats.requests, 4);
    })
    .await;
}

#[tokio::test]
async fn error_rate_one_injects_every_time() {
    bounded(async {
        let target = start(TargetConfig {
            error_rate: 1.0,
            error_status: 429,
            ..Default::default()
        })
        .await;
        let mut c = Client::connect(&target).await;
        for path in ["/", "/items/1", "/nope", "/status/200"] {
            let (status, body) = c.get(path).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{path}");
            assert_eq!(body, Bytes::from("injected error\n"));
        }
        // Error injection does not apply to the stats endpoint either.
        assert_eq!(c.get("/__fusi/stats").await.0, StatusCode::OK);
        let stats = target.shutdown().await;
        assert_eq!(stats.requests, 4);
        assert_eq!(stats.errors_injected, 4);
        assert_eq!(stats.by_status.get(&429), Some(&4));
        assert_eq!(stats.by_status.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn error_rate_zero_and_half() {
    bounded(async {
        let target = start(TargetConfig {
            error_rate: 0.5,
            ..Default::default()
        })
        .await;
        let mut c = Client::connect(&target).await;
        for _ in 0..200 {
            c.get("/").await;
        }
        let stats = target.shutdown().await;
        let injected = stats.errors_injected;
        // Binomial(200, 0.5): 60..=140 is more than 8 standard deviations.
        assert!((60..=140).contains(&injected), "{injected}");
        assert_eq!(stats.by_status.get(&503), Some(&injected));
        assert_eq!(stats.by_status.get(&200), Some(&(200 - injected)));
    })
    .await;
}

#[tokio::test]
async fn shutdown_cuts_long_requests_short() {
    bounded(async {
        let target = start(TargetConfig::default()).await;
        let mut c = Client::connect(&target).await;
        let slow = tokio::spawn(async move { c.get("/delay/60000").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = Instant::now();
        let stats = target.shutdown().await;
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert_eq!(slow.await.expect("task").0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(stats.by_status.get(&503), Some(&1));
    })
    .await;
}

#[tokio::test]
async fn invalid_config_is_rejected() {
    let bad = TargetConfig {
        error_rate: 2.0,
        ..Default::default()
    };
    assert!(Target::start(bad).await.is_err());
    let open = TargetConfig {
        listen: "0.0.0.0:0".parse().expect("literal address"),
        ..Default::default()
    };
    let err = Target::start(open).await.expect_err("non-loopback refused");
    assert!(format!("{err:#}").contains("non-loopback"));
}

#[tokio::test]
async fn body_limit() {
    use super::read_body;
    let headers = http::HeaderMap::new();
    let ok = read_body(Full::new(Bytes::from("0123456789")), &headers, 10).await;
    assert_eq!(ok.expect("within limit"), Bytes::from("0123456789"));
    let over = read_body(Full::new(Bytes::from("0123456789X")), &headers, 10).await;
    let rejected = over.expect_err("over limit");
    assert_eq!(rejected.response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(rejected.bytes_read, 11);

    let mut declared = http::HeaderMap::new();
    declared.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from_static("11"),
    );
    let rejected = read_body(Full::new(Bytes::new()), &declared, 10)
        .await
        .expect_err("declared over limit");
    assert_eq!(rejected.response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(rejected.bytes_read, 0);
}

#[test]
fn items_are_bounded_and_ids_stay_consecutive() {
    let mut items = super::Items::default();
    for i in 0..super::MAX_ITEMS + 5 {
        let id = items.insert(Bytes::from(i.to_string()));
        assert_eq!(id, u64::try_from(i).expect("small") + 1);
    }
    assert_eq!(items.items.len(), super::MAX_ITEMS);
    assert_eq!(items.get(5), None);
    assert_eq!(items.get(6), Some(Bytes::from("5")));
    assert_eq!(items.get(10_005), Some(Bytes::from("10004")));
    assert_eq!(items.get(10_006), None);
    assert_eq!(items.get(0), None);
}

#[test]
fn spawn_target_serves_sync_tests() {
    let target = spawn_target(TargetConfig::default()).expect("spawn target");
    assert!(target.url().starts_with("http://127.0.0.1:"));
    let raw_get = |path: &str| -> String {
        let mut stream = std::net::TcpStream::connect(target.addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            target.addr()
        )
        .expect("write");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("read");
        reply
    };
    let reply = raw_get("/hello");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nhello\n"), "{reply}");
    assert!(raw_get("/__fusi/stats").contains("\"requests\":1"));

    let stats = target.stats();
    assert_eq!((stats.requests, stats.connections), (1, 1));
    target.reset_stats();
    assert_eq!(target.stats(), Stats::default());

    let addr = target.addr();
    drop(target);
    // Dropping the handle stopped the server.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn spawn_target_reports_bad_config() {
    let bad = TargetConfig {
        error_status: 42,
        ..Default::default()
    };
    assert!(spawn_target(bad).is_err());
}

#[tokio::test]
async fn http2_prior_knowledge_works() {
    bounded(async {
        let target = start(TargetConfig::default()).await;
        let stream = TcpStream::connect(target.addr()).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        for _ in 0..3 {
            let req = Request::builder()
                .uri(format!("{}/echo", target.url()))
                .body(Full::new(Bytes::new()))
                .expect("request");
            let resp = sender.send_request(req).await.expect("response");
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(json(&body)["version"], "HTTP/2.0");
        }
        let stats = target.shutdown().await;
        assert_eq!((stats.requests, stats.connections), (3, 1));
    })
    .await;
}

/// A TLS client that trusts only `target`'s self-signed certificate and
/// offers `alpn`; returns the established TLS stream.
async fn tls_connect(
    target: &Target,
    server_name: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::{CertificateDer, ServerName};

    let cert = target
        .certificate_der()
        .expect("TLS target has a certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert))
        .expect("certificate is a valid trust anchor");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let tcp = TcpStream::connect(target.addr()).await.expect("connect");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

fn tls_config() -> TargetConfig {
    TargetConfig {
        tls: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn tls_h2_is_negotiated_by_alpn() {
    bounded(async {
        let target = start(tls_config()).await;
        assert!(
            target.url().starts_with("https://127.0.0.1:"),
            "{}",
            target.url()
        );

        let tls = tls_connect(&target, "127.0.0.1", &[b"h2", b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tls),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);

        let send = |path: &str| {
            Request::builder()
                .uri(format!("{}{path}", target.url()))
                .body(Full::new(Bytes::new()))
                .expect("request")
        };
        let resp = sender.send_request(send("/hello")).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, Bytes::from("hello\n"));

        let resp = sender.send_request(send("/echo")).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(json(&body)["version"], "HTTP/2.0");

        let stats = target.shutdown().await;
        assert_eq!((stats.requests, stats.connections), (2, 1));
    })
    .await;
}

#[tokio::test]
async fn tls_http1_when_alpn_offers_only_http1() {
    bounded(async {
        let target = start(tls_config()).await;
        // The certificate is valid for `localhost` too.
        let tls = tls_connect(&target, "localhost", &[b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut c = Client {
            sender,
            host: format!("localhost:{}", target.addr().port()),
        };
        assert_eq!(
            c.get("/hello").await,
            (StatusCode::OK, Bytes::from("hello\n"))
        );
        let (status, body) = c.get("/echo").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["version"], "HTTP/1.1");

        // No ALPN at all is HTTP/1.1 too.
        let tls = tls_connect(&target, "127.0.0.1", &[]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), None);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut c = Client {
            sender,
            host: target.addr().to_string(),
        };
        assert_eq!(c.get("/").await.0, StatusCode::OK);

        let stats = target.shutdown().await;
        assert_eq!((stats.requests, stats.connections), (3, 2));
    })
    .await;
}

#[tokio::test]
async fn tls_handshake_failures_are_not_counted() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    bounded(async {
        let target = start(tls_config()).await;

        // Plain HTTP to the TLS port: the handshake fails and the connection
        // is closed, with at most a TLS alert as the answer.
        let mut plain = TcpStream::connect(target.addr()).await.expect("connect");
        plain
            .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut reply = Vec::new();
        // A reset instead of a clean close is fine too.
        let _ = plain.read_to_end(&mut reply).await;
        assert!(!reply.starts_with(b"HTTP/"), "{reply:?}");

        // A client that connects and hangs up without a word.
        drop(TcpStream::connect(target.addr()).await.expect("connect"));

        // The server keeps serving TLS clients.
        let tls = tls_connect(&target, "127.0.0.1", &[b"h2"]).await;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tls),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let req = Request::builder()
            .uri(format!("{}/hello", target.url()))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);

        // A client that connects and never sends a byte does not delay shutdown.
        let _silent = TcpStream::connect(target.addr()).await.expect("connect");
        let t0 = Instant::now();
        let stats = target.shutdown().await;
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert_eq!((stats.requests, stats.connections), (1, 1));
        assert_eq!(stats.by_status.get(&200), Some(&1));
    })
    .await;
}

#[test]
fn spawned_tls_target_exposes_its_certificate() {
    let plain = spawn_target(TargetConfig::default()).expect("spawn target");
    assert_eq!(plain.certificate_der(), None);
    drop(plain);

    let target = spawn_target(tls_config()).expect("spawn TLS target");
    assert!(
        target.url().starts_with("https://127.0.0.1:"),
        "{}",
        target.url()
    );
    let der = target.certificate_der().expect("certificate");
    // A DER SEQUENCE.
    assert_eq!(der.first(), Some(&0x30));
}

#[tokio::test]
async fn plain_target_has_no_certificate() {
    let target = start(TargetConfig::default()).await;
    assert_eq!(target.certificate_der(), None);
    assert!(target.url().starts_with("http://"));
    target.shutdown().await;
}

/// A WebSocket client to `path` on `target`.
async fn ws_client(target: &Target, path: &str) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(target.addr()).await.expect("connect");
    let url = format!("ws://{}{path}", target.addr());
    let (socket, resp) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("the upgrade succeeds");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket
}

#[tokio::test]
async fn websocket_routes_echo_chat_and_count_messages_apart_from_requests() {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let target = start(TargetConfig::default()).await;
    bounded(async {
        let mut echo = ws_client(&target, "/ws/echo").await;
        echo.send(Message::text("one")).await.expect("send");
        echo.send(Message::binary(vec![1u8, 2, 3]))
            .await
            .expect("send");
        let got = echo.next().await.expect("a message").expect("no error");
        assert_eq!(got, Message::text("one"));
        let got = echo.next().await.expect("a message").expect("no error");
        assert_eq!(got, Message::binary(vec![1u8, 2, 3]));
        echo.close(None).await.expect("close");

        // Two clients in room a, one in room b: a's messages reach both
        // of a's clients, the sender included, and nobody in b.
        let mut a1 = ws_client(&target, "/ws/chat?room=a").await;
        let mut a2 = ws_client(&target, "/ws/chat?room=a").await;
        let mut b = ws_client(&target, "/ws/chat?room=b").await;
        a1.send(Message::text("hi")).await.expect("send");
        for client in [&mut a1, &mut a2] {
            let got = client.next().await.expect("a message").expect("no error");
            assert_eq!(got, Message::text("hi"));
        }
        b.send(Message::text("b only")).await.expect("send");
        let got = b.next().await.expect("a message").expect("no error");
        assert_eq!(got, Message::text("b only"));
        for mut client in [a1, a2, b] {
            client.close(None).await.expect("close");
            while let Some(Ok(_)) = client.next().await {}
        }

        // A plain GET to a WebSocket route is told to upgrade.
        let (status, _) = get(&target, "/ws/echo").await;
        assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
        let (status, _) = get(&target, "/ws/nothing").await;
        assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
    })
    .await;
    let stats = target.shutdown().await;
    assert_eq!(stats.ws_sessions, 4);
    assert_eq!(stats.ws_msgs_received, 2 + 1 + 1);
    assert_eq!(stats.ws_msgs_sent, 2 + 2 + 1);
    assert_eq!(stats.requests, 0, "upgrades and refusals are not requests");
}

#[tokio::test]
async fn a_websocket_room_is_bounded_and_a_large_chat_message_closes_its_sender() {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let target = start(TargetConfig::default()).await;
    bounded(async {
        let mut client = ws_client(&target, "/ws/chat?room=big").await;
        let big = "x".repeat(super::websocket::MAX_CHAT_MESSAGE + 1);
        client.send(Message::text(big)).await.expect("send");
        match client.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1009),
            other => panic!("expected a close with 1009, got {other:?}"),
        }
        let stream = TcpStream::connect(target.addr()).await.expect("connect");
        let url = format!("ws://{}/ws/chat", target.addr());
        let refused = tokio_tungstenite::client_async(url, stream).await;
        assert!(
            matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == StatusCode::BAD_REQUEST),
            "a chat without a room is refused: {refused:?}"
        );
    })
    .await;
    target.shutdown().await;
}
