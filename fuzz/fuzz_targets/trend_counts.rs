//! `fusi_node::fuzz::Target::TrendCounts` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    fusi_node::fuzz::Target::TrendCounts.run(bytes);
});
