//! The smallest useful scenario: GET a URL, check the status.
//!
//! ```text
//! fusi-node run hello.wasm --vus 10 --duration 30s --env TARGET=http://127.0.0.1:8080
//! ```
//!
//! `TARGET` is the base URL (default `http://127.0.0.1:8080`); the scenario
//! requests `$TARGET/hello`.

use fusi_sdk::prelude::*;

fn iteration() {
    let base = env("TARGET").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let res = http::get(&format!("{base}/hello"));
    check("status is 200", res.status() == 200);
}

fusi_sdk::scenario!(iteration = iteration);
