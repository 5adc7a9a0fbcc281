//! libFuzzer binary for the `cli` target (body: fuzz/targets.rs); run with `scripts/fuzz.sh cli SECONDS`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    targets::cli(data);
});
