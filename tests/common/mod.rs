//! Helpers shared by the integration tests: comparison with a useful failure report,
//! deterministic random data, and finite-difference gradient checks.
//!
//! - [`assert_close`]: `|got - want| <= atol + rtol*|want|` everywhere, else a panic naming the
//!   worst element, and both arrays dumped to `target/test-failures/<what>.{got,want}.f32`
//!   (raw little-endian f32; `numpy.fromfile(path, "<f4")` reads them).
//! - [`rel_rms`]: `rms(got - want) / rms(want)`, for whole-tensor tolerances.
//! - [`seeded`], [`seeded_tensor`]: uniform in [-1, 1), splitmix64, identical on every machine.
//! - [`fd_check`]: an analytic gradient against central differences of an f64 loss.
//! - [`bin`], [`run`], [`ok`]: the `deepviz` binary of this build, run with arguments.
//! - [`fresh_dir`]: a path under the system's temporary folder, emptied, for one test.
#![allow(dead_code)]

pub mod st;

use deepviz::Tensor;
use std::path::PathBuf;

/// Panics unless `|got[i] - want[i]| <= atol + rtol * |want[i]|` for every i (two NaNs, or two
/// equal infinities, count as equal). The message gives the worst element (largest excess over
/// its tolerance), its index, both values and how many elements failed; both arrays are written
/// to `target/test-failures/<what>.got.f32` and `.want.f32`.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length {} but expected {}", got.len(), want.len());
    let mut fails = 0usize;
    let mut worst: Option<(usize, f32)> = None; // (index, excess over tolerance; inf for NaN)
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g == w || (g.is_nan() && w.is_nan()) {
            continue;
        }
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        let excess = if excess.is_nan() { f32::INFINITY } else { excess };
        if excess > 0.0 {
            fails += 1;
            if worst.map_or(true, |(_, e)| excess > e) {
                worst = Some((i, excess));
            }
        }
    }
    if let Some((i, _)) = worst {
        let dumped = dump(what, got, want);
        panic!(
            "{what}: {fails} of {} elements differ beyond atol {atol} + rtol {rtol}; worst at index {i}: \
             got {} want {} (|diff| {}); rel_rms {:.3e}; {dumped}",
            got.len(),
            got[i],
            want[i],
            (got[i] - want[i]).abs(),
            rel_rms(got, want),
        );
    }
}

/// [`assert_close`] with a tolerance per element: `|got[i] - want[i]| <= tol[i]`.
pub fn assert_close_each(what: &str, got: &[f32], want: &[f32], tol: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length {} but expected {}", got.len(), want.len());
    assert_eq!(tol.len(), want.len(), "{what}: {} tolerances for {} elements", tol.len(), want.len());
    let mut fails = 0usize;
    let mut worst: Option<(usize, f32)> = None; // (index, |diff| / tol; inf for NaN)
    for (i, ((&g, &w), &t)) in got.iter().zip(want).zip(tol).enumerate() {
        let r = (g - w).abs() / t;
        let r = if r.is_nan() { f32::INFINITY } else { r };
        if r > 1.0 {
            fails += 1;
        }
        if worst.map_or(true, |(_, e)| r > e) {
            worst = Some((i, r));
        }
    }
    if let Some((i, r)) = worst.filter(|&(_, r)| r > 1.0) {
        let dumped = dump(what, got, want);
        panic!(
            "{what}: {fails} of {} elements differ beyond their tolerance; worst at index {i}: got {} want {} \
             (|diff| {}, {r:.2}x its tolerance {}); rel_rms {:.3e}; {dumped}",
            got.len(),
            got[i],
            want[i],
            (got[i] - want[i]).abs(),
            tol[i],
            rel_rms(got, want),
        );
    }
    if let Some((_, r)) = worst {
        eprintln!("{what}: worst |diff| is {r:.3} of its tolerance, rel_rms {:.2e}", rel_rms(got, want));
    }
}

fn dump(what: &str, got: &[f32], want: &[f32]) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("test-failures");
    let name: String = what.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    let write = |ext: &str, v: &[f32]| {
        let path = dir.join(format!("{name}.{ext}.f32"));
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(&path, bytes).map(|_| path)
    };
    match std::fs::create_dir_all(&dir).and_then(|_| Ok((write("got", got)?, write("want", want)?))) {
        Ok((g, w)) => format!("wrote {} and {}", g.display(), w.display()),
        Err(e) => format!("could not write the arrays: {e}"),
    }
}

/// rms(got - want) / rms(want), in f64 (0 when both are all zero, inf when only want is).
pub fn rel_rms(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "rel_rms: lengths differ");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    if num == 0.0 {
        0.0
    } else {
        (num / den).sqrt()
    }
}

