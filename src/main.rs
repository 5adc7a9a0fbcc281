//! The `deepviz` command: parses arguments, runs a library job ([`deepviz::job`]), prints. One
//! subcommand per attribution method of the registry ([`deepviz::viz::METHODS`]), plus
//! `classify`, `dream` and `layers`. Errors are one `error:` line and exit status 1 (usage
//! errors: 2; an interrupt: 130); a closed standard output ends the program quietly.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};
use deepviz::backend::Backend;
use deepviz::engine::Engine;
use deepviz::job::{self, DeviceChoice, DreamJob, Inputs, MapJob, Progress, TargetName, TargetSpec, WithBackend};
use deepviz::model::Model;
use deepviz::output::OutputSet;
use deepviz::viz::{LayerUse, MethodOptions, Opt, DEFAULT_MASKS, METHODS};
use deepviz::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

fn common_args(cmd: Command, with_layer: bool, writes: bool) -> Command {
    let cmd = cmd
        .arg(Arg::new("image").long("image").num_args(1..).required(true).value_parser(value_parser!(PathBuf)).help("input images (PNG, JPEG, BMP, GIF, TIFF, WebP), folders of them, or float32 NCHW .npy tensors already preprocessed"))
        .arg(Arg::new("model").long("model").value_parser(value_parser!(PathBuf)).help("model file (.safetensors); default: the embedded EfficientNet-Lite0 (ImageNet)"))
        .arg(Arg::new("arch").long("arch").help("architecture, for files without `arch` metadata (e.g. resnet50)"))
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print a machine-readable summary (JSON) on stdout"))
        .arg(Arg::new("device").long("device").default_value("auto").value_parser(["auto", "cpu", "cuda", "emu"]).help("compute device: the GPU when present (auto), the CPU engine, the GPU, or the CUDA engine on the CPU emulation"))
        .arg(Arg::new("batch-size").long("batch-size").default_value("16").value_parser(value_parser!(u64).range(1..=4096)).help("images per batch"));
    let cmd = if with_layer { cmd.arg(Arg::new("layer").long("layer").help("layer (PyTorch module path, e.g. layer4, features.29, blocks.5); `deepviz layers` lists them")) } else { cmd };
    if writes {
        cmd.arg(Arg::new("out").long("out").default_value("deepviz-out").value_parser(value_parser!(PathBuf)).help("output folder"))
            .arg(Arg::new("raw").long("raw").action(ArgAction::SetTrue).help("also write raw float32 .npy arrays"))
    } else {
        cmd
    }
}

