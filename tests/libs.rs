//! Every attribution method against the libraries users run — captum 0.9.0 and
//! pytorch-grad-cam 1.5.7 — on the same model and input: torchvision's resnet18 with the golden
//! random weights, two real photos at 80x112 (Score-CAM: 40x72), each item's top class
//! (`tests/fixtures/libs/resnet18.safetensors`, made by `scripts/golden/make_libs.py`; its
//! README section lists the tensors; the stored inputs are the CLI's preprocessing of the
//! photos to within one 8-bit level: PIL's resize there, the image crate's here). Each of our
//! maps is computed on the CPU engine from the stored input and compared with the library's by
//! two figures:
//!
//! - `rel`: max |ours − theirs| / max |theirs|, at most [`REL`] = 1e-3. Float32 engines that
//!   sum in different orders agree to ~1e-5 here; a different definition is off by 1e-1 or
//!   more (the test checks that Grad-CAM vs Grad-CAM++, Grad-CAM vs LayerCAM, Grad-CAM vs
//!   XGrad-CAM at layer3, plain vs `aug_smooth` and vs `eigen_smooth` fail it).
//! - `r`: Pearson correlation, at least [`PEARSON`] = 0.9999 (what a shape change shows even
//!   when the maximum happens to agree).
//!
//! The libraries' outputs are taken as they come, with these reductions (the fixture's README
//! says which tensor is which): captum's per-channel input attributions reduced as deepviz
//! reduces them (max |·| over channels for saliency, guided backpropagation, deconvolution and
//! guided Grad-CAM; the sum for input × gradient and integrated gradients); the raw per-layer
//! CAMs of pytorch-grad-cam ReLU'd (its `BaseCAM` does that next, as deepviz's maps do).
//!
//! Deviations of deepviz from the libraries, each compared at a loose bound and, where the
//! library allows it, exactly against the library with the deviation switched off:
//!
//! - captum's `GuidedGradCam` upsamples Grad-CAM by nearest neighbour by default; deepviz by
//!   bilinear interpolation (half-pixel centres): exact against `interpolate_mode="bilinear"`.
//! - captum's `LayerGradCam` has no ReLU by default (`relu_attributions=False`); deepviz's
//!   Grad-CAM keeps the paper's ReLU (as pytorch-grad-cam's `BaseCAM`): compared after a ReLU.
//! - pytorch-grad-cam's `ScoreCAM` upsamples the masks with `UpsamplingBilinear2d`
//!   (`align_corners=True`); deepviz with half-pixel centres: exact against the library with
//!   that one module swapped, within [`SCORECAM_REL`] of the library as it is.
//! - Eigen-CAM (and `eigen_smooth`): the sign of an SVD is arbitrary; deepviz orients the
//!   projection to correlate positively with the channel sum of what it projects. The library's
//!   projection is oriented by that rule here (computed from the engine's activations and the
//!   library's raw Grad-CAM) before the comparison; where numpy's sign was the other one (both
//!   items under `eigen_smooth`), the library's own output is a different map, not compared.
//! - SmoothGrad: captum's `NoiseTunnel` draws its noise with `torch.normal` (one σ for the
//!   batch); the script replaces that call by deepviz's own noise (its generator re-implemented
//!   in numpy, σ per item), checked here by the first draws. With Gradient × Input as the base
//!   the two agree (the channel sum is linear), within [`SMOOTHGRAD_REL`]: one noisy input is
//!   ill-conditioned (a max-pool near-tie). With saliency deepviz averages the *maps* (max over
//!   channels of |g|) where captum averages each channel: ours is then at least theirs at
//!   every pixel.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::{Backend, Random};
use deepviz::engine::Engine;
use deepviz::imageio::{self, Preprocess};
use deepviz::viz::{attribution, render, MethodOptions, Target};
use deepviz::Tensor;