/// `n` floats uniform in [-1, 1) from splitmix64 seeded with `seed`; deterministic everywhere.
pub fn seeded(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            // top 24 bits: exactly representable in f32, so the result is < 1
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A tensor of [`seeded`] values.
pub fn seeded_tensor(seed: u64, shape: &[usize]) -> Tensor {
    Tensor { shape: shape.to_vec(), data: seeded(seed, shape.iter().product()) }
}

/// Widen to f64 (the tests' references compute in f64).
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Narrow to f32 for comparison with the engine.
pub fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Σ r·y in f64: the random linear functional L = <r, op(x)> whose gradient w.r.t. op(x) is r.
pub fn dot(r: &[f32], y: &[f64]) -> f64 {
    assert_eq!(r.len(), y.len(), "dot: lengths differ");
    r.iter().zip(y).map(|(&a, &b)| a as f64 * b).sum()
}

/// `count` indices spread over `0..len`, always including the first and last (where careless
/// edge handling shows), the rest a fixed pseudo-random sample; all of them when `count >= len`.
pub fn fd_indices(len: usize, count: usize) -> Vec<usize> {
    if count >= len {
        return (0..len).collect();
    }
    let mut idx = vec![0, len - 1];
    let r = seeded(0xFD, count);
    idx.extend(r.iter().skip(2).map(|&u| (((u as f64 + 1.0) / 2.0 * len as f64) as usize).min(len - 1)));
    idx.sort_unstable();
    idx.dedup();
    idx
}

/// Central differences of `loss` at `x`: for each i in [`fd_indices`]`(x.len(), samples)`,
/// `(loss(x + eps e_i) - loss(x - eps e_i)) / (2 eps)` with x widened to f64, compared with
/// `analytic[i]` by [`assert_close`] (`what` is suffixed with `.fd`). Evaluate `loss` with an
/// f64 reference so that a small `eps` (1e-6 for piecewise-linear ops, ~1e-4 for smooth
/// nonlinear ones) gives differences far more accurate than the f32 gradient under test.
#[allow(clippy::too_many_arguments)]
pub fn fd_check(
    what: &str,
    x: &[f32],
    analytic: &[f32],
    loss: impl Fn(&[f64]) -> f64,
    eps: f64,
    samples: usize,
    atol: f32,
    rtol: f32,
) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length differs from x");
    let idx = fd_indices(x.len(), samples);
    let mut xv = f64s(x);
    let mut fd = Vec::with_capacity(idx.len());
    for &i in &idx {
        let x0 = xv[i];
        xv[i] = x0 + eps;
        let lp = loss(&xv);
        xv[i] = x0 - eps;
        let lm = loss(&xv);
        xv[i] = x0;
        fd.push(((lp - lm) / (2.0 * eps)) as f32);
    }
    // compare full-length arrays (unsampled entries equal) so a failure names x's own index
    let mut want = analytic.to_vec();
    for (&i, &v) in idx.iter().zip(&fd) {
        want[i] = v;
    }
    assert_close(&format!("{what}.fd"), analytic, &want, atol, rtol);
}

/// The real GPU when there is one (else it says it skipped, and why).
#[cfg(feature = "cuda")]
pub fn card() -> Option<deepviz::device::cuda::CudaDevice> {
    use deepviz::device::cuda::CudaDevice;
    let found = CudaDevice::available().then(|| CudaDevice::new(0).expect("a CUDA device is present but cannot be opened"));
    if found.is_none() {
        eprintln!("skipped on the real GPU: no CUDA device");
    }
    found
}

#[cfg(not(feature = "cuda"))]
pub fn card() -> Option<std::convert::Infallible> {
    eprintln!("skipped on the real GPU: no CUDA device (built without the `cuda` feature)");
    None
}

/// The devices a kernel test runs on: the emulated GPU under every schedule (a missing barrier
/// shows under at least one), and the real GPU when there is one (else it says it skipped).
/// `DEEPVIZ_TEST_DEVICES=cuda` leaves the emulation out: the GPU check's compute-sanitizer runs,
/// which instrument only the card.
pub fn devices() -> Vec<Box<dyn deepviz::device::Device>> {
    use deepviz::device::emu::{EmuDevice, Schedule};
    use deepviz::device::Device;
    let card_only = std::env::var("DEEPVIZ_TEST_DEVICES").is_ok_and(|v| v == "cuda");
    let mut v: Vec<Box<dyn Device>> =
        if card_only { vec![] } else { Schedule::ALL.iter().map(|&s| Box::new(EmuDevice::with_schedule(s)) as Box<dyn Device>).collect() };
    #[cfg(feature = "cuda")]
    v.extend(card().map(|d| Box::new(d) as Box<dyn Device>));
    #[cfg(not(feature = "cuda"))]
    card();
    v
}

/// The CUDA engines an end-to-end test runs on: the emulated device (default schedule) always,
/// and the real GPU when there is one (else it says it skipped); both behind the launch queue
/// and graph replay the product uses (`deepviz::device::graph`).
#[allow(dead_code)]
pub fn gpus() -> Vec<deepviz::backend::cuda::Gpu> {
    use deepviz::backend::cuda::Gpu;
    let mut v = vec![Gpu::emulated()];
    #[cfg(feature = "cuda")]
    v.extend(card().map(|d| Gpu::new(std::sync::Arc::new(deepviz::device::graph::Graphed::new(d)))));
    #[cfg(not(feature = "cuda"))]
    card();
    v
}

/// The `deepviz` binary of this build.
pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_deepviz"))
}

/// Run `deepviz args`.
pub fn run(args: &[&str]) -> std::process::Output {
    bin().args(args).output().expect("run deepviz")
}

/// Run `deepviz args`, which must succeed; its standard output.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "deepviz {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// `deepviz-{tag}-{pid}` under the system's temporary folder, removed if it was there (not
/// created: a command's output folder may be made by the command).
pub fn fresh_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("deepviz-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
