//! The GPU check's comparison against PyTorch: reads what `torch_baseline.py --export` wrote
//! (`DIR/<model>/{model,input,expected}.safetensors`: random-weight torchvision / timm models,
//! an input batch, PyTorch's fp32 outputs with TF32 off), runs deepviz's saliency, Grad-CAM and
//! CAM on them, reports the relative RMS error of each (Grad-CAM / CAM upsampled bilinearly to
//! the input, as the baseline does), then times the same jobs as the baseline (saliency,
//! gradcam, cam, dream_step) at the given batch sizes.
//!
//!     cargo run --release --features cuda --example compare_torch -- DIR [--device cuda|emu|cpu]
//!         [--batches 1,8] [--iters 20] [--json FILE] [--ungraphed-batches 1,8] [--unsplit-batches 1]
//!
//! The GPU engines run behind the product's launch queue and CUDA-graph replay
//! (`deepviz::device::graph`); `--ungraphed-batches` also times those batch sizes with every
//! kernel launched one by one (rows with `"graphs":false`), the A/B of the graphs;
//! `--unsplit-batches` those batch sizes with split-K off (rows with `"split_k":false`), its A/B.
//!
//! Exit status 1 if any comparison is above its bound: 1e-3 relative RMS, or for saliency three
//! times deepviz's own sensitivity to a 1e-6 change of the input where that is larger (the
//! golden tests' rule; both verdicts are printed).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::Backend;
use deepviz::engine::Engine;
use deepviz::imageio::upsample_bilinear;
use deepviz::model::Model;
use deepviz::viz::{Attribution, Cam, DeepDream, GradCam, Objective, Saliency, Target};
use deepviz::Tensor;
use safetensors::{Dtype, SafeTensors};

fn load(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let data: Vec<f32> = match v.dtype() {
                Dtype::F32 => v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                Dtype::I64 => v.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
                d => panic!("{k}: unexpected dtype {d:?}"),
            };
            (k, (v.shape().to_vec(), data))
        })
        .collect()
}

fn rel_rms(got: &[f32], want: &[f32]) -> f64 {
    let (mut d, mut r) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        d += ((g - w) as f64).powi(2);
        r += (*w as f64).powi(2);
    }
    (d / r.max(1e-300)).sqrt()
}

/// [n, h, w] maps upsampled to [n, H, W].
fn upsample(m: &Tensor, oh: usize, ow: usize) -> Vec<f32> {
    let (n, h, w) = (m.shape[0], m.shape[1], m.shape[2]);
    (0..n).flat_map(|i| upsample_bilinear(&m.data[i * h * w..(i + 1) * h * w], h, w, oh, ow)).collect()
}

struct Args {
    dir: PathBuf,
    device: String,
    batches: Vec<usize>,
    iters: usize,
    json: Option<PathBuf>,
    precisions: Vec<deepviz::backend::Precision>,
    ungraphed: Vec<usize>,
    unsplit: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args { dir: PathBuf::new(), device: "cuda".into(), batches: vec![1, 8], iters: 20, json: None, precisions: vec![deepviz::backend::Precision::F32], ungraphed: vec![], unsplit: vec![] };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        match s.as_str() {
            "--device" => a.device = it.next().expect("--device NAME"),
            "--batches" => a.batches = it.next().expect("--batches 1,8").split(',').map(|b| b.parse().unwrap()).collect(),
            "--iters" => a.iters = it.next().expect("--iters N").parse().unwrap(),
            "--json" => a.json = Some(it.next().expect("--json FILE").into()),
            "--ungraphed-batches" => a.ungraphed = it.next().expect("--ungraphed-batches 1,8").split(',').map(|b| b.parse().unwrap()).collect(),
            "--unsplit-batches" => a.unsplit = it.next().expect("--unsplit-batches 1").split(',').map(|b| b.parse().unwrap()).collect(),
            "--precisions" => {
                a.precisions = it
                    .next()
                    .expect("--precisions fp32,tf32,bf16")
                    .split(',')
                    .map(|p| *deepviz::backend::Precision::ALL.iter().find(|q| q.name() == p).unwrap_or_else(|| panic!("unknown precision {p}")))
                    .collect()
            }
            _ => a.dir = s.into(),
        }
    }
    a
}

fn median_ms(iters: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    for _ in 0..3.min(iters) {
        f();
    }
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[0], t[t.len() - 1])
}

