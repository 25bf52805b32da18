//! Test scenario: misbehaves on purpose, as `MODE` says, so that tests can
//! check that the node survives it. `MODE=loop` spins forever, `panic`
//! panics, `oom` allocates without bound (`oom-small` in blocks of 1000
//! bytes, which fusi-sdk's own heap hands out), `sleep` sleeps an hour (and
//! `wasi-sleep` too, through WASI instead of the fusi host), `bad-request`
//! hands `http_request` bytes that are no request, and `bad-buffer` a
//! response buffer outside the memory; `print` writes terminal escape
//! sequences and floods stdout with 100 lines. Every `EVERY`-th iteration
//! misbehaves (default 1: all of them); the others GET `$TARGET$URL_PATH`
//! (`URL_PATH` defaults to `/hello`) when `TARGET` is set, expecting the
//! statuses in `EXPECT` when it is set. `MODE=setup-panic` panics in
//! `setup`.

use fusi_sdk::abi::{HttpRequest, wire};
use fusi_sdk::prelude::*;

#[link(wasm_import_module = "fusi")]
unsafe extern "C" {
    /// The raw import, to misuse it as the SDK never would.
    #[link_name = "http_request"]
    fn raw_http_request(
        req_ptr: *const u8,
        req_len: usize,
        buf_ptr: *mut u8,
        buf_len: usize,
    ) -> i32;
}

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
            Some("print") => {
                eprintln!("\x1b]0;pwned\x07\x1b[2Jiteration {}", iteration_number());
                for i in 0..100 {
                    println!("line {i}");
                }
            }
            Some("oom") => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hog);
                }
            }
            Some("oom-small") => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1000]);
                    std::hint::black_box(&hog);
                }
            }
            Some("sleep") => sleep(Duration::from_secs(3600)),
            Some("wasi-sleep") => std::thread::sleep(Duration::from_secs(3600)),
            Some("bad-request") => {
                let garbage = [0xffu8; 16];
                let mut buf = [0u8; 64];
                // SAFETY: both arrays are live; the host must refuse what the
                // first one holds.
                unsafe { raw_http_request(garbage.as_ptr(), 16, buf.as_mut_ptr(), 64) };
            }
            Some("bad-buffer") => {
                let req = HttpRequest {
                    method: "GET".into(),
                    url: format!("{}/hello", env("TARGET").unwrap_or_default()),
                    ..HttpRequest::default()
                };
                let mut bytes = Vec::new();
                wire::encode_request(&req, &mut bytes);
                let outside = std::ptr::without_provenance_mut(u32::MAX as usize - 8);
                // SAFETY: the request is a live Vec; the host never writes to
                // a buffer outside the memory, it traps.
                unsafe { raw_http_request(bytes.as_ptr(), bytes.len(), outside, 64) };
            }
            _ => {}
        }
    }
    if let Some(statuses) = env("EXPECT") {
        http::set_expected_statuses(&statuses);
    }
    if let Some(base) = env("TARGET") {
        let res = http::get(&format!(
            "{base}{}",
            env("URL_PATH").as_deref().unwrap_or("/hello")
        ));
        check("status is 200", res.status() == 200);
    }
}

fn setup() {
    if env("MODE").as_deref() == Some("setup-panic") {
        panic!("setup panics on purpose");
    }
}

fusi_sdk::scenario!(setup = setup, iteration = iteration);
