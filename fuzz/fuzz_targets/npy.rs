//! libFuzzer binary for the `npy` target (body: fuzz/targets.rs); run with `scripts/fuzz.sh npy SECONDS`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    targets::npy(data);
});
