//! libFuzzer binary for the `safetensors` target (body: fuzz/targets.rs); run with `scripts/fuzz.sh safetensors SECONDS`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    targets::safetensors(data);
});
