//! libFuzzer binary for the `image` target (body: fuzz/targets.rs); run with `scripts/fuzz.sh image SECONDS`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    targets::image(data);
});
