//! Images per second of `dissect` against the network's plain forward throughput, in one run on
//! one engine (issue 8: the tally must not be the bottleneck).
//!
//! `cargo run --release --example dissect_rate -- [IMAGES] [LAYER] [BATCH] [ROUNDS] [DEVICE]`
//! (defaults 64, `_blocks.15`, 16, 3, `cpu`; DEVICE as `--device`: `cpu`, `cuda`, `emu`; on a
//! GPU the second pass counts on the device, `kernels/dissect.cu`) generates a Broden-layout dataset of IMAGES 224x224 pictures in a
//! temporary folder, then alternates, ROUNDS times: a plain forward pass to LAYER over every
//! image (the same decode stream, nothing tallied), dissect's first pass (thresholds) and its
//! second pass (IoU counts). It checks the second pass read every image before it times
//! anything else, and prints each one's images/s (wall and CPU seconds: the machine is
//! shared) and their ratio to the plain forward, the median over rounds.

mod common;

use std::time::Instant;

use deepviz::backend::{Backend, Precision};
use deepviz::dataset::dissect::{Dissect, Thresholds};
use deepviz::dataset::{self, synth, Dataset, Shard, Tally};
use deepviz::engine::Engine;
use deepviz::job::{with_backend, DeviceChoice, WithBackend};
use deepviz::model::Model;
use deepviz::output::OutputSet;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> deepviz::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map_or(64, |s| s.parse().expect("IMAGES"));
    let layer = args.get(1).cloned().unwrap_or_else(|| "_blocks.15".into());
    let batch: usize = args.get(2).map_or(16, |s| s.parse().expect("BATCH"));
    let rounds: usize = args.get(3).map_or(3, |s| s.parse().expect("ROUNDS"));
    let dir = std::env::temp_dir().join(format!("deepviz-dissect-rate-{}", std::process::id()));
    let (mut out, mut images) = (OutputSet::new(&dir), OutputSet::new(dir.join("images")));
    synth::generate_broden(&mut out, &mut images, n, 1, 224)?;
    images.commit()?;
    out.commit()?;
    let ds = Dataset::open(&dir)?;
    let device: DeviceChoice = args.get(4).map_or(Ok(DeviceChoice::Cpu), |s| s.parse())?;
    with_backend(device, Some(Precision::F32), Precision::F32, &mut |s| eprintln!("{s}"), Rate { ds, n, layer, batch, rounds })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

struct Rate {
    ds: Dataset,
    n: usize,
    layer: String,
    batch: usize,
    rounds: usize,
}

impl WithBackend for Rate {
    type Output = ();
    fn run<B: Backend>(self, be: B) -> deepviz::Result<()> {
        let Rate { ds, n, layer, batch, rounds } = self;
        rate(Engine::new(Model::default_model()?, be)?, &ds, n, layer, batch, rounds)
    }
}

fn rate<B: Backend>(eng: Engine<B>, ds: &Dataset, n: usize, layer: String, batch: usize, rounds: usize) -> deepviz::Result<()> {
    let backend = eng.be.name();
    let job = Dissect { layer: layer.clone(), quantile: dataset::dissect::QUANTILE, top: 5, batch_size: batch };
    let l = eng.model().resolve(&layer)?;
    let p1 = job.thresholds(&eng, ds, Shard::ALL, &mut |_| {})?;
    let Tally::DissectQuantile(q) = &p1.tally else { unreachable!() };
    let th = Thresholds::of(&p1, q);
    let p2 = job.counts(&eng, ds, &th, Shard::ALL, &mut |_| {})?;
    assert_eq!(p2.images.len(), n, "the second pass read every image");

    let time = |f: &mut dyn FnMut() -> deepviz::Result<()>| -> deepviz::Result<(f64, f64)> {
        let (w, c) = (Instant::now(), common::cpu_s());
        f()?;
        Ok((n as f64 / w.elapsed().as_secs_f64(), n as f64 / (common::cpu_s() - c)))
    };
    let (mut fwd, mut t1, mut t2) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        fwd.push(time(&mut || dataset::pass(&eng, ds, Shard::ALL, l, batch, &mut |_| {}, "forward", |_, _| Ok(())).map(|_| ()))?);
        t1.push(time(&mut || job.thresholds(&eng, ds, Shard::ALL, &mut |_| {}).map(|_| ()))?);
        t2.push(time(&mut || job.counts(&eng, ds, &th, Shard::ALL, &mut |_| {}).map(|_| ()))?);
    }
    let m = |v: &[(f64, f64)], k: usize| median(v.iter().map(|x| if k == 0 { x.0 } else { x.1 }).collect());
    println!("efficientnet_lite0 {layer} on {backend}, {n} images 224x224, batch {batch}, {} threads, median of {rounds}", rayon::current_num_threads());
    println!("{:<22} {:>10} {:>10} {:>12} {:>12}", "", "img/s wall", "img/s cpu", "vs fwd wall", "vs fwd cpu");
    for (name, v) in [("plain forward", &fwd), ("dissect: thresholds", &t1), ("dissect: counts", &t2)] {
        println!("{name:<22} {:>10.1} {:>10.1} {:>12.3} {:>12.3}", m(v, 0), m(v, 1), m(v, 0) / m(&fwd, 0), m(v, 1) / m(&fwd, 1));
    }
    Ok(())
}