/// Bound on max |ours − theirs| / max |theirs| (module docs).
const REL: f64 = 1e-3;
/// Bound on the Pearson correlation (module docs).
const PEARSON: f64 = 0.9999;
/// SmoothGrad (Gradient × Input) against captum's `NoiseTunnel` with the same noise: one of the
/// 16 noisy inputs (item 1, sample 1) has a max-pool window whose two largest values differ by
/// 2.8e-6 (relative, float64); deepviz's conv1 with its batch norm folded in rounds them the
/// other way, which moves that sample's input gradient by 1e-2 (relative RMS) and the mean
/// map's worst pixel by 6e-3. With conv1 and bn1 unfolded the sample agrees to 6e-7; the other
/// 15 agree to 7e-7 as they are.
const SMOOTHGRAD_REL: f64 = 1e-2;
/// Score-CAM against the library as it is (`align_corners=True` masks): the weights are a
/// softmax of scores of differently masked inputs.
const SCORECAM_REL: f64 = 0.25;

struct Fixture {
    t: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

impl Fixture {
    fn load() -> Fixture {
        let (t, meta) = common::st::read_fixture(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/libs/resnet18.safetensors"));
        Fixture { t, meta }
    }
    fn get(&self, name: &str) -> &Tensor {
        self.t.get(name).unwrap_or_else(|| panic!("the fixture has no tensor `{name}`"))
    }
    fn targets(&self, key: &str) -> Vec<Target> {
        serde_json::from_str::<Vec<usize>>(&self.meta[key]).unwrap().into_iter().map(Target::Class).collect()
    }
}

/// (max |got − want| / max |want|, Pearson correlation), in f64.
fn agreement(got: &[f32], want: &[f32]) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "sizes differ");
    let n = got.len() as f64;
    let peak = want.iter().fold(0f64, |m, &w| m.max((w as f64).abs()));
    let diff = got.iter().zip(want).fold(0f64, |m, (&g, &w)| m.max((g as f64 - w as f64).abs()));
    let (mg, mw) = (got.iter().map(|&v| v as f64).sum::<f64>() / n, want.iter().map(|&v| v as f64).sum::<f64>() / n);
    let (mut sgw, mut sgg, mut sww) = (0.0, 0.0, 0.0);
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (g as f64 - mg, w as f64 - mw);
        sgw += g * w;
        sgg += g * g;
        sww += w * w;
    }
    (diff / peak, sgw / (sgg * sww).sqrt())
}

fn passes(got: &[f32], want: &[f32], rel: f64) -> bool {
    let (r, p) = agreement(got, want);
    r <= rel && p >= PEARSON
}

fn check(what: &str, got: &[f32], want: &[f32], rel: f64) {
    let (r, p) = agreement(got, want);
    eprintln!("{what:48} rel {r:.2e}  r {p:.6}");
    if r > rel || p < PEARSON {
        // names the worst element and writes both maps to target/test-failures/
        common::assert_close(&format!("{what}: rel {r:.3e} (bound {rel:.0e}), Pearson {p:.6} (bound {PEARSON})"), got, want, 0.0, 0.0);
    }
}

fn relu(t: &Tensor) -> Vec<f32> {
    t.data.iter().map(|v| v.max(0.0)).collect()
}

