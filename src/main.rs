//! The `deepviz` command: parses arguments ([`deepviz::cli::command`]), runs a library job ([`deepviz::job`]), prints. One
//! subcommand per attribution method of the registry ([`deepviz::viz::METHODS`]), plus
//! `classify`, `dream`, `layers`, `evaluate`, `sanity`, `segment` and the dataset commands. Errors are one `error:` line and exit status 1 (usage
//! errors: 2; an interrupt: 130); a closed standard output ends the program quietly.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::ArgMatches;
use deepviz::backend::{Backend, Precision};
use deepviz::dataset::{self, dissect::Dissect, neighbors::Neighbors, top::TopPatches, tsne::Tsne, Dataset, Partial, Shard, Tally};
use deepviz::engine::Engine;
use deepviz::job::{self, DeviceChoice, DreamJob, EvaluateJob, Inputs, MapJob, MaximizeJob, Progress, SanityJob, SegmentJob, TargetName, TargetSpec, WithBackend};
use deepviz::model::Model;
use deepviz::output::OutputSet;
use deepviz::viz::evaluate::DeletionInsertion;
use deepviz::viz::segment::GrabCut;
use deepviz::viz::{Maximize, MethodOptions, METHODS};
use deepviz::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

/// The method options the command line sets.
fn method_options(m: &ArgMatches) -> Result<MethodOptions> {
    let get = |name: &str| m.try_get_one::<String>(name).ok().flatten().cloned();
    let num = |name: &str| m.try_get_one::<u64>(name).ok().flatten().map(|&v| v as usize);
    Ok(MethodOptions {
        // several layers, comma-separated (module paths have no commas)
        layers: get("layer").map(|s| s.split(',').map(|l| l.trim().to_string()).collect()).unwrap_or_default(),
        samples: num("samples"),
        noise: m.try_get_one::<f32>("noise").ok().flatten().copied(),
        smooth: get("smooth").map(|s| s.parse()).transpose()?,
        base: get("base"),
        baseline: get("baseline").map(|s| s.parse()).transpose()?,
        seed: m.try_get_one::<u64>("seed").ok().flatten().copied(),
        masks: num("masks"),
        eigen_smooth: m.try_get_one::<bool>("eigen-smooth").ok().flatten().copied().unwrap_or(false),
        aug_smooth: m.try_get_one::<bool>("aug-smooth").ok().flatten().copied().unwrap_or(false),
    })
}

fn trace_cmd(m: &ArgMatches) -> Result<Report> {
    let model = match (m.get_one::<PathBuf>("model"), m.get_one::<String>("arch")) {
        (None, Some(arch)) => Arc::new(Model::placeholder(arch)?),
        _ => load_model(m)?,
    };
    let size = match m.get_many::<u64>("size").map(|v| v.map(|&d| d as usize).collect::<Vec<_>>()) {
        Some(v) if v.len() == 2 => [v[0], v[1]],
        Some(v) => [v[0], v[0]],
        None => model.preprocess.size,
    };
    let job = m.get_one::<String>("job").expect("required");
    let batch = batch_size(m);
    let precision = precision(m).unwrap_or_else(|| job::gpu_precision(job));
    let t = job::trace(model.clone(), job, batch, size, precision)?;
    let mut json = t.to_json();
    json["arch"] = json!(model.graph.arch);
    json["job"] = json!(job);
    json["batch"] = json!(batch);
    json["precision"] = json!(precision.name());
    json["size"] = json!(size);
    let text = format!(
        "{} {job}, batch {batch}, {}x{}, {precision}: {} launches ({} driver launches), {} allocations, {} frees, {} host syncs, {} bytes up, {} bytes down, {:.3e} multiply-adds executed for {:.3e} useful ({:.1}%), GEMM grids fill {:.0}% of an H200's SMs\n",
        model.graph.arch,
        size[0],
        size[1],
        t.launches,
        t.driver_launches,
        t.allocations,
        t.frees,
        t.host_syncs,
        t.bytes_host_to_device,
        t.bytes_device_to_host,
        t.executed_macs as f64,
        t.useful_macs as f64,
        100.0 * t.useful_macs as f64 / (t.executed_macs.max(1)) as f64,
        100.0 * t.sm_fill
    );
    Ok(Report { json, text })
}

