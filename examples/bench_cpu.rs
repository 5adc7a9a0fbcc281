//! Time deepviz's CPU engine on one job, the protocol of `scripts/bench_cpu_torch.py` (its
//! PyTorch side), for `scripts/bench_cpu.sh`, which runs both in one go and prints the ratios.
//!
//!     cargo run --release --example bench_cpu -- MODEL.safetensors JOB BATCH [ITERS] [WARMUP]
//!
//! JOB: any attribution method with its defaults (`saliency`, `gradcam` at the architecture's
//! default layer, `scorecam`, ...; `scripts/bench_methods.sh` times them all against captum /
//! pytorch-grad-cam). The input is a fixed pseudo-random batch at the model's input size. Prints
//! one JSON line: median, min and max milliseconds per call over ITERS calls (default 7) after
//! WARMUP warm-up calls (default 2), the rayon thread count (RAYON_NUM_THREADS), images per
//! second at the median, and the median CPU time per call
//! (`cpu_ms`, all threads: on a shared machine it moves less with other processes' load than the
//! wall time does, so it is the steadier measure when comparing two builds of deepviz).

mod common;

use std::sync::Arc;
use std::time::Instant;

use deepviz::backend::cpu::Cpu;
use deepviz::engine::Engine;
use deepviz::model::Model;
use deepviz::viz::{attribution, MethodOptions};
use deepviz::Tensor;

fn main() -> deepviz::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 3 {
        eprintln!("usage: bench_cpu MODEL.safetensors JOB BATCH [ITERS] [WARMUP]");
        std::process::exit(2);
    }
    let model = Arc::new(Model::load(a[0].as_ref(), None)?);
    let (job, batch) = (a[1].as_str(), a[2].parse::<usize>().expect("BATCH"));
    let iters = a.get(3).map_or(7, |s| s.parse().expect("ITERS"));
    let warmup = a.get(4).map_or(2, |s| s.parse().expect("WARMUP"));
    let [h, w] = model.preprocess.size;
    let x = Tensor::new(vec![batch, 3, h, w], (0..batch * 3 * h * w).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect())?;
    let eng = Engine::new(model.clone(), Cpu)?;
    let method = attribution(&eng, job, &MethodOptions::default())?;
    let call = || -> deepviz::Result<()> {
        let (m, _) = method.attribute(&x, None)?;
        assert!(m.data.iter().all(|v| v.is_finite()));
        Ok(())
    };
    for _ in 0..warmup {
        call()?;
    }
    let (mut ms, mut cpu) = (vec![], vec![]);
    for _ in 0..iters {
        let (t, c) = (Instant::now(), cpu_ms());
        call()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        cpu.push(cpu_ms() - c);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    cpu.sort_by(|a, b| a.total_cmp(b));
    println!(
        r#"{{"engine":"deepviz-cpu","model":"{}","job":"{job}","batch":{batch},"threads":{},"median_ms":{:.2},"min_ms":{:.2},"max_ms":{:.2},"images_per_s":{:.4},"cpu_ms":{:.2}}}"#,
        model.graph.arch,
        rayon::current_num_threads(),
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1],
        batch as f64 * 1e3 / ms[ms.len() / 2],
        cpu[cpu.len() / 2]
    );
    Ok(())
}

/// CPU time of the whole process (every thread) in milliseconds (NaN where not measured).
fn cpu_ms() -> f64 {
    common::cpu_s() * 1e3
}
