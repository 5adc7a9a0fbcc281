//! The `deepviz` command line as a value: [`command`] builds the clap [`Command`] the binary
//! parses (one subcommand per attribution method of [`crate::viz::METHODS`], plus `dream`,
//! `classify`, `layers`, `trace`, `evaluate`, `sanity`, `segment` and the dataset commands) with the value parsers
//! that refuse bad numbers at parse time. It lives in the library so that tests and the fuzzer (`fuzz/`) parse exactly what the
//! binary parses; `src/main.rs` runs what was parsed.

use std::path::PathBuf;

use clap::{value_parser, Arg, ArgAction, Command};

use crate::backend::Precision;
use crate::dataset::tsne::{DEVICE_EXACT_UP_TO, EXACT_MAX, EXACT_UP_TO};
use crate::job::{self, DeviceChoice, DreamJob};
use crate::viz::fourier::Fourier;
use crate::viz::segment::GrabCut;
use crate::viz::{LayerUse, Maximize, Opt, DEFAULT_MASKS, METHODS};

/// What `--model` takes, for every subcommand's help.
const MODEL_FILES: &str = "model file: .safetensors (a PyTorch state dict, `arch` in its metadata or --arch) or .onnx \
    (a CNN from torch.onnx.export: its graph, weights and module names; a final Softmax is dropped; README: ONNX models)";

fn common_args(cmd: Command, with_layer: bool, writes: bool) -> Command {
    let cmd = model_args(cmd.arg(Arg::new("image").long("image").num_args(1..).required(true).value_parser(value_parser!(PathBuf)).help("input images (PNG, JPEG, BMP, GIF, TIFF, WebP), folders of them, or float32 NCHW .npy tensors already preprocessed")));
    let cmd = if with_layer { cmd.arg(Arg::new("layer").long("layer").help("layer (PyTorch module path, e.g. layer4, features.29, blocks.5); `deepviz layers` lists them")) } else { cmd };
    if writes {
        out_args(cmd)
    } else {
        cmd
    }
}

/// `--out` and `--raw`.
fn out_args(cmd: Command) -> Command {
    cmd.arg(Arg::new("out").long("out").default_value("deepviz-out").value_parser(value_parser!(PathBuf)).help("output folder"))
        .arg(Arg::new("raw").long("raw").action(ArgAction::SetTrue).help("also write raw float32 .npy arrays"))
}

/// The model, where it runs, and the batch: `--model --arch --json --device --precision --batch-size`.
fn model_args(cmd: Command) -> Command {
    cmd.arg(Arg::new("model").long("model").value_parser(value_parser!(PathBuf)).help(format!("{MODEL_FILES}; default: the embedded EfficientNet-Lite0 (ImageNet)")))
        .arg(Arg::new("arch").long("arch").help("architecture, for files without `arch` metadata (e.g. resnet50)"))
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print a machine-readable summary (JSON) on stdout"))
        .arg(Arg::new("device").long("device").default_value("auto").value_parser(|s: &str| s.parse::<DeviceChoice>().map_err(|e| e.to_string())).help("compute device: auto (the first GPU when the driver sees one, else the CPU engine), cpu, cuda (= cuda:0), cuda:N (GPU number N), or emu (the CUDA engine on a CPU emulation of the GPU: slow, for checking kernels)"))
        .arg(Arg::new("precision").long("precision").value_parser(|s: &str| s.parse::<Precision>().map_err(|e| e.to_string())).help("arithmetic of the GPU engine's convolutions: fp32 (exact), tf32 or bf16 tensor-core operands with f32 accumulation [default on a GPU: tf32, as PyTorch does on Ampere and newer, except fp32 for the gradients at the pixels (saliency, gradxinput, guided, deconvnet, guided-gradcam, smoothgrad, ig), which TF32 visibly changes; always fp32 on the CPU engine, fp32 on the emulator unless asked]"))
        .arg(Arg::new("batch-size").long("batch-size").default_value("16").value_parser(value_parser!(u64).range(1..=4096)).help("images per batch"))
}