fn load_model(m: &ArgMatches) -> Result<Arc<Model>> {
    let arch = m.get_one::<String>("arch").map(String::as_str);
    Ok(Arc::new(match m.get_one::<PathBuf>("model") {
        Some(p) => {
            job::inputs::check_regular_file(p)?;
            Model::load(p, arch)?
        }
        None if arch.is_some() => return Err(Error::InvalidArgument("--arch needs --model FILE".into())),
        None => Model::default_model()?,
    }))
}

fn device(m: &ArgMatches) -> DeviceChoice {
    *m.get_one::<DeviceChoice>("device").expect("has a default")
}

fn precision(m: &ArgMatches) -> Option<Precision> {
    m.get_one::<Precision>("precision").copied()
}

/// A progress bar on stderr for the library's [`Progress`] reports.
fn progress_bar() -> impl FnMut(Progress) {
    let mut bar: Option<ProgressBar> = None;
    move |p| match p {
        Progress::Start { total, what } => {
            let b = ProgressBar::new(total as u64);
            b.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta})").expect("a valid template").progress_chars("=> "));
            b.set_message(what);
            bar = Some(b);
        }
        Progress::Advance(k) => bar.iter().for_each(|b| b.inc(k as u64)),
        Progress::Finish => bar.take().iter().for_each(|b| b.finish_and_clear()),
    }
}

/// What a command prints when it succeeded.
struct Report {
    json: Value,
    text: String,
}

/// The output set of a run: nothing it reads (the inputs found in folders included, and the
/// model file) may be replaced by an output.
fn output_set(m: &ArgMatches, inputs: &Inputs) -> OutputSet {
    let mut out = OutputSet::new(m.get_one::<PathBuf>("out").expect("has a default"));
    for p in &inputs.files {
        out.protect(p);
    }
    // every other file the command reads
    for name in ["model", "guide", "class-file"] {
        if let Some(p) = m.try_get_one::<PathBuf>(name).ok().flatten() {
            out.protect(p);
        }
    }
    out
}

fn batch_size(m: &ArgMatches) -> usize {
    *m.get_one::<u64>("batch-size").expect("has a default") as usize
}

/// The targets of `--class`, `--unit` and `--neuron`, in that order (the commands without
/// `--unit` / `--neuron` take classes only).
fn target_names(m: &ArgMatches) -> Result<Vec<TargetName>> {
    let mut each: Vec<TargetName> = m.get_many::<usize>("class").into_iter().flatten().map(|&c| TargetName::Class(c)).collect();
    for (flag, kind) in [("unit", "unit"), ("neuron", "neuron")] {
        for v in m.try_get_many::<String>(flag).ok().flatten().into_iter().flatten() {
            each.push(job::parse_target(&format!("{kind}:{v}"))?);
        }
    }
    Ok(each)
}

fn targets(m: &ArgMatches, inputs: &Inputs) -> Result<TargetSpec> {
    let each = target_names(m)?;
    match m.get_one::<PathBuf>("class-file") {
        Some(_) if !each.is_empty() => Err(Error::InvalidArgument("--class-file cannot be combined with --class, --unit or --neuron".into())),
        Some(f) => TargetSpec::from_class_file(f, inputs),
        None if each.is_empty() => Ok(TargetSpec::Top),
        None => Ok(TargetSpec::Each(each)),
    }
}

struct MapCmd<'a> {
    m: &'a ArgMatches,
    method: &'static str,
}

impl WithBackend for MapCmd<'_> {
    type Output = Report;
    fn run<B: Backend>(self, be: B) -> Result<Report> {
        let m = self.m;
        let inputs = Inputs::expand(&m.get_many::<PathBuf>("image").expect("required").cloned().collect::<Vec<_>>())?;
        let eng = Engine::new(load_model(m)?, be)?;
        let job = MapJob {
            method: self.method.to_string(),
            options: method_options(m)?,
            targets: targets(m, &inputs)?,
            clip_percentile: m.get_one::<f32>("clip-percentile").copied(),
            alpha: *m.get_one::<f32>("alpha").expect("has a default"),
            raw: m.get_flag("raw"),
            batch_size: batch_size(m),
            full_size: m.get_flag("full-size"),
            colormap: m.get_one::<String>("colormap").map(|c| c.parse()).transpose()?,
            npz: m.get_flag("npz"),
        };
        let mut out = output_set(m, &inputs);
        let records = job.run(&eng, &inputs, &mut out, &mut progress_bar())?;
        let written = out.commit()?;
        let mut text = String::new();
        for r in &records {
            let what = match (r.target.class(), &r.class_name) {
                (Some(c), Some(n)) => format!("class {c} ({n})"),
                _ => format!("{:?}", r.to_json(eng.model())["target"]),
            };
            text += &format!("{}: {what}\n", r.image.display());
        }
        for p in written {
            text += &format!("wrote {}\n", p.display());
        }
        Ok(Report { json: Value::Array(records.iter().map(|r| r.to_json(eng.model())).collect()), text })
    }
}