fn cli() -> Command {
    let mut cmd = Command::new("deepviz")
        .version(env!("CARGO_PKG_VERSION"))
        .about("See what a convolutional network has learned: gradients, class activation maps and their relatives, DeepDream.")
        .subcommand_required(true)
        .arg_required_else_help(true);
    for m in METHODS {
        let sub = Command::new(m.name).about(format!("{}: {} ({})", m.title, m.about, m.paper));
        let sub = common_args(sub, m.layer != LayerUse::None, true)
            .arg(Arg::new("class").long("class").value_delimiter(',').value_parser(value_parser!(usize)).help("target class(es) for every image, e.g. 285 or 285,967 (one map each); default: each image's top class"))
            .arg(Arg::new("unit").long("unit").action(ArgAction::Append).help("target the mean of a channel of a layer, LAYER:CHANNEL (repeatable)"))
            .arg(Arg::new("neuron").long("neuron").action(ArgAction::Append).help("target one activation, LAYER:CHANNEL:Y:X (repeatable)"))
            .arg(Arg::new("class-file").long("class-file").value_parser(value_parser!(PathBuf)).help("a file of IMAGE,CLASS lines giving each image its class(es)"))
            .arg(Arg::new("clip-percentile").long("clip-percentile").value_name("P").value_parser(parse_percentile).help(format!("clip each picture at this percentile of its map before normalising (0 < P <= 100) [default: {}]; the --raw .npy stays unclipped", m.clip_percentile)))
            .arg(Arg::new("alpha").long("alpha").default_value("0.5").value_parser(parse_unit).help("opacity of the heat map in the overlay, in [0, 1]"));
        let sub = m.options.iter().fold(sub, |sub, &o| sub.arg(option_arg(m.name, o)));
        cmd = cmd.subcommand(sub);
    }
    let d = DreamJob::default().dream;
    let dream = common_args(Command::new("dream").about("DeepDream: amplify what --layer sees (maximise ½‖A‖²) over octaves, with jitter"), true, true)
        .arg(Arg::new("octaves").long("octaves").default_value(d.octaves.to_string()).value_parser(value_parser!(usize)))
        .arg(Arg::new("octave-scale").long("octave-scale").default_value(d.octave_scale.to_string()).value_parser(parse_finite))
        .arg(Arg::new("steps").long("steps").default_value(d.steps.to_string()).value_parser(value_parser!(usize)).help("gradient-ascent steps per octave"))
        .arg(Arg::new("lr").long("lr").default_value(d.lr.to_string()).value_parser(parse_finite).help("step size (normalised input units, on g / mean|g|)"))
        .arg(Arg::new("jitter").long("jitter").default_value(d.jitter.to_string()).value_parser(value_parser!(usize)).help("maximum random shift in pixels per step"))
        .arg(Arg::new("seed").long("seed").default_value(d.seed.to_string()).value_parser(value_parser!(u64)));
    let classify = common_args(Command::new("classify").about("Top-k classes with probabilities"), false, false)
        .arg(Arg::new("top").long("top").default_value("5").value_parser(value_parser!(usize)).help("how many classes to show"));
    let layers = Command::new("layers")
        .about("List the model's layers (PyTorch module paths) with what each yields")
        .arg(Arg::new("model").long("model").value_parser(value_parser!(PathBuf)).help("model file (.safetensors); default: the embedded EfficientNet-Lite0"))
        .arg(Arg::new("arch").long("arch").help("architecture, for files without `arch` metadata"))
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print JSON on stdout"));
    let trace = Command::new("trace")
        .about("Run a job of the CUDA engine on a recording device that executes nothing (no GPU needed) and print what its second run asks of a GPU: launches, allocations, frees, host syncs, bytes copied, multiply-adds executed and useful")
        .arg(Arg::new("job").required(true).value_parser(job::trace_jobs()).help("an attribution method, or dream (one step)"))
        .arg(Arg::new("model").long("model").value_parser(value_parser!(PathBuf)).help("model file (.safetensors); default: --arch with placeholder weights, or the embedded EfficientNet-Lite0"))
        .arg(Arg::new("arch").long("arch").help("architecture (with --model: for files without `arch` metadata; alone: placeholder weights, the shapes are what counts)"))
        .arg(Arg::new("batch-size").long("batch-size").default_value("1").value_parser(value_parser!(u64).range(1..=4096)).help("images per batch"))
        .arg(Arg::new("size").long("size").value_delimiter(',').num_args(1..=2).value_parser(value_parser!(u64).range(1..=4096)).help("input size H[,W]; default: the model's"))
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print JSON on stdout"));
    cmd.subcommand(dream).subcommand(classify).subcommand(layers).subcommand(trace)
}

/// The CLI argument of a method option ([`Opt`]).
fn option_arg(method: &str, o: Opt) -> Arg {
    let arg = Arg::new(o.flag()).long(o.flag());
    match o {
        Opt::Samples if method == "ig" => arg.value_parser(value_parser!(u64).range(1..=10_000)).help("Gauss-Legendre quadrature points along the path [default: 50]"),
        Opt::Samples => arg.value_parser(value_parser!(u64).range(1..=10_000)).help("noisy copies of each input [default: 50]"),
        Opt::Noise => arg.value_parser(parse_nonnegative).help("noise standard deviation as a fraction of each input's value range [default: 0.15]"),
        Opt::Smooth => arg.value_parser(["smoothgrad", "smoothgrad_sq", "vargrad"]).help("how the noisy maps combine: mean, mean of squares, variance [default: smoothgrad]"),
        Opt::Base => arg
            .value_parser(METHODS.iter().map(|m| m.name).filter(|&n| n != "smoothgrad").collect::<Vec<_>>())
            .help("the method whose maps are smoothed [default: saliency]"),
        Opt::Baseline => arg.value_parser(["zero", "black", "blur", "noise"]).help("the path's start: 0 of the network input (the mean colour), a black picture, the blurred input, uniform noise [default: zero]"),
        Opt::Seed => arg.value_parser(value_parser!(u64)).help("seed of the random noise [default: 0]"),
        Opt::Masks => arg.value_parser(value_parser!(u64).range(1..=65_536)).help(format!("masked or ablated inputs per forward pass (more is faster while memory lasts) [default: {DEFAULT_MASKS}]")),
    }
}