/// The `deepviz` command (parse with `get_matches` or `try_get_matches_from`).
pub fn command() -> Command {
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
            .arg(Arg::new("alpha").long("alpha").default_value("0.5").value_parser(parse_unit).help("opacity of the heat map in the overlay, in [0, 1]"))
            .arg(Arg::new("colormap").long("colormap").value_parser(crate::imageio::Colormap::ALL.map(|c| c.name())).help(format!("the heat maps' colours [default: {}]", m.colormap.name())))
            .arg(Arg::new("npz").long("npz").action(ArgAction::SetTrue).help("also write every raw map of the run in one {method}.npz, written as batches finish: maps float32 [N, h, w], and per map its image, stem and target (numpy.load reads it)"))
            .arg(Arg::new("full-size").long("full-size").action(ArgAction::SetTrue).help("also write the overlay at each image's own resolution (*_overlay_full.png): the map over the centre crop the network saw, the rest of the image darkened; the JSON's `crop` gives that window in the image's pixels"));
        let sub = m.options.iter().fold(sub, |sub, &o| sub.arg(option_arg(m.name, o)));
        let sub = if m.options.contains(&Opt::AugSmooth) {
            sub.mut_arg("layer", |a| a.help("layer(s), PyTorch module paths (e.g. layer4, features.29, blocks.5); several, comma-separated (layer3,layer4), give one map combined as pytorch-grad-cam's target_layers: each ReLU'd, scaled to [0, 1] and resized to the input, averaged; `deepviz layers` lists them"))
        } else {
            sub
        };
        cmd = cmd.subcommand(sub);
    }
    let d = DreamJob::default().dream;
    let dream = common_args(Command::new("dream").about("DeepDream: amplify what --layer sees (maximise ½‖A‖²) over octaves, with jitter"), true, true)
        .arg(Arg::new("octaves").long("octaves").default_value(d.octaves.to_string()).value_parser(value_parser!(usize)))
        .arg(Arg::new("octave-scale").long("octave-scale").default_value(d.octave_scale.to_string()).value_parser(parse_finite))
        .arg(Arg::new("steps").long("steps").default_value(d.steps.to_string()).value_parser(value_parser!(usize)).help("gradient-ascent steps per octave"))
        .arg(Arg::new("lr").long("lr").default_value(d.lr.to_string()).value_parser(parse_finite).help("step size (normalised input units, on g / mean|g|)"))
        .arg(Arg::new("jitter").long("jitter").default_value(d.jitter.to_string()).value_parser(value_parser!(usize)).help("maximum random shift in pixels per step"))
        .arg(Arg::new("seed").long("seed").default_value(d.seed.to_string()).value_parser(value_parser!(u64)))
        .arg(Arg::new("tile").long("tile").default_value("0").value_parser(value_parser!(usize)).help("0: each octave through the network whole; N (>= 32): pictures larger than N pixels a side go through in tiles of at most N, so memory follows the tile, not the picture (the notebook's calc_grad_tiled; the shift per step is then up to N)"))
        .arg(Arg::new("guide").long("guide").value_parser(value_parser!(PathBuf)).help("a guide image: dream towards what the layer sees in it (each position pulled to the guide's most similar feature vector, the DeepDream notebook's objective_guide) instead of amplifying ½‖A‖²"))
        .arg(Arg::new("frames").long("frames").default_value("1").value_parser(value_parser!(u64).range(1..=100_000)).help("frames of the zoom loop: each frame dreams on the previous one zoomed into its centre ({stem}_dream_0000.png, ...)"))
        .arg(Arg::new("zoom").long("zoom").default_value(DreamJob::default().zoom.to_string()).value_parser(parse_finite).help("zoom per frame of the loop, as a fraction of the side cut away (the notebook's 0.05), in [0, 0.5)"));
    let (x, xf) = (Maximize::default(), Maximize::fourier());
    let lucid = Fourier::default();
    let maximize = out_args(model_args(Command::new("maximize").about(
        "Activation maximisation: the picture that most excites each target, by gradient ascent on the picture (or, --param fourier, on lucid's decorrelated Fourier spectrum) with L2 decay, blur, jitter, random scale and rotation (class model visualisation: Simonyan, Vedaldi, Zisserman 2014, Deep Inside Convolutional Networks; regularisers: Yosinski et al. 2015; transforms and parameterisation: lucid / Olah et al. 2017)",
    )))
    .arg(Arg::new("class").long("class").value_delimiter(',').value_parser(value_parser!(usize)).help("class(es) whose pre-softmax score to maximise, e.g. 130,285 (one picture each)"))
    .arg(Arg::new("unit").long("unit").action(ArgAction::Append).help("maximise the mean of a channel of a layer, LAYER:CHANNEL (repeatable)"))
    .arg(Arg::new("neuron").long("neuron").action(ArgAction::Append).help("maximise one activation, LAYER:CHANNEL:Y:X (repeatable)"))
    .arg(Arg::new("steps").long("steps").default_value(x.steps.to_string()).value_parser(value_parser!(usize)).help("gradient-ascent steps"))
    .arg(Arg::new("param").long("param").default_value("pixels").value_parser(["pixels", "fourier"]).help("what the step moves: the pixels, or lucid / lucent's decorrelated Fourier spectrum (to_valid_rgb(fft_image(...), decorrelate=True)); fourier changes the defaults of --lr, --l2, --blur-every and --noise"))
    .arg(Arg::new("decay-power").long("decay-power").value_name("P").value_parser(parse_finite).help(format!("--param fourier: the spectrum's amplitudes scale as 1 / f^P (lucid's decay_power) [default: {}]", lucid.decay_power)))
    .arg(Arg::new("sd").long("sd").value_name("SD").value_parser(parse_finite).help(format!("--param fourier: σ of the starting spectrum (lucid's sd) [default: {}]", lucid.sd)))
    .arg(Arg::new("no-decorrelate").long("no-decorrelate").action(ArgAction::SetTrue).help("--param fourier: the three channels are R, G, B, not lucid's decorrelated colour components"))
    .arg(Arg::new("lr").long("lr").value_parser(parse_finite).help(format!("step size (normalised input units, or spectrum units with --param fourier, on g / mean|g|) [default: {}; fourier: {}]", x.lr, xf.lr)))
    .arg(Arg::new("l2").long("l2").value_parser(parse_finite).help(format!("λ of the −λ‖x‖² regulariser [default: {}; fourier: {}]", x.l2, xf.l2)))
    .arg(Arg::new("blur-every").long("blur-every").value_parser(value_parser!(usize)).help(format!("blur the picture every N steps (0: never; pixels only) [default: {}; fourier: {}]", x.blur_every, xf.blur_every)))
    .arg(Arg::new("blur-sigma").long("blur-sigma").default_value(x.blur_sigma.to_string()).value_parser(parse_finite).help("the blur's σ in pixels"))
    .arg(Arg::new("jitter").long("jitter").default_value(x.jitter.to_string()).value_parser(value_parser!(usize)).help("maximum random shift in pixels per step"))
    .arg(Arg::new("noise").long("noise").value_parser(parse_finite).help(format!("σ of the starting noise around the mean image (0: the zero image; pixels only) [default: {}; fourier: {}]", x.init_noise, xf.init_noise)))
    .arg(Arg::new("norm-pct").long("norm-pct").value_name("P").default_value(x.norm_pct.to_string()).value_parser(parse_finite).help("every step, set the pixels whose norm is at or below this percentile to the mean colour (Yosinski et al. 2015; 0: never)"))
    .arg(Arg::new("contribution-pct").long("contribution-pct").value_name("P").default_value(x.contribution_pct.to_string()).value_parser(parse_finite).help("every step, set the pixels whose contribution |Σ_c x·∂S/∂x| is at or below this percentile to the mean colour (Yosinski et al. 2015; 0: never)"))
    .arg(Arg::new("scale").long("scale").value_name("S,...").value_delimiter(',').default_value(x.scales.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")).value_parser(value_parser!(f32)).help("every step, zoom each picture about its centre by a factor drawn from this list (lucid's random_scale; > 1 magnifies; 1: never)"))
    .arg(Arg::new("rotate").long("rotate").value_name("DEG").default_value(x.rotate.to_string()).value_parser(value_parser!(f32)).help("every step, turn each picture about its centre by an angle drawn from [-DEG, DEG] (lucid's random_rotate; 0: never); with a scale or a rotation, a second jitter of up to --jitter / 2 pixels follows"))
    .arg(Arg::new("size").long("size").value_parser(value_parser!(usize)).help("picture side in pixels [default: the model's input size]"))
    .arg(Arg::new("seed").long("seed").default_value(x.seed.to_string()).value_parser(value_parser!(u64)));
    let classify = common_args(Command::new("classify").about("Top-k classes with probabilities"), false, false)
        .arg(Arg::new("top").long("top").default_value("5").value_parser(value_parser!(usize)).help("how many classes to show"));
    let layers = Command::new("layers")
        .about("List the model's layers (PyTorch module paths) with what each yields")
        .arg(Arg::new("model").long("model").value_parser(value_parser!(PathBuf)).help(format!("{MODEL_FILES}; default: the embedded EfficientNet-Lite0")))
        .arg(Arg::new("arch").long("arch").help("architecture, for files without `arch` metadata"))
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print JSON on stdout"));
    let trace = Command::new("trace")
        .about("Run a job of the CUDA engine on a recording device that executes nothing (no GPU needed) and print what its second run asks of a GPU: launches, allocations, frees, host syncs, bytes copied, multiply-adds executed and useful")
        .arg(Arg::new("job").required(true).value_parser(job::trace_jobs()).help("an attribution method, or dream (one step)"))
        .arg(Arg::new("model").long("model").value_parser(value_parser!(PathBuf)).help(format!("{MODEL_FILES}; default: --arch with placeholder weights, or the embedded EfficientNet-Lite0")))
        .arg(Arg::new("arch").long("arch").help("architecture (with --model: for files without `arch` metadata; alone: placeholder weights, the shapes are what counts)"))
        .arg(Arg::new("batch-size").long("batch-size").default_value("1").value_parser(value_parser!(u64).range(1..=4096)).help("images per batch"))
        .arg(Arg::new("precision").long("precision").value_parser(|s: &str| s.parse::<Precision>().map_err(|e| e.to_string())).help("arithmetic of the convolutions (fp32, tf32, bf16); default: what a GPU run of the job uses"))
        .arg(Arg::new("size").long("size").value_delimiter(',').num_args(1..=2).value_parser(value_parser!(u64).range(1..=4096)).help("input size H[,W]; default: the model's"))
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print JSON on stdout"));
    cmd.subcommand(dream).subcommand(maximize).subcommand(classify).subcommand(layers).subcommand(trace).subcommands(judge_commands()).subcommand(segment_command()).subcommands(dataset_commands())
}

/// `evaluate` and `sanity`: judging an attribution method's maps. The method is a positional
/// argument checked by the library (an unknown one is an error, exit 1), and so are the numbers
/// that make no curve (`--steps 0`).
fn judge_commands() -> Vec<Command> {
    let d = crate::viz::evaluate::DeletionInsertion::default();
    let method = |what: &str| Arg::new("method").required(true).help(format!("the attribution method ({}){what}", METHODS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")));
    let judged = |cmd: Command, what: &str| out_only(method_args(cmd.arg(method(what)), "evaluation"));
    let evaluate = judged(
        Command::new("evaluate").about("Judge a method's maps by RISE's deletion and insertion curves (Petsiuk et al. 2018): the class probability as the top-ranked pixels are deleted (replaced by the mean colour) or inserted into a blurred copy, with the areas under both curves; per map a plot, evaluate_METHOD.json / .csv, the mean areas"),
        ", or `random` (a uniform-noise ranking)",
    )
    .arg(Arg::new("steps").long("steps").default_value(d.steps.to_string()).value_parser(value_parser!(usize)).help("points of each curve after the first: fractions 0, 1/S, ..., 1"))
    .arg(Arg::new("deletion-fill").long("deletion-fill").default_value(d.fill.name()).help("what deleted pixels become: zero (0 of the normalised input, the mean colour; RISE) or black"))
    .arg(Arg::new("blur-sigma").long("blur-sigma").default_value(d.blur_sigma.to_string()).value_parser(parse_finite).help("sigma in pixels of the blurred image insertion starts from (RISE: 5)"))
    .arg(Arg::new("random").long("random").action(ArgAction::SetTrue).help("also draw and report each image's curves for a random map (uniform noise): a good map beats it"))
    .arg(Arg::new("random-seed").long("random-seed").default_value("0").value_parser(value_parser!(u64)).help("seed of the random maps (image i of the run: seed + i)"));
    let sanity = judged(
        Command::new("sanity").about("The model-parameter randomisation test (Adebayo et al. 2018): re-initialise the network's convolution and linear layers from the logits down, cumulatively, and compare each image's map after every step with the original (Spearman rank correlation of |map| and of map, SSIM); per map a grid and a plot, sanity_METHOD.json"),
        "",
    )
    .arg(Arg::new("upto").long("upto").value_name("STEP").help("stop the cascade after this step (a layer's module path, or a block's with --granularity block, e.g. _blocks.10); default: down to the input"))
    .arg(Arg::new("granularity").long("granularity").default_value("layer").help("what one step re-initialises: layer (one convolution or linear layer) or block (a top-level module with its index: layer4.1, _blocks.15)"))
    .arg(Arg::new("random-seed").long("random-seed").default_value("0").value_parser(value_parser!(u64)).help("seed of the re-initialised weights"))
    .arg(Arg::new("tile").long("tile").default_value("112").value_parser(value_parser!(u32)).help("side of each map in the grid, in pixels"));
    vec![evaluate, sanity]
}

/// What a command that runs any attribution method takes: the images, the model, `--layer`,
/// class targets (one `what` each) and every method option.
fn method_args(cmd: Command, what: &str) -> Command {
    let cmd = common_args(cmd, true, false)
        .arg(Arg::new("class").long("class").value_delimiter(',').value_parser(value_parser!(usize)).help(format!("target class(es) for every image (one {what} each); default: each image's top class")))
        .arg(Arg::new("class-file").long("class-file").value_parser(value_parser!(PathBuf)).help("a file of IMAGE,CLASS lines giving each image its class(es)"));
    Opt::ALL.into_iter().fold(cmd, |c, o| c.arg(option_arg("", o).help_heading("Method options")))
}

/// `segment`: weakly supervised segmentation seeded by a method's map. The method and the
/// quantiles' order are checked by the library (exit 1).
fn segment_command() -> Command {
    let g = GrabCut::default();
    let names = METHODS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ");
    let cmd = Command::new("segment").about(
        "Weakly supervised segmentation (Simonyan, Vedaldi, Zisserman 2014, §3.1): the map's pixels above its --fg-quantile seed the foreground, those below its --bg-quantile the background, and GrabCut (colour Gaussian mixtures, 8-neighbour graph cut, iterated) labels the rest; per map {stem}_segment_mask.png (white: foreground) and _overlay.png (background darkened, boundary drawn)",
    );
    out_args(method_args(cmd, "mask"))
        .arg(Arg::new("method").long("method").default_value("saliency").help(format!("the attribution method whose map seeds the segmentation ({names})")))
        .arg(Arg::new("fg-quantile").long("fg-quantile").default_value(g.fg_quantile.to_string()).value_parser(parse_quantile).help("map values at or above this quantile seed the foreground"))
        .arg(Arg::new("bg-quantile").long("bg-quantile").default_value(g.bg_quantile.to_string()).value_parser(parse_quantile).help("map values at or below this quantile seed the background (below --fg-quantile)"))
        .arg(Arg::new("iterations").long("iterations").default_value(g.iterations.to_string()).value_parser(value_parser!(usize)).help("at most this many GrabCut rounds (refit the colour models, cut again); fewer when the mask stops changing"))
        .arg(Arg::new("largest-component").long("largest-component").action(ArgAction::SetTrue).help("keep only the largest 8-connected foreground region of each mask, as the paper does (drops foreground seeds outside it)"))
        .arg(Arg::new("full-size").long("full-size").action(ArgAction::SetTrue).help("also write the mask and overlay at each image's own resolution (*_segment_mask_full.png, *_segment_overlay_full.png): the mask resized (nearest) into the centre crop the network saw, background elsewhere"))
}

/// `--out` alone.
fn out_only(cmd: Command) -> Command {
    cmd.arg(Arg::new("out").long("out").default_value("deepviz-out").value_parser(value_parser!(PathBuf)).help("output folder"))
}

/// The options every dataset command shares: the dataset, the model, the device, the shard.
fn dataset_args(cmd: Command) -> Command {
    cmd.arg(Arg::new("dataset").required(true).value_parser(value_parser!(PathBuf)).help("a folder of images (searched recursively, sorted) or a list file (one image path a line, relative to the list)"))
        .arg(Arg::new("model").long("model").value_parser(value_parser!(PathBuf)).help("model file (.safetensors); default: the embedded EfficientNet-Lite0 (ImageNet)"))
        .arg(Arg::new("arch").long("arch").help("architecture, for files without `arch` metadata (e.g. resnet50)"))
        .arg(Arg::new("device").long("device").default_value("auto").value_parser(|s: &str| s.parse::<DeviceChoice>().map_err(|e| e.to_string())).help("compute device: auto (the first GPU when the driver sees one, else the CPU engine), cpu, cuda (= cuda:0), cuda:N, or emu (the CUDA engine on a CPU emulation of the GPU)"))
        .arg(Arg::new("precision").long("precision").value_parser(|s: &str| s.parse::<Precision>().map_err(|e| e.to_string())).help("arithmetic of the GPU engine's convolutions: fp32, tf32 or bf16 [default on a GPU: tf32, as PyTorch; fp32 on the CPU engine and the emulator]; give every shard of one job the same (the partial state does not record it yet)"))
        .arg(Arg::new("batch-size").long("batch-size").default_value("16").value_parser(value_parser!(u64).range(1..=4096)).help("images per batch"))
        .arg(Arg::new("shard").long("shard").value_name("i/N").value_parser(parse_shard).help("process only shard i of N (images whose index is i mod N) and write its partial state, {command}.shard-i-of-N.json, into --out; `deepviz merge` combines the N states into the result"))
        .arg(Arg::new("out").long("out").default_value("deepviz-out").value_parser(value_parser!(PathBuf)).help("output folder (not inside the dataset folder)"))
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print a machine-readable summary (JSON) on stdout"))
}

fn dataset_commands() -> Vec<Command> {
    let top = dataset_args(Command::new("top-patches").about("The top-k most activating images of a dataset per unit of a layer, cropped to the unit's receptive field, with its map overlaid: one grid PNG per unit, top-patches.json, index.html"))
        .arg(Arg::new("layer").long("layer").required(true).help("layer (PyTorch module path); `deepviz layers` lists them"))
        .arg(Arg::new("units").long("units").value_delimiter(',').value_parser(value_parser!(usize)).help("channels of the layer, e.g. 0,5,7 [default: all]"))
        .arg(Arg::new("top").long("top").default_value("9").value_parser(value_parser!(u64).range(1..=1000)).help("images per unit (k)"));
    let neighbors = dataset_args(Command::new("neighbors").about("The k nearest dataset images to each query by a layer's (global-average-pooled) features, beside the nearest by raw pixels: neighbors.png, neighbors.json, index.html"))
        .arg(Arg::new("layer").long("layer").help("layer (PyTorch module path) [default: the last feature layer]"))
        .arg(Arg::new("k").long("k").default_value("5").value_parser(value_parser!(u64).range(1..=1000)).help("neighbours per query"))
        .arg(Arg::new("metric").long("metric").default_value("cosine").value_parser(["cosine", "l2"]).help("feature distance: 1 - cosine similarity, or Euclidean"))
        .arg(Arg::new("queries").long("queries").num_args(1..).required(true).value_parser(value_parser!(PathBuf)).help("query image files"));
    let dissect = dataset_args(Command::new("dissect").about("Network Dissection (Bau et al. 2017) of a layer over a dataset in the Broden layout (index.csv, images/, label.csv, category.csv): per unit its top-0.5% activation threshold (exact), then the IoU of its thresholded, upsampled maps with every concept's masks; each unit's best concept: dissect.json, dissect.csv, detectors.png, top images per unit, index.html. With --shard: the first pass's state (dissect-quantile.shard-i-of-N.json; `deepviz merge` makes dissect-thresholds.json), or with --thresholds the second pass's (dissect.shard-i-of-N.json; merge makes the result)"))
        .arg(Arg::new("layer").long("layer").required_unless_present("compare").help("layer (PyTorch module path); `deepviz layers` lists them"))
        .arg(Arg::new("thresholds").long("thresholds").value_parser(value_parser!(PathBuf)).help("dissect-thresholds.json from `deepviz merge` of the first pass's shards: run the second pass only"))
        .arg(Arg::new("quantile").long("quantile").default_value("0.005").value_parser(parse_fraction).help("the top fraction of a unit's activations its mask keeps"))
        .mut_arg("dataset", |a| a.required(false).required_unless_present("compare"))
        .arg(Arg::new("compare").long("compare").num_args(2).value_names(["A", "B"]).value_parser(value_parser!(PathBuf)).conflicts_with_all(["thresholds", "shard"]).help("instead of dissecting: two dissect.json files (two models, or two layers) side by side: compare.png, compare.json, index.html"))
        .arg(Arg::new("top").long("top").default_value("5").value_parser(value_parser!(u64).range(1..=100)).help("top images shown per unit"));
    let tsne = dataset_args(Command::new("tsne").about(format!("A 2-D t-SNE of a layer's (global-average-pooled) features over a dataset, drawn as the \"cnn embed\" mosaic (each image in the grid cell nearest its embedded position): tsne.csv (name,x,y), tsne.png, tsne.json, index.html. Exact gradients up to {EXACT_UP_TO} images ({DEVICE_EXACT_UP_TO} on a GPU, where they run on the device), Barnes-Hut (van der Maaten, JMLR 2014) beyond")))
        .arg(Arg::new("layer").long("layer").help("layer (PyTorch module path) [default: the last feature layer]"))
        .arg(Arg::new("perplexity").long("perplexity").default_value("30").value_parser(parse_finite).help("t-SNE perplexity (at most (images - 1) / 3 is used)"))
        .arg(Arg::new("theta").long("theta").default_value("0.5").value_parser(parse_unit).help(format!("Barnes-Hut's accuracy past {EXACT_UP_TO} images: a quadtree cell is summarised where its side / distance < theta; 0 = exact gradients at any size (O(n^2) a step, at most {EXACT_MAX} images)")))
        .arg(Arg::new("seed").long("seed").default_value("0").value_parser(value_parser!(u64)).help("seed of the random start"))
        .arg(Arg::new("tile").long("tile").default_value("48").value_parser(value_parser!(u64).range(4..=512)).help("side of each image's cell in the mosaic, in pixels"));
    let merge = Command::new("merge")
        .about("Combine the partial states of every shard of one dataset job (--shard i/N) into its result, exactly as one pass would have made it")
        .arg(Arg::new("states").required(true).num_args(1..).value_parser(value_parser!(PathBuf)).help("the N partial-state files (*.shard-i-of-N.json)"))
        .arg(Arg::new("out").long("out").default_value("deepviz-out").value_parser(value_parser!(PathBuf)).help("output folder"))
        .arg(Arg::new("device").long("device").default_value("auto").value_parser(|s: &str| s.parse::<DeviceChoice>().map_err(|e| e.to_string())).help("device for what is left to compute (t-SNE's exact gradient runs on a GPU): auto, cpu, cuda, cuda:N or emu; the single pass's device gives the single pass's result"))
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print a machine-readable summary (JSON) on stdout"));
    let filters = Command::new("filters")
        .about("A convolution's weights as a picture: the first convolution's filters as RGB tiles, or --layer's as per-channel grey grids (each filter min-max normalised; the conv's own weights, before batch-norm folding)")
        .arg(Arg::new("layer").long("layer").help("a convolution (PyTorch module path) [default: the first]"))
        .arg(Arg::new("model").long("model").value_parser(value_parser!(PathBuf)).help("model file (.safetensors); default: the embedded EfficientNet-Lite0"))
        .arg(Arg::new("arch").long("arch").help("architecture, for files without `arch` metadata"))
        .arg(Arg::new("out").long("out").default_value("deepviz-out").value_parser(value_parser!(PathBuf)).help("output folder"))
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print JSON on stdout"));
    let gen = Command::new("gen-dataset")
        .about("Write a generated dataset of pictures with one planted shape (square, disc, stripes) in one colour (red, green, blue, yellow) on noisy grey: for tests and demos")
        .arg(Arg::new("out").long("out").required(true).value_parser(value_parser!(PathBuf)).help("folder to write into"))
        .arg(Arg::new("count").long("count").default_value("32").value_parser(value_parser!(u64).range(1..=100_000)))
        .arg(Arg::new("seed").long("seed").default_value("0").value_parser(value_parser!(u64)))
        .arg(Arg::new("size").long("size").default_value("64").value_parser(value_parser!(u64).range(8..=4096)).help("side of each picture in pixels"))
        .arg(Arg::new("broden").long("broden").action(ArgAction::SetTrue).help("write the Broden layout (index.csv, images/ with label images, label.csv, category.csv) with a `color` category named from the pixels and a `shape` category from the planted regions: a dataset for `deepviz dissect` whose answer is known"))
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print JSON on stdout"));
    vec![top, neighbors, dissect, tsne, merge, filters, gen]
}

fn parse_shard(s: &str) -> std::result::Result<crate::dataset::Shard, String> {
    s.parse().map_err(|e: crate::Error| e.to_string())
}

fn parse_fraction(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("a fraction in (0, 1), not {s}"))
    }
}

/// A number in [0, 1] as [`parse_unit`] checks it, kept in f64 (0.3 stays 0.3 in the JSON).
fn parse_quantile(s: &str) -> std::result::Result<f64, String> {
    parse_unit(s)?;
    s.parse().map_err(|e| format!("{e}"))
}

fn parse_finite(s: &str) -> std::result::Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("a finite number, not {s}"))
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
        Opt::AugSmooth => arg.action(ArgAction::SetTrue).help("pytorch-grad-cam's aug_smooth: the mean map over six copies of the input (flipped left-right or not, times 0.9, 1, 1.1), each map scaled to [0, 1] at the input's size (less noise, 6x the time)"),
        Opt::EigenSmooth => arg.action(ArgAction::SetTrue).help("pytorch-grad-cam's eigen_smooth: the first principal component of the weighted activations instead of their sum over the channels (less noise)"),
        Opt::Masks => arg.value_parser(value_parser!(u64).range(1..=65_536)).help(format!("masked or ablated inputs per forward pass (more is faster while memory lasts) [default: {DEFAULT_MASKS}]")),
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