struct EvaluateCmd<'a>(&'a ArgMatches);

impl WithBackend for EvaluateCmd<'_> {
    type Output = Report;
    fn run<B: Backend>(self, be: B) -> Result<Report> {
        let m = self.0;
        let inputs = Inputs::expand(&m.get_many::<PathBuf>("image").expect("required").cloned().collect::<Vec<_>>())?;
        let eng = Engine::new(load_model(m)?, be)?;
        let curves = DeletionInsertion {
            steps: *m.get_one::<usize>("steps").expect("has a default"),
            fill: m.get_one::<String>("deletion-fill").expect("has a default").parse()?,
            blur_sigma: *m.get_one::<f32>("blur-sigma").expect("has a default"),
            batch_size: batch_size(m),
        };
        let job = EvaluateJob {
            method: m.get_one::<String>("method").expect("required").clone(),
            options: method_options(m)?,
            targets: targets(m, &inputs)?,
            curves,
            compare_random: m.get_flag("random"),
            seed: *m.get_one::<u64>("random-seed").expect("has a default"),
            batch_size: batch_size(m),
        };
        let mut out = output_set(m, &inputs);
        let json = job.run(&eng, &inputs, &mut out, &mut progress_bar())?;
        let method = json["method"].as_str().unwrap_or("?").to_string();
        let mut text = String::new();
        for r in json["maps"].as_array().into_iter().flatten() {
            let c = &r[method.as_str()];
            text += &format!("{}: class {} ({}): deletion AUC {:.4}, insertion AUC {:.4}", r["image"].as_str().unwrap_or("?"), r["class"], r["class_name"].as_str().unwrap_or(""), c["deletion_auc"].as_f64().unwrap_or(f64::NAN), c["insertion_auc"].as_f64().unwrap_or(f64::NAN));
            if let Some(rc) = r.get("random").filter(|_| method != "random") {
                text += &format!(" (random map: {:.4}, {:.4})", rc["deletion_auc"].as_f64().unwrap_or(f64::NAN), rc["insertion_auc"].as_f64().unwrap_or(f64::NAN));
            }
            text += "\n";
        }
        let s = &json["summary"];
        text += &format!("{method}: mean deletion AUC {:.4}, mean insertion AUC {:.4} over {} maps (lower deletion, higher insertion is better)\n", s["mean_deletion_auc"].as_f64().unwrap_or(f64::NAN), s["mean_insertion_auc"].as_f64().unwrap_or(f64::NAN), s["maps"]);
        if let (Some(d), Some(i)) = (s["random_mean_deletion_auc"].as_f64(), s["random_mean_insertion_auc"].as_f64()) {
            text += &format!("random map: mean deletion AUC {d:.4}, mean insertion AUC {i:.4}\n");
        }
        for p in out.commit()? {
            text += &format!("wrote {}\n", p.display());
        }
        Ok(Report { json, text })
    }
}

struct SanityCmd<'a>(&'a ArgMatches);

impl WithBackend for SanityCmd<'_> {
    type Output = Report;
    fn run<B: Backend>(self, be: B) -> Result<Report> {
        let m = self.0;
        let inputs = Inputs::expand(&m.get_many::<PathBuf>("image").expect("required").cloned().collect::<Vec<_>>())?;
        let eng = Engine::new(load_model(m)?, be)?;
        let job = SanityJob {
            method: m.get_one::<String>("method").expect("required").clone(),
            options: method_options(m)?,
            targets: targets(m, &inputs)?,
            granularity: m.get_one::<String>("granularity").expect("has a default").parse()?,
            upto: m.get_one::<String>("upto").cloned(),
            seed: *m.get_one::<u64>("random-seed").expect("has a default"),
            batch_size: batch_size(m),
            tile: *m.get_one::<u32>("tile").expect("has a default"),
        };
        let mut out = output_set(m, &inputs);
        let (json, _) = job.run(eng, &inputs, &mut out, &mut progress_bar())?;
        let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.3}"));
        let mut text = String::new();
        for r in json["maps"].as_array().into_iter().flatten() {
            let last = |k: &str| r[k].as_array().and_then(|a| a.last()).cloned().unwrap_or(Value::Null);
            text += &format!("{}: class {} ({}): after every layer: Spearman |map| {}, map {}, SSIM {}\n", r["image"].as_str().unwrap_or("?"), r["class"], r["class_name"].as_str().unwrap_or(""), f(&last("spearman_abs")), f(&last("spearman_raw")), f(&last("ssim")));
        }
        let steps: Vec<&str> = json["steps"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        text += &format!("{}: mean Spearman |map| per step ({} steps, from the logits down):\n", json["method"].as_str().unwrap_or("?"), steps.len().saturating_sub(1));
        for (k, name) in steps.iter().enumerate() {
            text += &format!("  {name:<32} {}  SSIM {}\n", f(&json["mean"]["spearman_abs"][k]), f(&json["mean"]["ssim"][k]));
        }
        for p in out.commit()? {
            text += &format!("wrote {}\n", p.display());
        }
        Ok(Report { json, text })
    }
}

