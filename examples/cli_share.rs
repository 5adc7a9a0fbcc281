//! How much of a CLI job is outside the network (issue 6: under 10%): runs [`MapJob`], what
//! `deepviz saliency|gradcam IMAGES...` runs (decode, attribute, render, PNG encode, write), and
//! the same method alone on the same decoded batches, alternating, in one process on the CPU
//! engine, and prints one JSON line: median milliseconds of each (and of decoding alone) and
//! the share of the job outside the network, `1 - network / job`; the same from the fastest run
//! of each (`min_share`: less moved by other processes' bursts than the medians), and the
//! process's CPU time per run, all threads (`*_cpu_ms`: what the outside work costs in CPU,
//! whatever of it overlaps the network).
//!
//!     cargo run --release --example cli_share -- MODEL.safetensors JOB BATCH IMAGES [REPS]
//!
//! IMAGES: files (repeat one to make a batch). The job writes into a temporary folder (the
//! output set is dropped, not committed, so nothing stays behind). Model loading and weight
//! packing happen once before the timing (warm-up), as in a long CLI run over a folder.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

mod common;

use deepviz::backend::cpu::Cpu;
use deepviz::engine::Engine;
use deepviz::job::{Inputs, MapJob};
use deepviz::model::Model;
use deepviz::output::OutputSet;
use deepviz::viz::{attribution, MethodOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 4 {
        eprintln!("usage: cli_share MODEL.safetensors saliency|gradcam BATCH IMAGE... [--reps N]");
        std::process::exit(2);
    }
    let model = Arc::new(Model::load(a[0].as_ref(), None)?);
    let (job, batch) = (a[1].clone(), a[2].parse::<usize>().expect("BATCH"));
    let (files, reps) = match a.iter().position(|s| s == "--reps") {
        Some(i) => (&a[3..i], a[i + 1].parse::<usize>().expect("REPS")),
        None => (&a[3..], 5),
    };
    // the same file listed twice is one input: give each copy its own name
    let dir = std::env::temp_dir().join(format!("deepviz-cli-share-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("in"))?;
    let mut paths = vec![];
    for (i, f) in files.iter().enumerate() {
        let p = dir.join("in").join(format!("{i}_{}", PathBuf::from(f).file_name().unwrap().to_string_lossy()));
        std::fs::copy(f, &p)?;
        paths.push(p);
    }
    let inputs = Inputs::expand(&paths)?;
    let eng = Engine::new(model.clone(), Cpu)?;
    let map_job = MapJob {
        method: job.clone(),
        options: MethodOptions::default(),
        targets: Default::default(),
        clip_percentile: None,
        alpha: 0.5,
        raw: false,
        batch_size: batch,
        full_size: false,
        colormap: None,
        npz: false,
    };
    let method = attribution(&eng, &job, &MethodOptions::default())?;
    let xs: Vec<_> = inputs.batches(&model.preprocess, batch).map(|b| b.map(|b| b.x)).collect::<deepviz::Result<_>>()?;
    // (wall ms, CPU ms) of one run
    let run_job = || -> deepviz::Result<(f64, f64)> {
        let (t, c) = (Instant::now(), common::cpu_s());
        let mut out = OutputSet::new(dir.join("out"));
        map_job.run(&eng, &inputs, &mut out, &mut |_| {})?;
        Ok((t.elapsed().as_secs_f64() * 1e3, (common::cpu_s() - c) * 1e3))
    };
    let run_net = || -> deepviz::Result<(f64, f64)> {
        let (t, c) = (Instant::now(), common::cpu_s());
        for x in &xs {
            method.attribute(x, None)?;
        }
        Ok((t.elapsed().as_secs_f64() * 1e3, (common::cpu_s() - c) * 1e3))
    };
    // decoding and preprocessing alone (part of the job's outside share)
    let run_decode = || -> deepviz::Result<f64> {
        let t = Instant::now();
        for b in inputs.batches(&model.preprocess, batch) {
            b?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    run_job()?;
    run_net()?;
    let (mut tj, mut tn, mut td, mut cj, mut cn) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        let (j, c) = run_job()?;
        tj.push(j);
        cj.push(c);
        let (n, c) = run_net()?;
        tn.push(n);
        cn.push(c);
        td.push(run_decode()?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (j, n, dec) = (med(&mut tj), med(&mut tn), med(&mut td));
    let (jmin, nmin) = (tj[0], tn[0]);
    let (jc, nc) = (med(&mut cj), med(&mut cn));
    println!(
        r#"{{"model":"{}","job":"{job}","batch":{batch},"images":{},"threads":{},"job_ms":{j:.1},"network_ms":{n:.1},"decode_ms":{dec:.1},"outside_share":{:.3},"job_min_ms":{jmin:.1},"network_min_ms":{nmin:.1},"min_share":{:.3},"job_cpu_ms":{jc:.1},"network_cpu_ms":{nc:.1}}}"#,
        model.graph.arch,
        paths.len(),
        rayon::current_num_threads(),
        1.0 - n / j,
        1.0 - nmin / jmin
    );
    Ok(())
}
