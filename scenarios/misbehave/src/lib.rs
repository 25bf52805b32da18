//! Test scenario: misbehaves on purpose, as `MODE` says, so that tests can
//! check that the node survives it. `MODE=loop` spins forever, `panic`
//! panics, `oom` allocates without bound, `sleep` sleeps an hour (and
//! `wasi-sleep` too, through WASI instead of the fusi host). Every
//! `EVERY`-th iteration misbehaves (default 1: all of them); the others GET
//! `$TARGET/hello` when `TARGET` is set.

use fusi_sdk::prelude::*;

fn iteration() {
    let every: u64 = env("EVERY")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    if iteration_number().is_multiple_of(every) {
        match env("MODE").as_deref() {
            Some("loop") => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            Some("panic") => panic!("this scenario panics on purpose"),
            Some("oom") => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hog);
                }
            }
            Some("sleep") => sleep(Duration::from_secs(3600)),
            Some("wasi-sleep") => std::thread::sleep(Duration::from_secs(3600)),
            _ => {}
        }
    }
    if let Some(base) = env("TARGET") {
        let res = http::get(&format!("{base}/hello"));
        check("status is 200", res.status() == 200);
    }
}

fusi_sdk::scenario!(iteration = iteration);
