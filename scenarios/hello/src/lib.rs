//! The smallest useful scenario: GET a URL, check the status.
//!
//! ```text
//! fusi-node run hello.wasm --vus 10 --duration 30s --env TARGET=http://127.0.0.1:8080
//! ```
//!
//! `TARGET` is the base URL (default `http://127.0.0.1:8080`); the scenario
//! requests `$TARGET/hello`. With `SLEEP_MS=1000`, each iteration then
//! sleeps that long, as a k6 script's `sleep(1)` does (the memory benchmark
//! runs it so). The URL and the pause are read once per VU, in `init`, which
//! is where per-VU preparation belongs: `iteration` runs millions of times.

use std::sync::OnceLock;

use fusi_sdk::prelude::*;

static URL: OnceLock<String> = OnceLock::new();
static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();

fn url() -> &'static str {
    URL.get_or_init(|| {
        let base = env("TARGET").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
        format!("{base}/hello")
    })
}

/// The pause after each request: `SLEEP_MS` milliseconds, when given.
fn pause() -> Option<Duration> {
    *PAUSE.get_or_init(|| {
        let ms = env("SLEEP_MS")?.parse::<u64>().ok()?;
        (ms > 0).then(|| Duration::from_millis(ms))
    })
}

fn init() {
    url();
    pause();
}

fn iteration() {
    let res = http::get(url());
    check("status is 200", res.status() == 200);
    if let Some(pause) = pause() {
        sleep(pause);
    }
}

fusi_sdk::scenario!(init = init, iteration = iteration);
