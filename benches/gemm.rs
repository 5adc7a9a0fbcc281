//! Single-precision GEMM at convolution-like shapes: the `gemm` crate, `matrixmultiply`, and the
//! engine's own AVX-512 GEMM (`src/backend/cpu/gemm.rs`, with the left operand packed per call
//! and packed ahead as the engine does for weights). The engine runs its own where AVX-512F is
//! present and `matrixmultiply` elsewhere ("engine portable").
//!
//! 2026-12-03, the 2-core Sapphire Rapids dev machine (AVX-512, shared and loaded, so measured in
//! GFLOP per CPU-second with `examples/gemm_probe.rs`, one thread): matrixmultiply 26-58, the
//! AVX-512 GEMM with A packed ahead 54-71 at these shapes (its micro-kernel alone, data in
//! cache: ~105, peak FMA throughput measured ~120-130).
//!
//! Run: `cargo bench --bench gemm`. `matrixmultiply` is built without its own thread pool
//! (the engine threads it with rayon, see `src/backend/cpu/gemm.rs`), so it runs on one thread
//! here and "engine portable" is the same crate split across rayon's threads.
//!
//! Earlier results (when the engine used matrixmultiply everywhere), on the 2-core AMD EPYC
//! (AVX-512) dev machine, run while it was otherwise idle
//! (it is shared; under load the numbers halve), GFLOP/s from criterion's median times:
//!
//! | M x N x K          | gemm 1 thread | gemm rayon 2 | matrixmultiply 1 thread | engine (mm, rayon 2) |
//! |--------------------|---------------|--------------|-------------------------|----------------------|
//! | 64 x 3136 x 576    | 119           | 247          | 201                     | 393                  |
//! | 256 x 196 x 2304   | 124           | 151          | 193                     | 231                  |
//! | 1000 x 8 x 1280    | 56            | 65           | 32                      | 33                   |
//!
//! matrixmultiply is ~1.6x faster per thread at the conv shapes, which are nearly all of a
//! forward pass, and the engine's rayon split of it beats gemm's own threading there; gemm
//! wins only the skinny classifier product (a negligible share). The engine uses matrixmultiply.
//!
//! C[m,n] = A[m,k] · B[k,n], all row-major (the im2col layout: A = weights, B = columns).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

/// (m, n, k, where it comes from)
const SHAPES: [(usize, usize, usize, &str); 3] = [
    (64, 3136, 576, "resnet layer1 3x3 conv, 56x56"),
    (256, 196, 2304, "resnet layer3 3x3 conv, 14x14"),
    (1000, 8, 1280, "classifier, batch 8"),
];

fn seeded(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn with_gemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], par: gemm::Parallelism) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: gemm::gemm(m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs,
    // rhs_rs, alpha, beta, conj..., par); all three are dense row-major and the lengths are checked.
    unsafe {
        gemm::gemm(
            m, n, k,
            c.as_mut_ptr(), 1, n as isize, false,
            a.as_ptr(), 1, k as isize,
            b.as_ptr(), 1, n as isize,
            0.0, 1.0, false, false, false, par,
        )
    }
}

/// The engine's own entry point (the AVX-512 GEMM where it runs, A packed per call), split
/// across rayon's threads.
fn with_engine(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    use deepviz::backend::cpu::gemm::{sgemm, Mat};
    sgemm(Mat::rows(a, m, k), Mat::rows(b, k, n), c, n, false);
}

/// The engine's portable path (matrixmultiply, split across rayon's threads).
fn with_portable(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    use deepviz::backend::cpu::gemm::{portable, Mat, Out};
    portable(Mat::rows(a, m, k), Mat::rows(b, k, n), c, n, Out::Overwrite);
}

/// The engine's GEMM with A packed ahead of time (as for convolution weights).
fn with_packed(m: usize, n: usize, k: usize, a: &[f32], pa: Option<&deepviz::backend::cpu::gemm::PackedA>, b: &[f32], c: &mut [f32]) {
    use deepviz::backend::cpu::gemm::{sgemm_packed, Mat, Out};
    sgemm_packed(Mat::rows(a, m, k), pa, Mat::rows(b, k, n), c, n, Out::Overwrite);
}

fn with_matrixmultiply(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc); dense row-major,
    // lengths checked above.
    unsafe {
        matrixmultiply::sgemm(
            m, k, n, 1.0,
            a.as_ptr(), k as isize, 1,
            b.as_ptr(), n as isize, 1,
            0.0, c.as_mut_ptr(), n as isize, 1,
        )
    }
}

