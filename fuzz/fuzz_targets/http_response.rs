//! `fusi_node::fuzz::Target::HttpResponse` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    fusi_node::fuzz::Target::HttpResponse.run(bytes);
});