fn opts(layers: &[&str]) -> MethodOptions {
    MethodOptions { layers: layers.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

/// Our map of `name` with `o` (raw, `[n, 1, h, w]`), and pytorch-grad-cam's output from it (the
/// map upsampled to the input and scaled to [0, 1]; a combined CAM's is already that).
fn ours(eng: &Engine<Cpu>, name: &str, o: &MethodOptions, x: &Tensor, t: &[Target]) -> (Tensor, Tensor) {
    let a = attribution(eng, name, o).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (map, _) = a.attribute_on_device(&eng.upload(x).unwrap(), Some(t)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let raw = eng.download(&map).unwrap();
    let out = if a.scaled() { raw.clone() } else { render::normalized(&eng.be, &map, [x.shape[2], x.shape[3]], None).unwrap() };
    (raw, out)
}

/// The fixture and the CPU engine of its model.
fn setup() -> (Fixture, Engine<Cpu>) {
    let f = Fixture::load();
    let eng = Engine::new(Arc::new(common::st::fixture_model("resnet18")), Cpu).unwrap();
    (f, eng)
}

#[test]
fn captum_input_attributions() {
    let (f, eng) = setup();
    let (x, t) = (f.get("x"), f.targets("cls"));
    let out = eng.model().output();
    let logits = eng.forward(x.clone(), out, &[]).unwrap();
    check("logits", &logits.get(out).unwrap().data, &f.get("logits").data, REL);
    let steps: usize = f.meta["ig_steps"].parse().unwrap();
    for (name, o, theirs) in [
        ("saliency", MethodOptions::default(), "captum/Saliency"),
        ("gradxinput", MethodOptions::default(), "captum/InputXGradient"),
        ("ig", MethodOptions { samples: Some(steps), ..Default::default() }, "captum/IntegratedGradients"),
        ("guided", MethodOptions::default(), "captum/GuidedBackprop"),
        ("deconvnet", MethodOptions::default(), "captum/Deconvolution"),
        ("guided-gradcam", opts(&["layer4"]), "captum/GuidedGradCam.bilinear"),
    ] {
        let (got, _) = ours(&eng, name, &o, x, &t);
        check(&format!("{name} vs {theirs}"), &got.data, &f.get(theirs).data, REL);
    }
    // the deviation: nearest-neighbour upsampling of Grad-CAM gates the guided gradient in blocks
    let (ggc, _) = ours(&eng, "guided-gradcam", &opts(&["layer4"]), x, &t);
    let (r, p) = agreement(&ggc.data, &f.get("captum/GuidedGradCam").data);
    eprintln!("{:48} rel {r:.2e}  r {p:.6} (nearest neighbour there, bilinear here)", "guided-gradcam vs captum/GuidedGradCam");
    assert!(r > REL && p > 0.95, "guided-gradcam vs captum's nearest-neighbour default: rel {r:.2e}, r {p:.4}");
    let (gradcam, _) = ours(&eng, "gradcam", &opts(&["layer4"]), x, &t);
    check("gradcam vs captum/LayerGradCam (ReLU'd)", &gradcam.data, &relu(f.get("captum/LayerGradCam")), REL);
}

#[test]
fn grad_cam_family_at_layer3_and_layer4() {
    let (f, eng) = setup();
    let (x, t) = (f.get("x"), f.targets("cls"));
    // the raw map against the library's ReLU'd, and pytorch-grad-cam's output
    let mut raw = HashMap::new();
    for (name, theirs) in [("gradcam", "GradCAM"), ("gradcampp", "GradCAMPlusPlus"), ("xgradcam", "XGradCAM"), ("layercam", "LayerCAM"), ("ablationcam", "AblationCAM")] {
        let (got, scaled) = ours(&eng, name, &opts(&["layer4"]), x, &t);
        check(&format!("{name} vs grad-cam/{theirs}.raw (ReLU'd)"), &got.data, &relu(f.get(&format!("grad-cam/{theirs}.raw"))), REL);
        check(&format!("{name} vs grad-cam/{theirs}"), &scaled.data, &f.get(&format!("grad-cam/{theirs}")).data, REL);
        if name != "ablationcam" {
            let (got3, _) = ours(&eng, name, &opts(&["layer3"]), x, &t);
            check(&format!("{name} vs grad-cam/{theirs}.layer3.raw (ReLU'd)"), &got3.data, &relu(f.get(&format!("grad-cam/{theirs}.layer3.raw"))), REL);
            raw.insert(name, (got, got3));
        }
    }
    // the bounds tell the definitions apart
    for (a, b, layer3) in [("gradcam", "GradCAMPlusPlus", false), ("gradcam", "LayerCAM", false), ("gradcampp", "LayerCAM", false), ("gradcam", "XGradCAM", true)] {
        let (got, want) = if layer3 { (&raw[a].1, format!("grad-cam/{b}.layer3.raw")) } else { (&raw[a].0, format!("grad-cam/{b}.raw")) };
        let (r, p) = agreement(&got.data, &relu(f.get(&want)));
        eprintln!("{:48} rel {r:.2e}  r {p:.6} (must differ)", format!("{a} vs {want}"));
        assert!(!passes(&got.data, &relu(f.get(&want)), REL), "{a} passes as {want}: the bounds do not tell them apart");
    }
}

#[test]
fn eigen_cam_and_eigen_smooth_up_to_numpys_sign() {
    let (f, eng) = setup();
    let (x, t) = (f.get("x"), f.targets("cls"));
    // deepviz's orientation: the projection correlates positively with the channel sum of what
    // it projects — layer4's activations (Eigen-CAM), Σ_k α_k A_k (Grad-CAM's eigen_smooth:
    // the library's raw Grad-CAM, before its ReLU)
    let layer4 = eng.model().resolve("layer4").unwrap();
    let a = eng.forward(x.clone(), eng.model().output(), &[layer4]).unwrap().get(layer4).unwrap().clone();
    let (k, p) = (a.shape[1], a.shape[2] * a.shape[3]);
    let sum_a: Vec<f32> = (0..a.shape[0]).flat_map(|i| { let item = a.item(i); (0..p).map(move |j| (0..k).map(|c| item[c * p + j]).sum::<f32>()) }).collect();
    for (name, o, theirs, along) in [
        ("eigencam", opts(&["layer4"]), "grad-cam/EigenCAM", sum_a),
        ("gradcam", MethodOptions { eigen_smooth: true, ..opts(&["layer4"]) }, "grad-cam/GradCAM.eigen_smooth", f.get("grad-cam/GradCAM.raw").data.clone()),
    ] {
        let (got, scaled) = ours(&eng, name, &o, x, &t);
        let lib = f.get(&format!("{theirs}.raw"));
        let n = lib.shape[0];
        let per = lib.data.len() / n;
        for i in 0..n {
            let (g, l) = (&got.data[i * per..(i + 1) * per], &lib.data[i * per..(i + 1) * per]);
            let dot: f64 = l.iter().zip(&along[i * per..(i + 1) * per]).map(|(&u, &v)| u as f64 * v as f64).sum();
            let s = if dot >= 0.0 { 1.0 } else { -1.0 };
            let want: Vec<f32> = l.iter().map(|v| (s * v).max(0.0)).collect();
            check(&format!("{name} [{i}] vs {theirs}.raw ({})", if s > 0.0 { "numpy's sign" } else { "negated" }), g, &want, REL);
            if s > 0.0 {
                let o = scaled.item(i).len();
                check(&format!("{name} [{i}] vs {theirs}"), scaled.item(i), &f.get(theirs).data[i * o..(i + 1) * o], REL);
            }
        }
        if name == "gradcam" {
            let (plain, _) = ours(&eng, "gradcam", &opts(&["layer4"]), x, &t);
            assert!(!passes(&got.data, &plain.data, REL), "eigen_smooth changes nothing");
        }
    }
}

#[test]
fn several_layers_and_aug_smooth() {
    let (f, eng) = setup();
    let (x, t) = (f.get("x"), f.targets("cls"));
    let (several, _) = ours(&eng, "gradcam", &opts(&["layer3", "layer4"]), x, &t);
    check("gradcam layer3+layer4 vs grad-cam/GradCAM.layer3_layer4", &several.data, &f.get("grad-cam/GradCAM.layer3_layer4").data, REL);
    let (aug, _) = ours(&eng, "gradcam", &MethodOptions { aug_smooth: true, ..opts(&["layer4"]) }, x, &t);
    check("gradcam aug_smooth vs grad-cam/GradCAM.aug_smooth", &aug.data, &f.get("grad-cam/GradCAM.aug_smooth").data, REL);
    assert!(!passes(&aug.data, &f.get("grad-cam/GradCAM").data, REL), "aug_smooth changes nothing");
}

#[test]
fn score_cam_on_the_small_input() {
    let (f, eng) = setup();
    let (xs, ts) = (f.get("x_small"), f.targets("cls_small"));
    let (score, scaled) = ours(&eng, "scorecam", &MethodOptions { masks: Some(128), ..opts(&["layer4"]) }, xs, &ts);
    check("scorecam vs grad-cam/ScoreCAM.half_pixel.raw", &score.data, &relu(f.get("grad-cam/ScoreCAM.half_pixel.raw")), REL);
    check("scorecam vs grad-cam/ScoreCAM.half_pixel", &scaled.data, &f.get("grad-cam/ScoreCAM.half_pixel").data, REL);
    let (r, p) = agreement(&score.data, &relu(f.get("grad-cam/ScoreCAM.raw")));
    eprintln!("{:48} rel {r:.2e}  r {p:.6} (align_corners=True there)", "scorecam vs grad-cam/ScoreCAM.raw");
    assert!(r > REL && r <= SCORECAM_REL && p >= 0.9, "scorecam vs the library as it is: rel {r:.3e}, r {p:.5}");
}

#[test]
fn smoothgrad_with_deepviz_noise_in_captums_noise_tunnel() {
    let (f, eng) = setup();
    let (x, t) = (f.get("x"), f.targets("cls"));
    let sg: serde_json::Value = serde_json::from_str(&f.meta["smoothgrad"]).unwrap();
    let (samples, noise, seed) = (sg["samples"].as_u64().unwrap() as usize, sg["noise"].as_f64().unwrap() as f32, sg["seed"].as_u64().unwrap());
    // the script's numpy copy of deepviz's generator drew the same numbers (smooth.rs: sample s
    // is the normal draw of seed (seed + s)·0x2545F4914F6CDD1D)
    for (s, want) in sg["eps_check"].as_array().unwrap().iter().enumerate() {
        let eps = Cpu.random(&x.shape, seed.wrapping_add(s as u64).wrapping_mul(0x2545_F491_4F6C_DD1D), Random::Normal).unwrap();
        let want: Vec<f32> = want.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(&eps.data[..want.len()], &want[..], "sample {s}: the script's noise is not deepviz's");
    }
    let o = |base: &str| MethodOptions { base: Some(base.into()), samples: Some(samples), noise: Some(noise), seed: Some(seed), ..Default::default() };
    // Gradient × Input is linear in its channels: the mean of the sums is the sum of the means
    let (got, _) = ours(&eng, "smoothgrad", &o("gradxinput"), x, &t);
    let theirs = &f.get("captum/NoiseTunnel.InputXGradient").data;
    check("smoothgrad --base gradxinput vs captum/NoiseTunnel.InputXGradient", &got.data, theirs, SMOOTHGRAD_REL);
    // the bound still tells another draw of the noise apart
    let (other, _) = ours(&eng, "smoothgrad", &MethodOptions { seed: Some(seed + 1), ..o("gradxinput") }, x, &t);
    let (r, p) = agreement(&other.data, theirs);
    eprintln!("{:48} rel {r:.2e}  r {p:.6} (must differ)", "smoothgrad --seed 1 vs captum/NoiseTunnel.InputXGradient");
    assert!(r > 10.0 * SMOOTHGRAD_REL, "another seed's noise passes as the same");
    // saliency: deepviz averages the maps (max over channels of |g|), captum each channel's |g|
    // (then reduced by the max): the mean of maxima is at least the maximum of means
    let (got, _) = ours(&eng, "smoothgrad", &o("saliency"), x, &t);
    let theirs = &f.get("captum/NoiseTunnel.Saliency").data;
    let (r, p) = agreement(&got.data, theirs);
    eprintln!("{:48} rel {r:.2e}  r {p:.6} (mean of maxima here, maximum of means there)", "smoothgrad vs captum/NoiseTunnel.Saliency");
    let peak = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let below = got.data.iter().zip(theirs).filter(|(g, w)| **g < **w - 1e-5 * peak).count();
    assert!(below == 0 && r > REL && p > 0.9, "smoothgrad vs captum's NoiseTunnel(Saliency): {below} pixels below it, rel {r:.2e}, r {p:.4}");
}

#[test]
fn the_inputs_are_the_clis_preprocessing_of_the_photos() {
    let f = Fixture::load();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let photos: Vec<String> = serde_json::from_str(&f.meta["photos"]).unwrap();
    let imgs: Vec<_> = photos.iter().map(|p| imageio::load_rgb(&root.join(p)).unwrap()).collect();
    for key in ["x", "x_small"] {
        let x = f.get(key);
        let p = Preprocess::imagenet([x.shape[2], x.shape[3]]);
        let ours = imageio::to_tensor(&imgs, &p);
        assert_eq!(ours.shape, x.shape, "{key}");
        // in 8-bit levels: PIL's bilinear resize (the script's) and the image crate's round apart
        let plane = x.shape[2] * x.shape[3];
        let levels = ours.data.iter().zip(&x.data).enumerate().map(|(i, (a, b))| (a - b).abs() * p.std[(i / plane) % 3] * 255.0).fold(0f32, f32::max);
        eprintln!("{key}: the CLI's preprocessing is within {levels:.2} levels of the fixture's");
        assert!(levels <= 1.01, "{key}: {levels} levels from the CLI's preprocessing");
    }
}