struct SegmentCmd<'a>(&'a ArgMatches);

impl WithBackend for SegmentCmd<'_> {
    type Output = Report;
    fn run<B: Backend>(self, be: B) -> Result<Report> {
        let m = self.0;
        let inputs = Inputs::expand(&m.get_many::<PathBuf>("image").expect("required").cloned().collect::<Vec<_>>())?;
        let eng = Engine::new(load_model(m)?, be)?;
        let f = |k: &str| *m.get_one::<f64>(k).expect("has a default");
        let job = SegmentJob {
            method: m.get_one::<String>("method").expect("has a default").clone(),
            options: method_options(m)?,
            targets: targets(m, &inputs)?,
            grabcut: GrabCut { fg_quantile: f("fg-quantile"), bg_quantile: f("bg-quantile"), iterations: *m.get_one::<usize>("iterations").expect("has a default"), ..GrabCut::default() },
            raw: m.get_flag("raw"),
            full_size: m.get_flag("full-size"),
            largest_component: m.get_flag("largest-component"),
            batch_size: batch_size(m),
        };
        let mut out = output_set(m, &inputs);
        let records = job.run(&eng, &inputs, &mut out, &mut progress_bar())?;
        let mut text = String::new();
        for r in &records {
            let s = &r["seeds"];
            let what = match r["class_name"].as_str() {
                Some(name) => format!("class {} ({name})", r["class"]),
                None => r["target"].as_str().unwrap_or("?").to_string(),
            };
            text += &format!(
                "{}: {what}: foreground {:.1}% ({} foreground and {} background seeds, {} iterations)\n",
                r["image"].as_str().unwrap_or("?"),
                100.0 * r["foreground_fraction"].as_f64().unwrap_or(f64::NAN),
                s["foreground"],
                s["background"],
                r["iterations"]
            );
        }
        for p in out.commit()? {
            text += &format!("wrote {}\n", p.display());
        }
        Ok(Report { json: Value::Array(records), text })
    }
}

struct DreamCmd<'a>(&'a ArgMatches);

impl WithBackend for DreamCmd<'_> {
    type Output = Report;
    fn run<B: Backend>(self, be: B) -> Result<Report> {
        let m = self.0;
        let inputs = Inputs::expand(&m.get_many::<PathBuf>("image").expect("required").cloned().collect::<Vec<_>>())?;
        let eng = Engine::new(load_model(m)?, be)?;
        let mut job = DreamJob {
            layer: m.get_one::<String>("layer").cloned(),
            raw: m.get_flag("raw"),
            batch_size: batch_size(m),
            guide: m.get_one::<PathBuf>("guide").cloned().map(job::Guide::File),
            frames: *m.get_one::<u64>("frames").expect("default") as usize,
            zoom: *m.get_one::<f32>("zoom").expect("default"),
            ..DreamJob::default()
        };
        let d = &mut job.dream;
        (d.octaves, d.octave_scale, d.steps) = (*m.get_one("octaves").expect("default"), *m.get_one("octave-scale").expect("default"), *m.get_one("steps").expect("default"));
        (d.lr, d.jitter, d.seed) = (*m.get_one("lr").expect("default"), *m.get_one("jitter").expect("default"), *m.get_one("seed").expect("default"));
        d.tile = *m.get_one("tile").expect("default");
        let mut out = output_set(m, &inputs);
        let records = job.run(&eng, &inputs, &mut out, &mut progress_bar())?;
        let text = out.commit()?.iter().map(|p| format!("wrote {}\n", p.display())).collect();
        Ok(Report { json: Value::Array(records), text })
    }
}