fn bench(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    for &(m, n, k, what) in &SHAPES {
        let a = seeded(1, m * k);
        let b = seeded(2, k * n);
        // Check before timing: both crates agree with each other and with an f64 dot product.
        let mut c1 = vec![0.0f32; m * n];
        let mut c2 = vec![0.0f32; m * n];
        with_gemm(m, n, k, &a, &b, &mut c1, gemm::Parallelism::Rayon(threads));
        with_matrixmultiply(m, n, k, &a, &b, &mut c2);
        for (i, j) in [(0, 0), (m - 1, n - 1), (m / 2, n / 3)] {
            let want: f64 = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
            assert!((c1[i * n + j] as f64 - want).abs() < 1e-3, "gemm wrong at ({i},{j})");
        }
        let mut c3 = vec![0.0f32; m * n];
        with_engine(m, n, k, &a, &b, &mut c3);
        let worst = c1.iter().zip(&c3).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "gemm and the engine's sgemm differ by {worst}");
        let worst = c1.iter().zip(&c2).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "gemm and matrixmultiply differ by {worst}");
        let pa = deepviz::backend::cpu::gemm::PackedA::new(deepviz::backend::cpu::gemm::Mat::rows(&a, m, k));
        let mut c4 = vec![0.0f32; m * n];
        with_packed(m, n, k, &a, pa.as_ref(), &b, &mut c4);
        let worst = c1.iter().zip(&c4).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "gemm and the engine's packed sgemm differ by {worst}");

        let flops = 2 * m * n * k;
        let mut g = c.benchmark_group(format!("sgemm m{m} n{n} k{k} ({what})"));
        g.throughput(Throughput::Elements(flops as u64)); // "elements/s" here means FLOP/s
        g.warm_up_time(Duration::from_millis(300));
        g.measurement_time(Duration::from_secs(2));
        g.sample_size(20);
        let mut out = vec![0.0f32; m * n];
        g.bench_function(BenchmarkId::new("gemm", "1 thread"), |bn| {
            bn.iter(|| with_gemm(m, n, k, black_box(&a), black_box(&b), &mut out, gemm::Parallelism::None))
        });
        g.bench_function(BenchmarkId::new("gemm", format!("rayon {threads}")), |bn| {
            bn.iter(|| with_gemm(m, n, k, black_box(&a), black_box(&b), &mut out, gemm::Parallelism::Rayon(threads)))
        });
        g.bench_function(BenchmarkId::new("matrixmultiply", "1 thread"), |bn| {
            bn.iter(|| with_matrixmultiply(m, n, k, black_box(&a), black_box(&b), &mut out))
        });
        g.bench_function(BenchmarkId::new("engine sgemm", format!("rayon {threads}")), |bn| {
            bn.iter(|| with_engine(m, n, k, black_box(&a), black_box(&b), &mut out))
        });
        g.bench_function(BenchmarkId::new("engine sgemm, A packed ahead", format!("rayon {threads}")), |bn| {
            bn.iter(|| with_packed(m, n, k, black_box(&a), pa.as_ref(), black_box(&b), &mut out))
        });
        g.bench_function(BenchmarkId::new("engine portable", format!("matrixmultiply, rayon {threads}")), |bn| {
            bn.iter(|| with_portable(m, n, k, black_box(&a), black_box(&b), &mut out))
        });
        g.finish();
        // Criterion prints elements/s; print GFLOP/s plainly as well from a short timed loop.
        for (name, f) in [
            ("gemm 1 thread", 0),
            ("gemm rayon", 1),
            ("matrixmultiply", 2),
            ("engine sgemm", 3),
            ("engine packed A", 4),
            ("engine portable", 5),
        ] {
            let reps = 20;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                match f {
                    0 => with_gemm(m, n, k, &a, &b, &mut out, gemm::Parallelism::None),
                    1 => with_gemm(m, n, k, &a, &b, &mut out, gemm::Parallelism::Rayon(threads)),
                    2 => with_matrixmultiply(m, n, k, &a, &b, &mut out),
                    3 => with_engine(m, n, k, &a, &b, &mut out),
                    4 => with_packed(m, n, k, &a, pa.as_ref(), &b, &mut out),
                    _ => with_portable(m, n, k, &a, &b, &mut out),
                }
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!("  {name:>16}: {:7.1} GFLOP/s  ({m}x{n}x{k})", flops as f64 / s / 1e9);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