/// The method options the command line sets.
fn method_options(m: &ArgMatches) -> Result<MethodOptions> {
    let get = |name: &str| m.try_get_one::<String>(name).ok().flatten().cloned();
    let num = |name: &str| m.try_get_one::<u64>(name).ok().flatten().map(|&v| v as usize);
    Ok(MethodOptions {
        layer: get("layer"),
        samples: num("samples"),
        noise: m.try_get_one::<f32>("noise").ok().flatten().copied(),
        smooth: get("smooth").map(|s| s.parse()).transpose()?,
        base: get("base"),
        baseline: get("baseline").map(|s| s.parse()).transpose()?,
        seed: m.try_get_one::<u64>("seed").ok().flatten().copied(),
        masks: num("masks"),
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
    let t = job::trace(model.clone(), job, batch, size)?;
    let mut json = t.to_json();
    json["arch"] = json!(model.graph.arch);
    json["job"] = json!(job);
    json["batch"] = json!(batch);
    json["size"] = json!(size);
    let text = format!(
        "{} {job}, batch {batch}, {}x{}: {} launches, {} allocations, {} frees, {} host syncs, {} bytes up, {} bytes down, {:.3e} multiply-adds executed for {:.3e} useful ({:.1}%)\n",
        model.graph.arch,
        size[0],
        size[1],
        t.launches,
        t.allocations,
        t.frees,
        t.host_syncs,
        t.bytes_host_to_device,
        t.bytes_device_to_host,
        t.executed_macs as f64,
        t.useful_macs as f64,
        100.0 * t.useful_macs as f64 / (t.executed_macs.max(1)) as f64
    );
    Ok(Report { json, text })
}

fn parse_finite(s: &str) -> std::result::Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("a finite number, not {s}"))
    }
}

fn parse_nonnegative(s: &str) -> std::result::Result<f32, String> {
    let v = parse_finite(s)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("a number >= 0, not {s}"))
    }
}

fn parse_percentile(s: &str) -> std::result::Result<f32, String> {
    let p = parse_finite(s)?;
    if p > 0.0 && p <= 100.0 {
        Ok(p)
    } else {
        Err(format!("a percentile in (0, 100], not {s}"))
    }
}

fn parse_unit(s: &str) -> std::result::Result<f32, String> {
    let p = parse_finite(s)?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("a number in [0, 1], not {s}"))
    }
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
    match m.get_one::<String>("device").map(String::as_str) {
        Some("cpu") => DeviceChoice::Cpu,
        Some("cuda") => DeviceChoice::Cuda,
        Some("emu") => DeviceChoice::Emu,
        _ => DeviceChoice::Auto,
    }
}

/// A progress bar on stderr for the library's [`Progress`] reports.
fn progress_bar() -> impl FnMut(Progress) {
    let mut bar: Option<ProgressBar> = None;
    move |p| match p {
        Progress::Start { total, what } => {
            let b = ProgressBar::new(total as u64);
            b.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed_precise}").expect("a valid template").progress_chars("=> "));
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
    if let Some(model) = m.get_one::<PathBuf>("model") {
        out.protect(model);
    }
    out
}

fn batch_size(m: &ArgMatches) -> usize {
    *m.get_one::<u64>("batch-size").expect("has a default") as usize
}

fn targets(m: &ArgMatches, inputs: &Inputs) -> Result<TargetSpec> {
    let mut each: Vec<TargetName> = m.get_many::<usize>("class").into_iter().flatten().map(|&c| TargetName::Class(c)).collect();
    for (flag, kind) in [("unit", "unit"), ("neuron", "neuron")] {
        for v in m.get_many::<String>(flag).into_iter().flatten() {
            each.push(job::parse_target(&format!("{kind}:{v}"))?);
        }
    }
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

struct DreamCmd<'a>(&'a ArgMatches);

impl WithBackend for DreamCmd<'_> {
    type Output = Report;
    fn run<B: Backend>(self, be: B) -> Result<Report> {
        let m = self.0;
        let inputs = Inputs::expand(&m.get_many::<PathBuf>("image").expect("required").cloned().collect::<Vec<_>>())?;
        let eng = Engine::new(load_model(m)?, be)?;
        let mut job = DreamJob { layer: m.get_one::<String>("layer").cloned(), raw: m.get_flag("raw"), batch_size: batch_size(m), ..DreamJob::default() };
        let d = &mut job.dream;
        (d.octaves, d.octave_scale, d.steps) = (*m.get_one("octaves").expect("default"), *m.get_one("octave-scale").expect("default"), *m.get_one("steps").expect("default"));
        (d.lr, d.jitter, d.seed) = (*m.get_one("lr").expect("default"), *m.get_one("jitter").expect("default"), *m.get_one("seed").expect("default"));
        let mut out = output_set(m, &inputs);
        let records = job.run(&eng, &inputs, &mut out, &mut progress_bar())?;
        let text = out.commit()?.iter().map(|p| format!("wrote {}\n", p.display())).collect();
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

fn run(matches: &ArgMatches) -> Result<(Report, bool)> {
    let (name, m) = matches.subcommand().expect("a subcommand is required");
    let mut note = |s: String| eprintln!("note: {s}");
    let report = match name {
        "layers" => layers(m)?,
        "trace" => trace_cmd(m)?,
        "classify" => job::with_backend(device(m), &mut note, ClassifyCmd(m))?,
        "dream" => job::with_backend(device(m), &mut note, DreamCmd(m))?,
        method => {
            let method = METHODS.iter().find(|i| i.name == method).expect("subcommands are the methods").name;
            job::with_backend(device(m), &mut note, MapCmd { m, method })?
        }
    };
    Ok((report, m.get_flag("json")))
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
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