struct MaximizeCmd<'a>(&'a ArgMatches);

impl WithBackend for MaximizeCmd<'_> {
    type Output = Report;
    fn run<B: Backend>(self, be: B) -> Result<Report> {
        let m = self.0;
        let eng = Engine::new(load_model(m)?, be)?;
        let f = |k: &str| *m.get_one::<f32>(k).expect("has a default");
        let u = |k: &str| *m.get_one::<usize>(k).expect("has a default");
        // the defaults of --lr, --l2, --blur-every and --noise are the parameterisation's
        let param = m.get_one::<String>("param").expect("has a default");
        let d = Maximize::named(param, m.get_one("decay-power").copied(), m.get_one("sd").copied(), !m.get_flag("no-decorrelate"))?;
        let schedule = Maximize {
            steps: u("steps"),
            lr: m.get_one("lr").copied().unwrap_or(d.lr),
            l2: m.get_one("l2").copied().unwrap_or(d.l2),
            blur_every: m.get_one("blur-every").copied().unwrap_or(d.blur_every),
            blur_sigma: f("blur-sigma"),
            jitter: u("jitter"),
            init_noise: m.get_one("noise").copied().unwrap_or(d.init_noise),
            seed: *m.get_one("seed").expect("has a default"),
            norm_pct: f("norm-pct"),
            contribution_pct: f("contribution-pct"),
            scales: m.get_many::<f32>("scale").expect("has a default").copied().collect(),
            rotate: f("rotate"),
            param: d.param,
        };
        let size = m.get_one::<usize>("size").map(|&s| [s, s]);
        let job = MaximizeJob { targets: target_names(m)?, schedule, size, raw: m.get_flag("raw"), batch_size: batch_size(m) };
        let mut out = OutputSet::new(m.get_one::<PathBuf>("out").expect("has a default"));
        if let Some(model) = m.get_one::<PathBuf>("model") {
            out.protect(model);
        }
        let records = job.run(&eng, &mut out, &mut progress_bar())?;
        let mut text = String::new();
        for r in &records {
            text += &format!("{}{}: score {:.3}\n", r["target"].as_str().unwrap_or("?"), r["class_name"].as_str().map(|c| format!(" ({c})")).unwrap_or_default(), r["score"].as_f64().unwrap_or(f64::NAN));
        }
        text += &out.commit()?.iter().map(|p| format!("wrote {}\n", p.display())).collect::<String>();
        Ok(Report { json: Value::Array(records), text })
    }
}

struct ClassifyCmd<'a>(&'a ArgMatches);

impl WithBackend for ClassifyCmd<'_> {
    type Output = Report;
    fn run<B: Backend>(self, be: B) -> Result<Report> {
        let m = self.0;
        let inputs = Inputs::expand(&m.get_many::<PathBuf>("image").expect("required").cloned().collect::<Vec<_>>())?;
        let eng = Engine::new(load_model(m)?, be)?;
        let records = job::classify_files(&eng, &inputs, *m.get_one::<usize>("top").expect("default"), batch_size(m))?;
        let mut text = String::new();
        for r in &records {
            text += &format!("{}:\n", r["image"].as_str().unwrap_or("?"));
            for q in r["top"].as_array().into_iter().flatten() {
                text += &format!("  {:>4}  {:<30} logit {:>8.3}  p {:.4}\n", q["class"], q["name"].as_str().unwrap_or(""), q["logit"].as_f64().unwrap_or(f64::NAN), q["prob"].as_f64().unwrap_or(f64::NAN));
            }
        }
        Ok(Report { json: Value::Array(records), text })
    }
}

fn layers(m: &ArgMatches) -> Result<Report> {
    let model = load_model(m)?;
    let [h, w] = model.preprocess.size;
    let rows = model.layer_table()?;
    let json = json!({
        "arch": model.graph.arch,
        "origin": model.origin,
        "layers": rows.iter().map(|r| json!({"layer": r.path, "node": r.node, "op": r.op, "shape": r.shape})).collect::<Vec<_>>(),
    });
    let mut text = format!("{} ({}), input [1, 3, {h}, {w}]; a container yields its last layer's output (→)\n", model.graph.arch, model.origin);
    for r in rows {
        let yields = if r.node == r.path { r.op.to_string() } else { format!("→ {} ({})", r.node, r.op) };
        text += &format!("  {:<40} {yields:<40} {:?}\n", r.path, r.shape);
    }
    Ok(Report { json, text })
}