/// `prec`: the engine's convolution arithmetic; only fp32's comparisons count towards the exit
/// status (tf32 / bf16 errors are printed and recorded, for information).
/// `plain`: the same engine without graphs, timed at `a.ungraphed`'s batch sizes; `unsplit`:
/// with graphs, without split-K, at `a.unsplit`'s.
fn run<B: Backend + Clone>(be: B, plain: Option<B>, unsplit: Option<B>, prec: &str, a: &Args, out: &mut Vec<String>) -> bool {
    let mut ok = true;
    let mut models: Vec<PathBuf> = std::fs::read_dir(&a.dir)
        .unwrap_or_else(|e| panic!("{}: {e}", a.dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.safetensors").exists())
        .collect();
    models.sort();
    for dir in models {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = match Model::load(&dir.join("model.safetensors"), None) {
            Ok(m) => m,
            Err(e) => {
                println!("{name}: cannot load: {e}");
                ok = false;
                continue;
            }
        };
        let model = std::sync::Arc::new(model);
        let eng = Engine::new(model.clone(), be.clone()).unwrap();
        let inp = load(&dir.join("input.safetensors"));
        let exp = load(&dir.join("expected.safetensors"));
        let (xs, xd) = inp["x"].clone();
        let x = Tensor::new(xs.clone(), xd).unwrap();
        let cls: Vec<Target> = inp["cls"].1.iter().map(|&c| Target::Class(c as usize)).collect();
        let sal = Saliency::new(&eng);
        let (h, w) = (xs[2], xs[3]);
        // bound: 1e-3, or (saliency) three times deepviz's own sensitivity where larger, the rule
        // of the golden tests (tests/golden.rs)
        let mut report = |job: &str, e: f64, bound: f64| {
            let pass = e <= bound;
            if prec == "fp32" {
                ok &= pass;
                let why = if bound > 1e-3 { format!(" (bound {bound:.1e}: 3x self-sensitivity)") } else { String::new() };
                println!("{name:<20} {job:<9} rel RMS {e:.2e} {}{why}", if pass { "ok" } else { "FAIL" });
            } else {
                println!("{name:<20} {job:<9} rel RMS {e:.2e} ({prec}: for information)");
            }
            out.push(format!(
                r#"{{"kind":"compare","model":"{name}","job":"{job}","device":"{}","dtype":"{prec}","rel_rms":{e},"bound":{bound}}}"#,
                eng.be.name()
            ));
        };
        let acts = eng.forward(eng.upload(&x).unwrap(), model.output(), &[]).unwrap();
        let logits = eng.download(acts.get(model.output()).unwrap()).unwrap();
        report("logits", rel_rms(&logits.data, &exp["logits"].1), 1e-3);
        let (s, _) = sal.attribute(&x, Some(&cls)).unwrap();
        // how well-conditioned saliency is at this input: deepviz against itself at x·(1 + 1e-6).
        // A gradient through ReLU gates jumps where a pre-activation sits on its kink, so two
        // float32 engines can only agree as closely as this.
        let xp = Tensor::new(x.shape.clone(), x.data.iter().map(|v| v * (1.0 + 1e-6)).collect()).unwrap();
        let (sp, _) = sal.attribute(&xp, Some(&cls)).unwrap();
        let sens = rel_rms(&sp.data, &s.data);
        println!("{name:<20} saliency  self-sensitivity to a 1e-6 input change: {sens:.2e}");
        let e = rel_rms(&s.data, &exp["saliency"].1);
        println!("{name:<20} saliency  rel RMS {e:.2e} {} at the strict 1e-3", if e <= 1e-3 { "ok" } else { "above" });
        report("saliency", e, (3.0 * sens).max(1e-3));
        let sens_json = format!(r#"{{"kind":"sensitivity","model":"{name}","job":"saliency","device":"{}","rel_rms":{sens}}}"#, eng.be.name());
        let gc = GradCam::new(&eng, None).unwrap();
        let (g, _) = gc.attribute(&x, Some(&cls)).unwrap();
        report("gradcam", rel_rms(&upsample(&g, h, w), &exp["gradcam"].1), 1e-3);
        let cam = Cam::new(&eng).ok();
        if let (Some(cam), Some(want)) = (&cam, exp.get("cam")) {
            let (c, _) = cam.attribute(&x, Some(&cls)).unwrap();
            report("cam", rel_rms(&upsample(&c, h, w), &want.1), 1e-3);
        }
        out.push(sens_json);

        // throughput, the baseline's jobs
        time_jobs(&eng, &name, prec, &a.batches, a.iters, (true, true), [h, w], out);
        if let Some(p) = &plain {
            let plain_eng = Engine::new(model.clone(), p.clone()).unwrap();
            time_jobs(&plain_eng, &name, prec, &a.ungraphed, a.iters, (false, true), [h, w], out);
        }
        if let Some(u) = &unsplit {
            let eng = Engine::new(model.clone(), u.clone()).unwrap();
            time_jobs(&eng, &name, prec, &a.unsplit, a.iters, (true, false), [h, w], out);
        }
    }
    ok
}

/// Time saliency, Grad-CAM, CAM (where the model has its head) and one DeepDream step at each
/// batch size, as the baseline does. `(graphs, split_k)`: what the engine runs with (labels).
#[allow(clippy::too_many_arguments)]
fn time_jobs<B: Backend>(eng: &Engine<B>, name: &str, prec: &str, batches: &[usize], iters: usize, (graphs, split_k): (bool, bool), [h, w]: [usize; 2], out: &mut Vec<String>) {
    let model = eng.model();
    let sal = Saliency::new(eng);
    let gc = GradCam::new(eng, None).unwrap();
    let cam = Cam::new(eng).ok();
    let dream = DeepDream { lr: 0.01, jitter: 0, ..DeepDream::new(Objective::layer(model.resolve(&model.graph.heads.dream_layer).unwrap())) };
    let tag = format!("{}{}", if graphs { "" } else { " (no graphs)" }, if split_k { "" } else { " (no split-K)" });
    for &b in batches {
        let xb = Tensor::new(vec![b, 3, h, w], (0..b * 3 * h * w).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect()).unwrap();
        let mut img = eng.upload(&xb).unwrap();
        let mut rng = 0u64;
        let pre = model.preprocess;
        let jobs: Vec<&str> = ["saliency", "gradcam", "cam", "dream_step"].into_iter().filter(|j| *j != "cam" || cam.is_some()).collect();
        for job in jobs {
            let f = || match job {
                "saliency" => drop(sal.attribute(&xb, None).unwrap()),
                "gradcam" => drop(gc.attribute(&xb, None).unwrap()),
                "cam" => drop(cam.as_ref().unwrap().attribute(&xb, None).unwrap()),
                _ => drop(dream.step(eng, &mut img, &pre, &mut rng).unwrap()),
            };
            let (med, min, max) = median_ms(iters, f);
            println!("{name:<20} {job:<10} {prec} batch {b:>3}{tag}: {med:8.2} ms median ({min:.2}..{max:.2}), {:8.1} images/s", b as f64 * 1e3 / med);
            out.push(format!(
                r#"{{"kind":"bench","model":"{name}","job":"{job}","device":"{}","dtype":"{prec}","batch":{b},"graphs":{graphs},"split_k":{split_k},"median_ms":{med},"min_ms":{min},"max_ms":{max},"images_per_s":{}}}"#,
                eng.be.name(),
                b as f64 * 1e3 / med
            ));
        }
    }
}

/// What a launch queue has done, and why its first capture failed (if one did).
type Stats = Box<dyn Fn() -> (deepviz::device::graph::GraphStats, Option<String>)>;

/// The engine on `make()`'s device behind the product's launch queue, the same on a second device
/// without it, and the queue's counts.
fn engines<D: deepviz::device::graph::Capture + 'static>(make: impl Fn() -> D) -> ((Gpu, Gpu), Stats) {
    let g = std::sync::Arc::new(deepviz::device::graph::Graphed::new(make()));
    let s = g.clone();
    ((Gpu::new(g), Gpu::new(std::sync::Arc::new(make()))), Box::new(move || (s.stats(), s.capture_error())))
}

fn main() {
    let a = args();
    let mut out = vec![];
    // (the engine as the product makes it, the same without graphs, and what its queue did)
    let gpu: Option<((Gpu, Gpu), Stats)> = match a.device.as_str() {
        "cpu" => None,
        "emu" => Some(engines(deepviz::device::emu::EmuDevice::new)),
        #[cfg(feature = "cuda")]
        "cuda" => Some(engines(|| deepviz::device::cuda::CudaDevice::new(0).expect("CUDA device"))),
        d => panic!("unknown or unavailable device {d}"),
    };
    let mut ok = true;
    for &p in &a.precisions {
        ok &= match &gpu {
            None => run(Cpu, None, None, p.name(), &a, &mut out),
            Some(((g, plain), _)) => {
                let plain = (!a.ungraphed.is_empty()).then(|| plain.clone().with_precision(p));
                let unsplit = (!a.unsplit.is_empty()).then(|| g.clone().with_precision(p).with_split_k(false));
                run(g.clone().with_precision(p), plain, unsplit, p.name(), &a, &mut out)
            }
        };
    }
    if let Some((_, st)) = &gpu {
        // a capture the driver refused leaves its runs eager: failed_captures says so
        let (st, why) = st();
        println!("launch queue: {st:?}{}", why.map(|w| format!("; the first failed capture: {w}")).unwrap_or_default());
        out.push(format!(
            r#"{{"kind":"graphs","captures":{},"failed_captures":{},"replays":{},"replayed_ops":{},"eager_runs":{},"eager_ops":{}}}"#,
            st.captures, st.failed_captures, st.replays, st.replayed_ops, st.eager_runs, st.eager_ops
        ));
    }
    if let Some(p) = &a.json {
        let mut f = std::fs::File::create(p).unwrap();
        for l in &out {
            writeln!(f, "{l}").unwrap();
        }
    }
    std::process::exit(if ok { 0 } else { 1 });
}
