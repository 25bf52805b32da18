//! A scenario meant for an arrival-rate executor: each iteration is one
//! request, started on a fixed schedule whether or not the target keeps up.
//!
//! ```text
//! fusi-node run arrival.wasm --rate 200/s --duration 30s --vus 20 --max-vus 200 \
//!     --env TARGET=http://127.0.0.1:8080
//! ```
//!
//! With `--rate`, fusi uses the constant-arrival-rate executor: it starts 200
//! iterations a second, measures each from the instant it was *meant* to
//! start (so a slow target cannot hide behind a slow client), and counts
//! `dropped_iterations` when every VU is busy.

use fusi_sdk::prelude::*;

static SLOW: Rate = Rate::new("slow_responses");

fn iteration() {
    let base = env("TARGET").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let res = Request::get(&format!("{base}/hello"))
        .timeout(Duration::from_secs(10))
        .send();
    check("status is 200", res.status() == 200);
    SLOW.add(res.timings().duration_us > 200_000);
}

fusi_sdk::scenario!(iteration = iteration);