/// The output set of a dataset command: nothing it reads may be replaced, and a folder dataset
/// gets no outputs inside it (the next pass would read them as images).
fn dataset_output_set(out_dir: &std::path::Path, ds: &Dataset, also: &[PathBuf]) -> Result<OutputSet> {
    if ds.root.is_dir() {
        let root = std::fs::canonicalize(&ds.root).map_err(|e| Error::io(&ds.root, e))?;
        // the nearest existing folder of --out
        let mut d = out_dir.to_path_buf();
        while !d.exists() && d.pop() {}
        let at = std::fs::canonicalize(if d.as_os_str().is_empty() { std::path::Path::new(".") } else { &d }).map_err(|e| Error::io(&d, e))?;
        if at.starts_with(&root) {
            return Err(Error::InvalidArgument(format!("--out {} is inside the dataset folder {}: choose another --out", out_dir.display(), ds.root.display())));
        }
    }
    let mut out = OutputSet::new(out_dir);
    for p in ds.files.iter().chain(also) {
        out.protect(p);
    }
    Ok(out)
}

/// The lines a dataset result prints: images read and skipped (with the first few reasons).
fn dataset_text(p: &Partial, ds: &Dataset) -> String {
    let mut text = format!("{}: {} images read", p.tally.command(), p.images.len());
    if !p.skipped.is_empty() {
        eprintln!("warning: skipped {} image(s) that could not be read (listed in the JSON):", p.skipped.len());
        for s in p.skipped.iter().take(5) {
            eprintln!("  {}: {}", ds.names.get(s.image).map_or("?", |n| n.as_str()), s.error);
        }
        text += &format!(", {} skipped", p.skipped.len());
    }
    text + "\n"
}

/// Write a pass's result: its partial state (with --shard) or the finished pictures, JSON and
/// report.
fn write_dataset_result<B: Backend>(be: &B, m: &ArgMatches, p: &Partial, ds: &Dataset, sharded: bool) -> Result<Report> {
    let mut out = dataset_output_set(m.get_one::<PathBuf>("out").expect("has a default"), ds, &m.get_one::<PathBuf>("model").into_iter().cloned().collect::<Vec<_>>())?;
    let json = if sharded {
        let name = p.file_name();
        out.add(&name, &p.to_bytes())?;
        json!({"state": out.path_of(&name), "shard": p.shards[0], "images": p.images.len(), "skipped": p.skipped.len()})
    } else {
        dataset::finish(be, p, ds, &mut out)?
    };
    let mut text = dataset_text(p, ds);
    for f in out.commit()? {
        text += &format!("wrote {}\n", f.display());
    }
    Ok(Report { json, text })
}

struct DatasetCmd<'a> {
    m: &'a ArgMatches,
    command: &'a str,
}

impl WithBackend for DatasetCmd<'_> {
    type Output = Report;
    fn run<B: Backend>(self, be: B) -> Result<Report> {
        let m = self.m;
        let ds = Dataset::open(m.get_one::<PathBuf>("dataset").expect("required"))?;
        let eng = Engine::new(load_model(m)?, be)?;
        let shard = m.get_one::<Shard>("shard").copied();
        let batch_size = batch_size(m);
        let num = |name: &str| *m.get_one::<u64>(name).expect("has a default") as usize;
        let p = match self.command {
            "top-patches" => TopPatches {
                layer: m.get_one::<String>("layer").expect("required").clone(),
                units: m.get_many::<usize>("units").map(|u| u.copied().collect()),
                k: num("top"),
                batch_size,
            }
            .run(&eng, &ds, shard.unwrap_or(Shard::ALL), &mut progress_bar())?,
            "dissect" => {
                let job = Dissect { layer: m.get_one::<String>("layer").expect("required").clone(), quantile: *m.get_one::<f64>("quantile").expect("has a default"), top: num("top"), batch_size };
                let shard_or_all = shard.unwrap_or(Shard::ALL);
                match (m.get_one::<PathBuf>("thresholds"), shard) {
                    // a first-pass shard
                    (None, Some(_)) => job.thresholds(&eng, &ds, shard_or_all, &mut progress_bar())?,
                    // the second pass (a shard, or all of it) with the merged thresholds
                    (Some(f), _) => job.counts(&eng, &ds, &dataset::dissect::Thresholds::read(f)?, shard_or_all, &mut progress_bar())?,
                    // both passes
                    (None, None) => {
                        let p = job.thresholds(&eng, &ds, Shard::ALL, &mut progress_bar())?;
                        let Tally::DissectQuantile(q) = &p.tally else { unreachable!("a first pass") };
                        job.counts(&eng, &ds, &dataset::dissect::Thresholds::of(&p, q), Shard::ALL, &mut progress_bar())?
                    }
                }
            }
            "tsne" => Tsne {
                layer: m.get_one::<String>("layer").cloned().unwrap_or_else(|| eng.model().graph.heads.gradcam_layer.clone()),
                perplexity: *m.get_one::<f32>("perplexity").expect("has a default") as f64,
                theta: *m.get_one::<f32>("theta").expect("has a default") as f64,
                seed: *m.get_one::<u64>("seed").expect("has a default"),
                tile: num("tile") as u32,
                batch_size,
            }
            .run(&eng, &ds, shard.unwrap_or(Shard::ALL), &mut progress_bar())?,
            _ => Neighbors {
                layer: m.get_one::<String>("layer").cloned().unwrap_or_else(|| eng.model().graph.heads.gradcam_layer.clone()),
                k: num("k"),
                metric: m.get_one::<String>("metric").expect("has a default").parse()?,
                queries: m.get_many::<PathBuf>("queries").expect("required").cloned().collect(),
                batch_size,
            }
            .run(&eng, &ds, shard.unwrap_or(Shard::ALL), &mut progress_bar())?,
        };
        write_dataset_result(&eng.be, m, &p, &ds, shard.is_some())
    }
}

