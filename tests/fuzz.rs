//! The bounded fuzz run of CI, one test per fuzz target (`fuzz/targets.rs`, shared with the
//! libFuzzer binaries of `scripts/fuzz.sh`): every file of `fuzz/corpus/<target>/` (the seeds,
//! inputs the coverage-guided fuzzer kept, and the inputs of past crashes) is replayed, then
//! mutations of them — bit flips, interesting integers, numbers in text, tokens of the format,
//! insertions, deletions, splices — from a fixed seed until a time cap (`DEEPVIZ_FUZZ_SECONDS`
//! per target, default 15) or a count cap. This is blind mutation, not coverage-guided: it
//! replays what libFuzzer found and keeps every parser honest on each commit; longer,
//! coverage-guided runs are `scripts/fuzz.sh TARGET SECONDS`.
//!
//! A panic saves the input to `target/fuzz-failures/<target>/` and fails the test; an input
//! that runs longer than [`HANG`] fails it too (the input being run is always in
//! `target/fuzz-failures/<target>/current`, so an abort leaves it behind as well).

#[path = "../fuzz/targets.rs"]
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One input may take this long before it counts as a hang.
const HANG: Duration = Duration::from_secs(20);
/// At most this many mutated inputs per target (the time cap usually ends the run first).
const MAX_EXECS: u64 = 200_000;
/// Mutated inputs are cut to this length.
const MAX_LEN: usize = 64 << 10;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// splitmix64: the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens of the formats, inserted or swapped in by the mutator.
const TOKENS: &[&str] = &[
    "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"", "\"F16\"", "\"BF16\"", "\"F64\"", "\"I64\"", "\"U8\"",
    "\"F8_E4M3\"", "\"arch\"", "\"input_size\"", "\"mean\"", "\"std\"", "\"transform_input\"", "[]", "[0]", "{}", ",", ":",
    "'descr'", "'<f2'", "'<f8'", "'>f4'", "'|u1'", "'fortran_order'", "True", "False", "'shape'", "()", "(0,)", "(1, 3, ",
    "\u{93}NUMPY", "\n", "#", "\t", " ", "\0", "--image", "--class", "--unit", "--neuron", "--layer", "--batch-size", "--size",
    "--clip-percentile", "--alpha", "--octave-scale", "--lr", "--json", "--help", "--device", "emu", "saliency", "trace",
    "IHDR", "IDAT", "IEND", "\u{ff}\u{d8}", "\u{ff}\u{d9}", "\u{ff}\u{da}", "GIF89a", "II*\0", "RIFF", "WEBPVP8L", "BM",
];

/// Numbers that break careless arithmetic, as text.
const NUMBERS: &[&str] = &[
    "0", "1", "-1", "3", "4096", "4097", "65535", "65536", "2147483647", "4294967295", "4294967296", "9223372036854775807",
    "18446744073709551615", "18446744073709551616", "1e38", "1e309", "-0", "nan", "inf", "0.5", "1.5",
];

/// Integers that break careless arithmetic, as little-endian bytes of every width.
const INTS: &[u64] = &[0, 1, 2, 7, 8, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0xffff, 0x1_0000, 0x7fff_ffff, 0xffff_ffff, 1 << 32, u64::MAX / 2, u64::MAX];

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        let at = rng.below(len + 1);
        match rng.below(11) {
            0 if len > 0 => v[at.min(len - 1)] ^= 1 << rng.below(8),
            1 if len > 0 => v[at.min(len - 1)] = rng.next() as u8,
            2 => {
                let width = [1, 2, 4, 8][rng.below(4)];
                let x = INTS[rng.below(INTS.len())];
                let x = if rng.below(2) == 0 { x } else { x.wrapping_neg() };
                let bytes = &x.to_le_bytes()[..width];
                let at = at.min(len.saturating_sub(width));
                for (i, b) in bytes.iter().enumerate() {
                    if let Some(d) = v.get_mut(at + i) {
                        *d = *b;
                    }
                }
            }
            3 => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let end = (at + 1 + rng.below(16.min(len))).min(len);
                v.drain(at.min(end)..end);
            }
            5 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let chunk = v[start..end].to_vec();
                v.splice(at..at, chunk);
            }
            6 if !corpus.is_empty() => {
                // splice: our head, another input's tail
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            7 | 8 => {
                let tok = TOKENS[rng.below(TOKENS.len())].as_bytes();
                if rng.below(2) == 0 || len < tok.len() {
                    v.splice(at..at, tok.iter().copied());
                } else {
                    let at = at.min(len - tok.len());
                    v[at..at + tok.len()].copy_from_slice(tok);
                }
            }
            9 | 10 => {
                // replace a run of digits (a size, an offset, a shape) with an awkward number
                let starts: Vec<usize> = (0..len).filter(|&i| v[i].is_ascii_digit() && (i == 0 || !v[i - 1].is_ascii_digit())).collect();
                if let Some(&s) = starts.get(rng.below(starts.len())) {
                    let e = (s..len).find(|&i| !v[i].is_ascii_digit()).unwrap_or(len);
                    v.splice(s..e, NUMBERS[rng.below(NUMBERS.len())].bytes());
                }
            }
            _ => {}
        }
    }
    v.truncate(MAX_LEN);
    v
}

