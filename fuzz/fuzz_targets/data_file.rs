//! `fusi_node::fuzz::Target::DataFile` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    fusi_node::fuzz::Target::DataFile.run(bytes);
});