/// `deepviz merge`: on the backend of `--device` (what the states leave to compute, t-SNE's
/// exact gradient, runs there: the same device as a single pass gives the same result).
struct MergeCmd<'a>(&'a ArgMatches);

impl WithBackend for MergeCmd<'_> {
    type Output = Report;
    fn run<B: Backend>(self, be: B) -> Result<Report> {
        let m = self.0;
        let files: Vec<PathBuf> = m.get_many::<PathBuf>("states").expect("required").cloned().collect();
        let p = Partial::merge(files.iter().map(|f| Partial::read(f)).collect::<Result<_>>()?)?;
        let ds = p.open_dataset()?;
        let mut out = dataset_output_set(m.get_one::<PathBuf>("out").expect("has a default"), &ds, &files)?;
        let json = dataset::finish(&be, &p, &ds, &mut out)?;
        let mut text = format!("merged {} shards; ", p.shards.len()) + &dataset_text(&p, &ds);
        for f in out.commit()? {
            text += &format!("wrote {}\n", f.display());
        }
        Ok(Report { json, text })
    }
}

fn dissect_compare(m: &ArgMatches) -> Result<Report> {
    let files: Vec<PathBuf> = m.get_many::<PathBuf>("compare").expect("present").cloned().collect();
    let read = |f: &PathBuf| -> Result<Value> {
        deepviz::job::inputs::check_regular_file(f)?;
        serde_json::from_slice(&std::fs::read(f).map_err(|e| Error::io(f, e))?).map_err(|e| Error::InvalidArgument(format!("{}: not a dissect.json: {e}", f.display())))
    };
    let (a, b) = (read(&files[0])?, read(&files[1])?);
    let mut out = OutputSet::new(m.get_one::<PathBuf>("out").expect("has a default"));
    files.iter().for_each(|f| out.protect(f));
    let names = [files[0].display().to_string(), files[1].display().to_string()];
    let json = dataset::dissect::compare(&a, &b, [&names[0], &names[1]], &mut out)?;
    let text = out.commit()?.iter().map(|p| format!("wrote {}\n", p.display())).collect();
    Ok(Report { json, text })
}

fn filters(m: &ArgMatches) -> Result<Report> {
    let model = load_model(m)?;
    let (picture, mut json) = dataset::filters::filter_grid(&model, m.get_one::<String>("layer").map(String::as_str))?;
    let layer = json["layer"].as_str().unwrap_or("conv").replace(['/', ':'], "_");
    let mut out = OutputSet::new(m.get_one::<PathBuf>("out").expect("has a default"));
    m.get_one::<PathBuf>("model").into_iter().for_each(|p| out.protect(p));
    let file = format!("filters_{layer}.png");
    out.add(&file, &job::png_bytes(&picture)?)?;
    let intro = format!(
        "Weights <code>{}</code> {}, {}; {}.",
        dataset::report::escape(json["weight"].as_str().unwrap_or("?")),
        json["shape"],
        dataset::report::escape(json["normalisation"].as_str().unwrap_or("")),
        dataset::report::escape(json["weights"].as_str().unwrap_or(""))
    );
    json["file"] = json!(file);
    let info = serde_json::to_vec_pretty(&json).expect("JSON serialises");
    out.add("filters.json", &info)?;
    let fig = dataset::report::Figure { file: file.clone(), caption: format!("{} ({})", json["layer"].as_str().unwrap_or("?"), json["kind"].as_str().unwrap_or("")) };
    out.add("index.html", dataset::report::page("filters", &intro, &[fig], &["filters.json"]).as_bytes())?;
    let text = out.commit()?.iter().map(|p| format!("wrote {}\n", p.display())).collect();
    Ok(Report { json, text })
}