/// Every file of `fuzz/corpus/<target>/`, in name order.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = root().join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

/// Replay the corpus, then fuzz until the caps; fail naming every input that panicked or hung.
fn fuzz(target: &'static str) {
    let body = targets::target(target).expect("a target of fuzz/targets.rs");
    let secs: f64 = std::env::var("DEEPVIZ_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(15.0);
    let out = root().join("target/fuzz-failures").join(target);
    std::fs::create_dir_all(&out).unwrap();
    let files = corpus(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target}/ is empty");
    let inputs: Vec<Vec<u8>> = files.iter().map(|(_, b)| b.clone()).collect();
    let names: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();

    let (beat, beats) = mpsc::channel::<()>();
    let current = out.join("current");
    let worker = std::thread::spawn(move || {
        let mut failures: Vec<String> = vec![];
        let mut accepted = 0u64;
        let mut run = |failures: &mut Vec<String>, what: String, data: &[u8]| {
            std::fs::write(&current, data).unwrap();
            match catch_unwind(AssertUnwindSafe(|| body(data))) {
                Ok(ok) => accepted += ok as u64,
                Err(_) => {
                    let name = format!("{:016x}", targets_hash(data));
                    let path = current.with_file_name(&name);
                    std::fs::write(&path, data).unwrap();
                    failures.push(format!("{what}: saved as {}", path.display()));
                }
            }
            let _ = beat.send(());
        };
        for (name, data) in names.iter().zip(&inputs) {
            run(&mut failures, name.clone(), data);
        }
        let (t0, mut rng, mut execs) = (Instant::now(), Rng(0xF022 ^ targets_hash(target.as_bytes())), 0u64);
        while execs < MAX_EXECS && t0.elapsed().as_secs_f64() < secs && failures.len() < 5 {
            let base = &inputs[rng.below(inputs.len())];
            let m = mutate(&mut rng, base, &inputs);
            execs += 1;
            run(&mut failures, format!("mutation #{execs}"), &m);
        }
        (failures, execs, t0.elapsed(), accepted)
    });
    loop {
        match beats.recv_timeout(HANG) {
            Ok(()) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{target}: one input has run for over {HANG:?} (a hang); it is {}", out.join("current").display())
            }
        }
    }
    let (failures, execs, took, accepted) = worker.join().expect("the fuzz loop itself does not panic");
    eprintln!("{target}: {} corpus files and {execs} mutations in {:.1} s, {accepted} of them accepted", files.len(), took.as_secs_f64());
    assert!(failures.is_empty(), "{target}: {} inputs panicked:\n{}", failures.len(), failures.join("\n"));
}

/// FNV-1a, to name saved inputs and seed each target's stream.
fn targets_hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100_0000_01b3))
}

/// The corpus holds what `targets::seeds()` makes; `DEEPVIZ_WRITE_SEEDS=1` (what
/// `scripts/fuzz.sh seeds` sets) writes them first.
#[test]
fn the_committed_corpus_holds_every_seed() {
    for (target, name, bytes) in targets::seeds() {
        let p = root().join("fuzz/corpus").join(target).join(&name);
        if std::env::var_os("DEEPVIZ_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &bytes).unwrap();
        }
        let have = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (scripts/fuzz.sh seeds writes the seeds)", p.display()));
        assert!(have == bytes, "{} differs from what targets::seeds() makes (scripts/fuzz.sh seeds rewrites it)", p.display());
    }
    for (target, _) in targets::TARGETS {
        assert!(root().join("fuzz/fuzz_targets").join(format!("{target}.rs")).is_file(), "no libFuzzer binary for {target}");
    }
}

/// The seeds start the fuzzers from inputs the library accepts (a corpus of rejected files would
/// only ever test the first check), but for the near misses named here.
#[test]
fn the_seeds_are_accepted_but_the_near_misses() {
    let near_misses = ["safetensors/", "safetensors_header/f16_dtype.json", "npy/scalar.npy", "cli/line7", "class_file/tabs.txt", "onnx/convnext_ln.onnx"];
    for (target, name, bytes) in targets::seeds() {
        let id = format!("{target}/{name}");
        let miss = near_misses.iter().any(|m| id.starts_with(m));
        assert_eq!(targets::target(target).unwrap()(&bytes), !miss, "{id}: {}", if miss { "accepted" } else { "refused" });
    }
}

#[test]
fn fuzz_safetensors() {
    fuzz("safetensors");
}

#[test]
fn fuzz_safetensors_header() {
    fuzz("safetensors_header");
}

#[test]
fn fuzz_npy() {
    fuzz("npy");
}

#[test]
fn fuzz_image() {
    fuzz("image");
}

#[test]
fn fuzz_cli() {
    fuzz("cli");
}

#[test]
fn fuzz_class_file() {
    fuzz("class_file");
}

#[test]
fn fuzz_onnx() {
    fuzz("onnx");
}
