//! libFuzzer binary for the `onnx` target (body: fuzz/targets.rs); run with `scripts/fuzz.sh onnx SECONDS`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    targets::onnx(data);
});