fn gen_dataset(m: &ArgMatches) -> Result<Report> {
    let num = |name: &str| *m.get_one::<u64>(name).expect("has a default");
    let dir = m.get_one::<PathBuf>("out").expect("required");
    let mut out = OutputSet::new(dir);
    let (count, seed, size) = (num("count") as usize, num("seed"), num("size") as u32);
    let planted = if m.get_flag("broden") {
        let mut images = OutputSet::new(dir.join("images"));
        let planted = dataset::synth::generate_broden(&mut out, &mut images, count, seed, size)?;
        images.commit()?; // the pictures first: the folder is a dataset once index.csv exists
        planted
    } else {
        dataset::synth::generate(&mut out, count, seed, size)?
    };
    let json = Value::Array(planted.iter().map(|p| json!({"image": p.name, "colour": p.colour, "shape": p.shape, "box": p.bbox})).collect());
    out.commit()?;
    Ok(Report { json, text: format!("wrote {} pictures into {}\n", planted.len(), dir.display()) })
}

fn run(matches: &ArgMatches) -> Result<(Report, bool)> {
    let (name, m) = matches.subcommand().expect("a subcommand is required");
    let mut note = |s: String| eprintln!("note: {s}");
    let report = match name {
        "layers" => layers(m)?,
        "trace" => trace_cmd(m)?,
        "merge" => job::with_backend(device(m), None, Precision::F32, &mut note, MergeCmd(m))?,
        "filters" => filters(m)?,
        "gen-dataset" => gen_dataset(m)?,
        "dissect" if m.contains_id("compare") => dissect_compare(m)?,
        command @ ("top-patches" | "neighbors" | "dissect" | "tsne") => job::with_backend(device(m), precision(m), job::gpu_precision(command), &mut note, DatasetCmd { m, command })?,
        "evaluate" => {
            let method = m.get_one::<String>("method").expect("required");
            job::with_backend(device(m), precision(m), job::gpu_precision(method), &mut note, EvaluateCmd(m))?
        }
        "sanity" => {
            let method = m.get_one::<String>("method").expect("required");
            job::with_backend(device(m), precision(m), job::gpu_precision(method), &mut note, SanityCmd(m))?
        }
        "segment" => {
            let method = m.get_one::<String>("method").expect("has a default");
            job::with_backend(device(m), precision(m), job::gpu_precision(method), &mut note, SegmentCmd(m))?
        }
        "classify" => job::with_backend(device(m), precision(m), job::gpu_precision(name), &mut note, ClassifyCmd(m))?,
        "dream" => job::with_backend(device(m), precision(m), job::gpu_precision(name), &mut note, DreamCmd(m))?,
        // a gradient at the pixels, like saliency: fp32 on the GPU unless asked
        "maximize" => job::with_backend(device(m), precision(m), Precision::F32, &mut note, MaximizeCmd(m))?,
        method => {
            let method = METHODS.iter().find(|i| i.name == method).expect("subcommands are the methods").name;
            job::with_backend(device(m), precision(m), job::gpu_precision(method), &mut note, MapCmd { m, method })?
        }
    };
    Ok((report, m.get_flag("json")))
}

fn main() -> ExitCode {
    let matches = deepviz::cli::command().get_matches();
    // Ctrl-C / SIGTERM / SIGHUP: undo the output set (a commit in progress finishes or rolls
    // back first), then exit as a shell expects of an interrupted program
    let _ = ctrlc::set_handler(|| {
        deepviz::output::abort_all();
        eprintln!("error: interrupted; no output was written");
        std::process::exit(130);
    });
    let (report, as_json) = match run(&matches) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = if as_json { serde_json::to_string_pretty(&report.json).expect("JSON values serialise") + "\n" } else { report.text };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // a reader that stopped early (`| head`) is not an error
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            ExitCode::FAILURE
        }
    }
}
