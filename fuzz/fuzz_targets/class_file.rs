//! libFuzzer binary for the `class_file` target (body: fuzz/targets.rs); run with `scripts/fuzz.sh class_file SECONDS`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    targets::class_file(data);
});
