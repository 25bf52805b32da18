//! fusi's local testnet: an HTTP target server with knobs, and a local mesh
//! of `fusi-node` processes.
//!
//! Tests, benchmarks and the demo need a server that misbehaves on request
//! and keeps honest counts, so that what the load generator reports can be
//! checked against what was actually received. [`Target`] is that server; it
//! runs in-process on a tokio runtime (or on its own thread with
//! [`spawn_target`]) and, by default, only on loopback.
//!
//! It speaks HTTP/1.1 and cleartext HTTP/2 on one port, or, with
//! [`TargetConfig::tls`], HTTPS with HTTP/2 or HTTP/1.1 chosen by ALPN and a
//! fresh self-signed certificate ([`Target::certificate_der`]) that a test
//! client can trust.
//!
//! [`Mesh`] starts `fusi-node up` processes on loopback, one
//! `127.0.R.0/24` address range per simulated region, for the mesh's
//! integration tests and `fusi-testnet up`; [`get_json`] reads their local
//! APIs. As root, with [`MeshConfig::netns`], each node runs in a network
//! namespace of its own instead (`10.200.R.i` on a bridge in a hub
//! namespace, the target in the hub, each API reached through a proxy on
//! loopback), so that a fault test can take a real link down
//! ([`Mesh::cut_off`]); [`netns_available`] says whether that works here. A target can add latency per client range ([`SourceLatency`]), so
//! that it looks near to one region and far from another.
//!
//! # Routes
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /`, `GET /hello` | `200 hello\n` (text/plain) |
//! | `POST /items` with a JSON body | `201 {"id": N, "item": <body>}`; invalid JSON: 400 |
//! | `GET /items/{id}` | `200 {"id": N, "item": ...}`, or 404 |
//! | `/status/{code}`, any method | that status, `200..=599`; else 400 |
//! | `/delay/{ms}`, any method | `200` after `ms` milliseconds (at most 60 000; else 400) |
//! | `GET /bytes/{n}` | `n` bytes (at most 10 MiB; else 400) |
//! | `/echo`, any method | JSON `{"method", "path", "query", "version", "headers", "body_len"}` |
//! | `/redirect/{n}`, any method | `302` to `/redirect/{n-1}` (relative), `200 redirected\n` at 0; `n` at most 100 |
//! | `/redirect-to?url=URL&status=S`, any method | a redirect to `URL` (anywhere), status `S` in 301, 302 (default), 303, 307, 308 |
//! | `GET /cookies` | JSON `{"cookie": "<the Cookie header>"}` (`null` without one) |
//! | `/cookies/set?NAME=VALUE&...`, any method | `302` to `/cookies`, setting each cookie with `Path=/` |
//! | `POST /login` with a form `user=NAME&...` | `303` to `/account`, setting `session=user-NAME; Path=/; HttpOnly`; no valid user: 400 |
//! | `GET /account` | `200 {"user": NAME}` with that `session` cookie; without it 401 |
//! | `GET /ws/echo` (WebSocket) | each text or binary message sent back |
//! | `GET /ws/chat?room=NAME` (WebSocket) | each message sent to every client in room `NAME`, the sender included (messages of at most 16 KiB) |
//! | `GET /ws/bytes/{n}` (WebSocket) | one binary message of `n` bytes (at most 10 MiB), then an echo |
//! | `GET /__fusi/stats` | the [`Stats`] as JSON (`DELETE` also resets them); never counted |
//! | anything else | 404 (405 for a known path with the wrong method) |
//!
//! WebSocket upgrades skip the knobs and are counted apart from requests
//! (`ws_sessions`, `ws_msgs_received`, `ws_msgs_sent` in [`Stats`]); a
//! request without `Upgrade: websocket` to one of them gets 426.
//!
//! Request bodies above 16 MiB are answered with 413. The items store keeps
//! the newest 10 000 items (and at most 64 MiB of them).
//!
//! # Knobs
//!
//! Every counted request goes through, in order: the [`StallWindow`] (held
//! until the window ends), the [`Latency`] (plus the [`SourceLatency`] of the
//! client's address range, if any), then error injection (a fraction
//! `error_rate` answered with `error_status`), then its route. Requests in
//! flight when the stall window opens are also held before they are answered.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use fusi_testnet::{Latency, Target, TargetConfig};
//!
//! let target = Target::start(TargetConfig {
//!     latency: Latency::Fixed(Duration::from_millis(20)),
//!     error_rate: 0.1,
//!     ..Default::default()
//! })
//! .await?;
//! println!("hit {}/hello", target.url());
//! // ... run load ...
//! assert!(target.stats().requests > 0);
//! target.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod blocking;
mod config;
mod mesh;
mod netns;
mod precise;
mod server;
mod stats;
mod tls;

pub use blocking::{TargetHandle, spawn_target};
pub use config::{Latency, SourceLatency, StallWindow, TargetConfig};
/// Address ranges and durations read as the nodes read them: one grammar
/// for the whole project.
pub use fusi_core::cidr::Cidr;
pub use fusi_core::spec::parse_duration;
pub use mesh::{
    API_TOKEN_ENV, API_TOKEN_FILE, ExtraNode, KeyChoice, LOGS_ENV, MAX_NODES_PER_REGION,
    MAX_REGION_LEN, MAX_REGIONS, Mesh, MeshConfig, MeshNode, STARTUP_TIMEOUT, STDERR_TAIL_LINES,
    STOP_GRACE, get_json, region_range, validate_region,
};
pub use netns::{HUB_IP, NETNS_PREFIX, netns_available, netns_ip, netns_region_range};
pub use server::{
    MAX_BODY_BYTES, MAX_BYTES, MAX_DELAY_MS, MAX_ITEM_BYTES, MAX_ITEMS, STATS_PATH, Target,
};
pub use stats::Stats;

/// Raises this process's open-file limit as far as it may (the hard limit
/// up to `fs.nr_open` as root, then the soft limit up to the hard one), so
/// a target, or a benchmark and the processes it starts (which inherit it),
/// can hold tens of thousands of connections. Best effort: a refusal
/// leaves the limit as it was. (fusi-node raises its own the same way.)
pub fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid, exclusive pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(limit.rlim_max);
    for max in [ceiling.max(limit.rlim_max), limit.rlim_max] {
        let raised = libc::rlimit {
            rlim_cur: max,
            rlim_max: max,
        };
        // SAFETY: setrlimit reads one rlimit through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return;
        }
    }
}
