//! Quick GEMM probe: GFLOP/s per CPU-second of the engine's sgemm at conv shapes (CPU time, so
//! other processes on a shared machine distort it less than wall time).
use deepviz::backend::cpu::gemm::{sgemm, sgemm_packed, Mat, PackedA};
use std::time::Instant;

fn cpu_s() -> f64 {
    let mut ts = libc_timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { clock_gettime(2, &mut ts) }; // CLOCK_PROCESS_CPUTIME_ID
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
#[repr(C)]
struct libc_timespec { tv_sec: i64, tv_nsec: i64 }
extern "C" { fn clock_gettime(clk: i32, ts: *mut libc_timespec) -> i32; }

fn main() {
    let only: Option<usize> = std::env::args().nth(1).map(|s| s.parse().unwrap());
    let shapes = [(64, 3136, 576), (256, 196, 2304), (512, 49, 4608), (2048, 49, 512), (256, 3136, 64), (64, 3136, 256), (576, 3136, 64)];
    for (si, &(m, n, k)) in shapes.iter().enumerate() {
        if only.is_some_and(|o| o != si) { continue; }
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
        let mut c = vec![0.0f32; m * n];
        let pa = PackedA::new(Mat::rows(&a, m, k));
        let reps = (2e9 / (2.0 * (m * n * k) as f64)).ceil() as usize;
        for which in 0..2 {
            let f = |c: &mut [f32]| if which == 0 { sgemm(Mat::rows(&a, m, k), Mat::rows(&b, k, n), c, n, false) } else { sgemm_packed(Mat::rows(&a, m, k), pa.as_ref(), Mat::rows(&b, k, n), c, n, false.into()) };
            f(&mut c);
            let (t, w) = (cpu_s(), Instant::now());
            for _ in 0..reps { f(&mut c); }
            let (ct, wt) = (cpu_s() - t, w.elapsed().as_secs_f64());
            let fl = 2.0 * (m * n * k * reps) as f64;
            println!("{m:5}x{n:5}x{k:5} {}: {:6.1} GFLOP/cpu-s  {:6.1} GFLOP/wall-s", if which == 0 { "sgemm " } else { "packed" }, fl / ct / 1e9, fl / wt / 1e9);
        }
    }
}
