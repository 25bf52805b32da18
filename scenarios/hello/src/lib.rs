//! The smallest useful scenario: GET a URL, check the status.
//!
//! ```text
//! fusi-node run hello.wasm --vus 10 --duration 30s --env TARGET=http://127.0.0.1:8080
//! ```
//!
//! `TARGET` is the base URL (default `http://127.0.0.1:8080`); the scenario
//! requests `$TARGET/hello`. The URL is built once per VU, in `init`, which is
//! where per-VU preparation belongs: `iteration` runs millions of times.

use std::sync::OnceLock;

use fusi_sdk::prelude::*;

static URL: OnceLock<String> = OnceLock::new();

fn url() -> &'static str {
    URL.get_or_init(|| {
        let base = env("TARGET").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
        format!("{base}/hello")
    })
}

fn init() {
    url();
}

fn iteration() {
    let res = http::get(url());
    check("status is 200", res.status() == 200);
}

fusi_sdk::scenario!(init = init, iteration = iteration);
