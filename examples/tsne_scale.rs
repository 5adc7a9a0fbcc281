//! Exact against Barnes–Hut t-SNE (issue 8): wall time by number of points, on 10 Gaussian-ish
//! clusters in 50-D (centres uniform in ±8 per coordinate, noise the sum of four uniforms in ±1).
//!
//! `cargo run --release --example tsne_scale -- [SIZES] [ITERATIONS] [EXACT_ITERATIONS] [DEVICE]`
//! (defaults `2000,5000,10000`, 1000, 1000, `cpu`; EXACT_ITERATIONS 0 skips the exact runs, as
//! do sizes past `EXACT_MAX`; DEVICE `cuda` or `emu` runs the exact path on that device, its
//! affinities (`tsne::device_joint_probabilities`) and its gradient (`tsne::DeviceGradient`),
//! Barnes–Hut staying on the host). For each size and method: the affinities alone
//! (`embed` with 0 iterations), then `embed` with the method's iterations; the time a step is
//! their difference over the iterations, and the projected time of 1000 iterations is the
//! affinities plus 1000 steps (measured, not projected, where the method ran 1000). Before any
//! time is printed, each run's embedding is checked: the fraction of each point's 10 nearest in
//! the embedding that share its cluster (printed; below 0.9 after 1000 iterations is a failure).

use std::time::Instant;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::Backend;
use deepviz::dataset::tsne::{embed_on, Method, EXACT_MAX, THETA};

fn clusters(n: usize, dim: usize) -> Vec<Vec<f64>> {
    let mut s = 12345u64;
    let mut uniform = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    };
    let centres: Vec<Vec<f64>> = (0..10).map(|_| (0..dim).map(|_| 8.0 * uniform()).collect()).collect();
    (0..n).map(|i| centres[i % 10].iter().map(|c| c + (0..4).map(|_| uniform()).sum::<f64>()).collect()).collect()
}

fn knn_kept(y: &[[f64; 2]], k: usize) -> f64 {
    use rayon::prelude::*;
    let same: usize = (0..y.len())
        .into_par_iter()
        .map(|i| {
            let mut d: Vec<(f64, usize)> = (0..y.len()).filter(|&j| j != i).map(|j| ((y[i][0] - y[j][0]).powi(2) + (y[i][1] - y[j][1]).powi(2), j)).collect();
            d.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
            d[..k].iter().filter(|(_, j)| j % 10 == i % 10).count()
        })
        .sum();
    same as f64 / (k * y.len()) as f64
}

fn main() -> deepviz::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.get(3).map_or("cpu", |s| s.as_str()) {
        "cpu" => run(&Cpu, &args),
        "emu" => run(&Gpu::emulated(), &args),
        #[cfg(feature = "cuda")]
        "cuda" => run(&Gpu::new(std::sync::Arc::new(deepviz::device::cuda::CudaDevice::new(0)?)), &args),
        d => panic!("unknown or unavailable device {d}"),
    }
}

fn run<B: Backend>(be: &B, args: &[String]) -> deepviz::Result<()> {
    let sizes: Vec<usize> = args.first().map_or("2000,5000,10000", |s| s).split(',').map(|s| s.parse().expect("SIZES: a comma-separated list")).collect();
    let iterations: usize = args.get(1).map_or(1000, |s| s.parse().expect("ITERATIONS"));
    let exact_iterations: usize = args.get(2).map_or(iterations, |s| s.parse().expect("EXACT_ITERATIONS"));
    println!("{} threads; 50-D, 10 clusters, perplexity 30", rayon::current_num_threads());
    println!("{:>6} {:<16} {:>11} {:>6} {:>10} {:>14} {:>9}", "n", "method", "affinities", "iters", "step (ms)", "1000 iters (s)", "10-NN kept");
    for &n in &sizes {
        let x = clusters(n, 50);
        for (method, its) in [(Method::Exact, exact_iterations), (Method::BarnesHut { theta: THETA }, iterations)] {
            if method == Method::Exact && (exact_iterations == 0 || n > EXACT_MAX) {
                continue;
            }
            let t = Instant::now();
            embed_on(be, &x, 30.0, method, 0, 0)?;
            let affinities = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let y = embed_on(be, &x, 30.0, method, 0, its)?;
            let total = t.elapsed().as_secs_f64();
            let kept = knn_kept(&y, 10);
            if its >= 1000 && kept < 0.9 {
                eprintln!("n {n} {method:?}: only {kept:.3} of 10-NN kept: not timing a broken embedding");
                std::process::exit(1);
            }
            let step = (total - affinities).max(0.0) / its.max(1) as f64;
            let projected = if its == 1000 { format!("{total:.1}") } else { format!("~{:.0} (proj.)", affinities + 1000.0 * step) };
            let (name, theta) = method.describe();
            let name = if method == Method::Exact && !be.on_host() { format!("{name} ({})", be.name()) } else { name.to_string() };
            println!("{n:>6} {:<16} {affinities:>10.2}s {its:>6} {:>10.2} {projected:>14} {kept:>9.3}", format!("{name} {theta}"), 1e3 * step);
        }
    }
    Ok(())
}
