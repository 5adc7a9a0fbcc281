//! The attribution methods against what each must satisfy:
//!
//! - on a network small enough to compute by hand (conv 3→4, ReLU, conv 4→5, ReLU, global
//!   average pool, linear 5→3, on 6x6 inputs), every gradient method and every CAM variant
//!   against an independent float64 implementation of its definition written out below
//!   (forward, backward under each rule, the CAM weightings, Score-CAM's masks and
//!   Ablation-CAM's ablations by hand);
//! - Integrated Gradients' completeness and its quadrature's exactness;
//! - SmoothGrad with zero noise equals its base method;
//! - CAM equals Grad-CAM at the last layer of a GAP network up to a positive scale;
//! - Score-CAM and Ablation-CAM give the same maps however many masks share a forward pass;
//! - the rerun-from-a-layer pass (`Engine::forward_from`) reproduces the forward pass across
//!   residual connections;
//! - Eigen-CAM's projection on a matrix whose principal component is known;
//! - several target layers and `aug_smooth` combine the single-layer maps as pytorch-grad-cam
//!   does (each ReLU'd, min–max scaled, averaged, scaled again; six flipped and scaled inputs,
//!   their maps flipped back and averaged);
//! - DeepDream's guided objective: its value and one step, from the layer's output by hand; a
//!   tiled step from the tiles' own gradients; the zoom loop's zoom on a ramp, where bilinear
//!   interpolation is exact;
//! - every method of the registry on the emulated CUDA engine equals the CPU engine.

mod common;

use std::sync::Arc;

use common::rel_rms;
use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::{Act, Backend};
use deepviz::engine::{Engine, Rule};
use deepviz::graph::{GraphBuilder, Heads};
use deepviz::model::Model;
use deepviz::viz::{attribution, eigen_projection, gauss_legendre, zoom, Attribution, DeepDream, IntegratedGradients, MethodOptions, Objective, Target, METHODS};
use deepviz::Tensor;

const C: [usize; 3] = [3, 4, 5]; // channels: input, conv1, conv2
const K: usize = 3; // classes
const S: usize = 6; // side

fn tiny_model() -> Model {
    let mut b = GraphBuilder::new("tiny");
    let x = b.input();
    let c1 = b.conv_k("conv1", x, C[0], C[1], 3, 1, 1, true);
    let r1 = b.act("relu1", c1, Act::Relu);
    let c2 = b.conv_k("conv2", r1, C[1], C[2], 3, 1, 1, true);
    let r2 = b.act("relu2", c2, Act::Relu);
    let p = b.adaptive_avg_pool("pool", r2, [1, 1]);
    let f = b.flatten("flatten", p);
    let fc = b.linear("fc", f, C[2], K, true);
    b.set_input_size(S, S);
    let g = b.finish(fc, Heads { gradcam_layer: "relu2".into(), dream_layer: "relu2".into(), cam: Some(("relu2".into(), "fc".into())) });
    let params = g
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let n: usize = p.shape.iter().product();
            // biases positive so most ReLUs are open, weights of both signs
            let v = common::seeded(7000 + i as u64, n).iter().map(|v| if p.shape.len() == 1 { 0.1 + 0.2 * v.abs() } else { 0.6 * v }).collect();
            Arc::new(Tensor::new(p.shape.clone(), v).unwrap())
        })
        .collect();
    Model::from_graph(g, params, "tiny test network").unwrap()
}

/// The tiny network by hand, in float64.
struct Ref {
    w: Vec<Vec<f64>>,
}

type Map = Vec<f64>; // [c][y][x]

#[derive(Clone, Copy, PartialEq)]
enum RuleRef {
    Gradient,
    Guided,
    Deconv,
}

impl Ref {
    fn new(m: &Model) -> Ref {
        Ref { w: m.params.iter().map(|p| p.data.iter().map(|&v| v as f64).collect()).collect() }
    }
    fn conv(&self, x: &Map, layer: usize, cin: usize, cout: usize) -> Map {
        let (w, b) = (&self.w[2 * layer], &self.w[2 * layer + 1]);
        let mut y = vec![0.0; cout * S * S];
        for o in 0..cout {
            for i in 0..S {
                for j in 0..S {
                    let mut s = b[o];
                    for c in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (p, q) = (i as isize + ky as isize - 1, j as isize + kx as isize - 1);
                                if (0..S as isize).contains(&p) && (0..S as isize).contains(&q) {
                                    s += w[((o * cin + c) * 3 + ky) * 3 + kx] * x[(c * S + p as usize) * S + q as usize];
                                }
                            }
                        }
                    }
                    y[(o * S + i) * S + j] = s;
                }
            }
        }
        y
    }
    fn conv_t(&self, gy: &Map, layer: usize, cin: usize, cout: usize) -> Map {
        let w = &self.w[2 * layer];
        let mut gx = vec![0.0; cin * S * S];
        for o in 0..cout {
            for i in 0..S {
                for j in 0..S {
                    for c in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (p, q) = (i as isize + ky as isize - 1, j as isize + kx as isize - 1);
                                if (0..S as isize).contains(&p) && (0..S as isize).contains(&q) {
                                    gx[(c * S + p as usize) * S + q as usize] += w[((o * cin + c) * 3 + ky) * 3 + kx] * gy[(o * S + i) * S + j];
                                }
                            }
                        }
                    }
                }
            }
        }
        gx
    }
    /// (conv1, relu1, conv2, relu2, logits)
    fn forward(&self, x: &Map) -> (Map, Map, Map, Map, Vec<f64>) {
        let z1 = self.conv(x, 0, C[0], C[1]);
        let a1: Map = z1.iter().map(|v| v.max(0.0)).collect();
        let z2 = self.conv(&a1, 1, C[1], C[2]);
        let a2: Map = z2.iter().map(|v| v.max(0.0)).collect();
        let logits = self.head(&a2);
        (z1, a1, z2, a2, logits)
    }
    fn head(&self, a2: &Map) -> Vec<f64> {
        let gap: Vec<f64> = (0..C[2]).map(|k| a2[k * S * S..(k + 1) * S * S].iter().sum::<f64>() / (S * S) as f64).collect();
        (0..K).map(|t| self.w[5][t] + (0..C[2]).map(|k| self.w[4][t * C[2] + k] * gap[k]).sum::<f64>()).collect()
    }
    fn relu_back(z: &Map, g: &Map, rule: RuleRef) -> Map {
        z.iter()
            .zip(g)
            .map(|(&z, &g)| match rule {
                RuleRef::Gradient => if z > 0.0 { g } else { 0.0 },
                RuleRef::Guided => if z > 0.0 && g > 0.0 { g } else { 0.0 },
                RuleRef::Deconv => g.max(0.0),
            })
            .collect()
    }
    /// Gradients of logit `t` at relu1's and relu2's outputs and at the input.
    fn backward(&self, x: &Map, t: usize, rule: RuleRef) -> (Map, Map, Map) {
        let (z1, _, z2, _, _) = self.forward(x);
        let ga2: Map = (0..C[2] * S * S).map(|i| self.w[4][t * C[2] + i / (S * S)] / (S * S) as f64).collect();
        let gz2 = Self::relu_back(&z2, &ga2, rule);
        let ga1 = self.conv_t(&gz2, 1, C[1], C[2]);
        let gz1 = Self::relu_back(&z1, &ga1, rule);
        let gx = self.conv_t(&gz1, 0, C[0], C[1]);
        (ga1, ga2, gx)
    }
}

fn item(x: &Tensor, i: usize) -> Map {
    x.item(i).iter().map(|&v| v as f64).collect()
}

fn abs_max_c(g: &Map, c: usize) -> Map {
    (0..S * S).map(|p| (0..c).map(|ch| g[ch * S * S + p].abs()).fold(0.0, f64::max)).collect()
}

/// Σ_k w_k A_k, then ReLU.
fn weighted(a: &Map, w: &[f64]) -> Map {
    (0..S * S).map(|p| w.iter().enumerate().map(|(k, wk)| wk * a[k * S * S + p]).sum::<f64>().max(0.0)).collect()
}

fn cam_ref(kind: &str, a: &Map, g: &Map, k: usize) -> Map {
    if kind == "layercam" {
        return (0..S * S).map(|p| (0..k).map(|c| g[c * S * S + p].max(0.0) * a[c * S * S + p]).sum::<f64>().max(0.0)).collect();
    }
    weighted(a, &cam_weights(kind, a, g, k))
}

/// The channel weights of Grad-CAM, Grad-CAM++ and XGrad-CAM.
fn cam_weights(kind: &str, a: &Map, g: &Map, k: usize) -> Vec<f64> {
    let plane = |m: &Map, c: usize| m[c * S * S..(c + 1) * S * S].to_vec();
    (0..k)
        .map(|c| {
            let (ac, gc) = (plane(a, c), plane(g, c));
            let sum_a: f64 = ac.iter().sum();
            match kind {
                "gradcam" => gc.iter().sum::<f64>() / (S * S) as f64,
                "gradcampp" => gc.iter().map(|&g| g.max(0.0) * g * g / (2.0 * g * g + sum_a * g * g * g + 1e-6)).sum(),
                "xgradcam" => gc.iter().zip(&ac).map(|(g, a)| g * a / (sum_a + 1e-7)).sum(),
                _ => unreachable!(),
            }
        })
        .collect()
}

fn input(n: usize, seed: u64) -> Tensor {
    Tensor::new(vec![n, 3, S, S], common::seeded(seed, n * 3 * S * S)).unwrap()
}

fn map_of<B: Backend>(eng: &Engine<B>, name: &str, opts: &MethodOptions, x: &Tensor, t: &[Target]) -> Tensor {
    attribution(eng, name, opts).unwrap_or_else(|e| panic!("{name}: {e}")).attribute(x, Some(t)).unwrap_or_else(|e| panic!("{name}: {e}")).0
}

fn layer(name: &str) -> MethodOptions {
    MethodOptions { layers: vec![name.into()], ..Default::default() }
}

fn check(what: &str, got: &[f32], want: &[f64]) {
    let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
    let e = rel_rms(got, &want);
    assert!(e < 1e-5, "{what}: relative RMS {e:.2e}\n got {got:?}\nwant {want:?}");
    assert!(want.iter().any(|&v| v != 0.0), "{what}: the reference is all zeros, the check would prove nothing");
}

#[test]
fn gradient_methods_match_their_definitions_by_hand() {
    let m = Arc::new(tiny_model());
    let r = Ref::new(&m);
    let eng = Engine::new(m, Cpu).unwrap();
    let x = input(2, 1);
    let t = [Target::Class(2), Target::Class(0)];
    let maps = |name: &str| map_of(&eng, name, &MethodOptions::default(), &x, &t);
    let (sal, gxi, gb, dc) = (maps("saliency"), maps("gradxinput"), maps("guided"), maps("deconvnet"));
    let gcam = map_of(&eng, "guided-gradcam", &layer("relu1"), &x, &t);
    for i in 0..2 {
        let (xi, ti) = (item(&x, i), [2, 0][i]);
        let (_, _, g) = r.backward(&xi, ti, RuleRef::Gradient);
        check("saliency", sal.item(i), &abs_max_c(&g, 3));
        let gx: Map = (0..S * S).map(|p| (0..3).map(|c| g[c * S * S + p] * xi[c * S * S + p]).sum()).collect();
        check("gradient x input", gxi.item(i), &gx);
        let (_, _, g) = r.backward(&xi, ti, RuleRef::Guided);
        check("guided backprop", gb.item(i), &abs_max_c(&g, 3));
        // guided Grad-CAM at relu1 (same size as the input: the upsampling is the identity)
        let (_, a1, ..) = r.forward(&xi);
        let (ga1, ..) = r.backward(&xi, ti, RuleRef::Gradient);
        let cam = cam_ref("gradcam", &a1, &ga1, C[1]);
        let gg: Map = (0..3 * S * S).map(|j| g[j] * cam[j % (S * S)]).collect();
        check("guided grad-cam", gcam.item(i), &abs_max_c(&gg, 3));
        let (_, _, g) = r.backward(&xi, ti, RuleRef::Deconv);
        check("deconvnet", dc.item(i), &abs_max_c(&g, 3));
    }
}

#[test]
fn cam_variants_match_their_definitions_by_hand() {
    let m = Arc::new(tiny_model());
    let r = Ref::new(&m);
    let eng = Engine::new(m, Cpu).unwrap();
    let x = input(2, 2);
    let t = [Target::Class(1), Target::Class(2)];
    for at in ["relu1", "relu2"] {
        for kind in ["gradcam", "gradcampp", "xgradcam", "layercam"] {
            let got = map_of(&eng, kind, &layer(at), &x, &t);
            for i in 0..2 {
                let xi = item(&x, i);
                let (_, a1, _, a2, _) = r.forward(&xi);
                let (ga1, ga2, _) = r.backward(&xi, [1, 2][i], RuleRef::Gradient);
                let want = if at == "relu1" { cam_ref(kind, &a1, &ga1, C[1]) } else { cam_ref(kind, &a2, &ga2, C[2]) };
                check(&format!("{kind} at {at}, item {i}"), got.item(i), &want);
            }
        }
    }
}

/// `eigen_smooth` (pytorch-grad-cam's): the first principal component of the weighted
/// activations — w_k·A_k, or ReLU(g)·A for LayerCAM, computed here in f64 from the reference —
/// instead of their channel sum ([`eigen_projection`] is checked on its own below).
#[test]
fn eigen_smooth_projects_the_weighted_activations() {
    let m = Arc::new(tiny_model());
    let r = Ref::new(&m);
    let eng = Engine::new(m, Cpu).unwrap();
    let x = input(2, 5);
    let t = [Target::Class(0), Target::Class(2)];
    let plane = |m: &Map, c: usize| m[c * S * S..(c + 1) * S * S].to_vec();
    for kind in ["gradcam", "gradcampp", "xgradcam", "layercam"] {
        let opts = MethodOptions { layers: vec!["relu2".into()], eigen_smooth: true, ..Default::default() };
        let got = map_of(&eng, kind, &opts, &x, &t);
        let plain = map_of(&eng, kind, &layer("relu2"), &x, &t);
        for i in 0..2 {
            let xi = item(&x, i);
            let (_, _, _, a, _) = r.forward(&xi);
            let (_, g, _) = r.backward(&xi, [0, 2][i], RuleRef::Gradient);
            let k = C[2];
            let w = if kind == "layercam" { vec![f64::NAN; k] } else { cam_weights(kind, &a, &g, k) };
            let wa: Vec<f32> = (0..k)
                .flat_map(|c| {
                    let (ac, gc, wc) = (plane(&a, c), plane(&g, c), w[c]);
                    (0..S * S).map(move |p| (if wc.is_nan() { gc[p].max(0.0) * ac[p] } else { wc * ac[p] }) as f32).collect::<Vec<_>>()
                })
                .collect();
            let want: Vec<f64> = eigen_projection(&wa, k, S * S).iter().map(|&v| v as f64).collect();
            let e = rel_rms(got.item(i), &want.iter().map(|&v| v as f32).collect::<Vec<_>>());
            assert!(e < 1e-4 && want.iter().any(|&v| v > 0.0), "{kind} eigen_smooth, item {i}: relative RMS {e:.2e}");
            assert_ne!(got.item(i), plain.item(i), "{kind}: eigen_smooth changed nothing");
        }
    }
    // a method without channel weights refuses it
    let opts = MethodOptions { eigen_smooth: true, ..Default::default() };
    assert!(attribution(&eng, "saliency", &opts).is_err());
}

#[test]
fn score_cam_and_ablation_cam_match_their_definitions_by_hand_for_any_batching() {
    let m = Arc::new(tiny_model());
    let r = Ref::new(&m);
    let eng = Engine::new(m, Cpu).unwrap();
    let x = input(2, 3);
    let t = [Target::Class(0), Target::Class(1)];
    for masks in [1, 3, 64] {
        let opts = |l: &str| MethodOptions { layers: vec![l.into()], masks: Some(masks), ..Default::default() };
        let score = map_of(&eng, "scorecam", &opts("relu1"), &x, &t);
        let ablation = map_of(&eng, "ablationcam", &opts("relu1"), &x, &t);
        let ablation2 = map_of(&eng, "ablationcam", &opts("relu2"), &x, &t);
        for i in 0..2 {
            let (xi, ti) = (item(&x, i), t[i].class().unwrap());
            let (_, a1, _, a2, logits) = r.forward(&xi);
            // Score-CAM: each channel of relu1 (6x6, the input's size) scaled to [0, 1] masks x
            let scores: Vec<f64> = (0..C[1])
                .map(|k| {
                    let plane = &a1[k * S * S..(k + 1) * S * S];
                    let (lo, hi) = plane.iter().fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                    let masked: Map = (0..3 * S * S).map(|j| xi[j] * (plane[j % (S * S)] - lo) / (hi - lo + 1e-8)).collect();
                    r.forward(&masked).4[ti]
                })
                .collect();
            let mx = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
            let w: Vec<f64> = e.iter().map(|v| v / e.iter().sum::<f64>()).collect();
            check(&format!("score-cam, {masks} masks a pass, item {i}"), score.item(i), &weighted(&a1, &w));
            // Ablation-CAM at relu1: channel k zeroed, the rest rerun by hand
            let y = logits[ti];
            let w: Vec<f64> = (0..C[1])
                .map(|k| {
                    let mut a = a1.clone();
                    a[k * S * S..(k + 1) * S * S].iter_mut().for_each(|v| *v = 0.0);
                    let a2: Map = r.conv(&a, 1, C[1], C[2]).iter().map(|v| v.max(0.0)).collect();
                    (y - r.head(&a2)[ti]) / y
                })
                .collect();
            check(&format!("ablation-cam at relu1, {masks} a pass, item {i}"), ablation.item(i), &weighted(&a1, &w));
            let w: Vec<f64> = (0..C[2])
                .map(|k| {
                    let mut a = a2.clone();
                    a[k * S * S..(k + 1) * S * S].iter_mut().for_each(|v| *v = 0.0);
                    (y - r.head(&a)[ti]) / y
                })
                .collect();
            check(&format!("ablation-cam at relu2, {masks} a pass, item {i}"), ablation2.item(i), &weighted(&a2, &w));
        }
    }
}

#[test]
fn forward_from_a_layer_reproduces_the_forward_pass_across_residual_connections() {
    let m = Arc::new(common::st::fixture_model("resnet18"));
    let eng = Engine::new(m.clone(), Cpu).unwrap();
    let x = eng.upload(&Tensor::new(vec![2, 3, 32, 32], common::seeded(5, 2 * 3 * 32 * 32)).unwrap()).unwrap();
    let out = m.output();
    // inside a residual block: the block's input reaches its sum around the rerun layer
    for name in ["layer3.1.conv1", "layer3.1.bn1", "layer2", "layer4.1.relu"] {
        let from = m.resolve(name).unwrap();
        let mut keep = eng.boundary(from, out).unwrap();
        keep.push(from);
        let acts = eng.forward(x.clone(), out, &keep).unwrap();
        let want = eng.download(acts.get(out).unwrap()).unwrap();
        // the layer's own value, each item repeated 3 times
        let v = eng.download(acts.get(from).unwrap()).unwrap();
        let rep: Vec<f32> = (0..2).flat_map(|i| std::iter::repeat_n(v.item(i).to_vec(), 3).flatten()).collect();
        let mut shape = v.shape.clone();
        shape[0] = 6;
        let got = eng.download(&eng.forward_from(&acts, from, eng.upload(&Tensor::new(shape, rep).unwrap()).unwrap(), out, 3).unwrap()).unwrap();
        for i in 0..6 {
            let e = rel_rms(got.item(i), want.item(i / 3));
            assert!(e < 1e-6, "{name}: copy {i}: relative RMS {e:.2e}");
        }
    }
    // a layer whose boundary was not kept is an error, not a panic
    let from = m.resolve("layer3.1.conv1").unwrap();
    let acts = eng.forward(x.clone(), out, &[from]).unwrap();
    let v = acts.get(from).unwrap().clone();
    assert!(eng.forward_from(&acts, from, v, out, 1).is_err());
}

#[test]
fn integrated_gradients_is_complete_and_its_quadrature_exact() {
    for n in [1, 2, 5, 16, 50] {
        let q = gauss_legendre(n);
        assert_eq!(q.len(), n);
        for p in 0..2 * n {
            let integral: f64 = q.iter().map(|(x, w)| w * x.powi(p as i32)).sum();
            assert!((integral - 1.0 / (p + 1) as f64).abs() < 1e-13, "{n} points, x^{p}: {integral}");
        }
    }
    // Gauss–Legendre is exact for polynomials, not for a ReLU network's piecewise-linear path:
    // the error shrinks with the steps (captum reports the same "convergence delta")
    let tiny = (Engine::new(Arc::new(tiny_model()), Cpu).unwrap(), input(2, 9));
    let r18 = (Engine::new(Arc::new(common::st::fixture_model("resnet18")), Cpu).unwrap(), Tensor::new(vec![2, 3, 32, 32], common::seeded(9, 6144)).unwrap());
    for (eng, x, baseline, steps, bound) in [
        (&tiny.0, &tiny.1, "zero", 256, 1e-2),
        (&tiny.0, &tiny.1, "black", 256, 1e-2),
        (&tiny.0, &tiny.1, "blur", 256, 1e-2),
        (&tiny.0, &tiny.1, "noise", 256, 1e-2),
        (&r18.0, &r18.1, "zero", 64, 0.05),
        (&r18.0, &r18.1, "blur", 64, 0.05),
    ] {
        let opts = MethodOptions { samples: Some(steps), baseline: Some(baseline.parse().unwrap()), ..Default::default() };
        let ig = IntegratedGradients::from_options(eng, &opts).unwrap();
        let a = ig.attribute_with_extras(&eng.upload(x).unwrap(), None).unwrap();
        let err = eng.download(&a.extras[0].1).unwrap();
        let map = eng.download(&a.map).unwrap();
        // F(x) − F(x′) = Σ attributions − error
        let sum: Vec<f32> = (0..2).map(|i| map.item(i).iter().sum()).collect();
        for i in 0..2 {
            let gap = (sum[i] - err.data[i]).abs();
            assert!(gap > 1e-3, "{baseline}: F(x) − F(x′) is {gap}: the check would prove nothing");
            let rel = err.data[i].abs() / gap;
            eprintln!("{} {baseline}, {steps} steps, item {i}: completeness error {:.3e} of F(x) − F(x′) = {gap:.4} ({rel:.2e})", eng.model().origin, err.data[i]);
            assert!(rel < bound, "{baseline}, item {i}: completeness error {} for F(x) − F(x′) = {gap}", err.data[i]);
        }
    }
}

#[test]
fn integrated_gradients_matches_its_definition_by_hand() {
    let m = Arc::new(tiny_model());
    let r = Ref::new(&m);
    let pre = m.preprocess;
    let eng = Engine::new(m, Cpu).unwrap();
    let x = input(2, 11);
    let t = [Target::Class(1), Target::Class(0)];
    for baseline in ["zero", "black"] {
        let opts = MethodOptions { samples: Some(24), baseline: Some(baseline.parse().unwrap()), ..Default::default() };
        let got = map_of(&eng, "ig", &opts, &x, &t);
        for i in 0..2 {
            let xi = item(&x, i);
            let base: Map = (0..3 * S * S).map(|j| if baseline == "zero" { 0.0 } else { -(pre.mean[j / (S * S)] / pre.std[j / (S * S)]) as f64 }).collect();
            let mut avg = vec![0.0; 3 * S * S];
            for (alpha, w) in gauss_legendre(24) {
                let xk: Map = base.iter().zip(&xi).map(|(b, x)| b + alpha * (x - b)).collect();
                let (_, _, g) = r.backward(&xk, [1, 0][i], RuleRef::Gradient);
                avg.iter_mut().zip(&g).for_each(|(a, g)| *a += w * g);
            }
            let want: Map = (0..S * S).map(|p| (0..3).map(|c| (xi[c * S * S + p] - base[c * S * S + p]) * avg[c * S * S + p]).sum()).collect();
            check(&format!("integrated gradients, {baseline} baseline, item {i}"), got.item(i), &want);
        }
    }
}

#[test]
fn smoothgrad_without_noise_is_its_base_method() {
    let m = Arc::new(tiny_model());
    let eng = Engine::new(m, Cpu).unwrap();
    let x = input(2, 4);
    let t = [Target::Class(2), Target::Class(1)];
    for (base, l) in [("saliency", None), ("gradcam", Some("relu1")), ("ig", None)] {
        let want = map_of(&eng, base, &MethodOptions { layers: l.map(String::from).into_iter().collect(), ..Default::default() }, &x, &t);
        for (kind, square) in [("smoothgrad", false), ("smoothgrad_sq", true), ("vargrad", false)] {
            let opts = MethodOptions { layers: l.map(String::from).into_iter().collect(), base: Some(base.into()), samples: Some(3), noise: Some(0.0), smooth: Some(kind.parse().unwrap()), ..Default::default() };
            let got = map_of(&eng, "smoothgrad", &opts, &x, &t);
            let want: Vec<f32> = match kind {
                "vargrad" => vec![0.0; want.data.len()],
                _ => want.data.iter().map(|v| if square { v * v } else { *v }).collect(),
            };
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
            let e = got.data.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale;
            assert!(e < 1e-5 || (kind == "vargrad" && got.data.iter().all(|v| v.abs() < 1e-6 * scale.max(1.0))), "{base} {kind}: {e:.2e}");
        }
    }
    // with noise the map changes, and the seed decides how
    let opts = |seed| MethodOptions { samples: Some(4), seed: Some(seed), ..Default::default() };
    let (a, b, c) = (map_of(&eng, "smoothgrad", &opts(1), &x, &t), map_of(&eng, "smoothgrad", &opts(1), &x, &t), map_of(&eng, "smoothgrad", &opts(2), &x, &t));
    assert_eq!(a.data, b.data);
    assert_ne!(a.data, c.data);
}

#[test]
fn cam_is_grad_cam_up_to_a_positive_scale_at_the_last_layer_of_a_gap_network() {
    for (m, x) in [(tiny_model(), input(2, 6)), (common::st::fixture_model("resnet18"), Tensor::new(vec![2, 3, 32, 32], common::seeded(6, 6144)).unwrap())] {
        let eng = Engine::new(Arc::new(m), Cpu).unwrap();
        let cam = map_of(&eng, "cam", &MethodOptions::default(), &x, &[Target::Class(1), Target::Class(0)]);
        let grad = map_of(&eng, "gradcam", &MethodOptions::default(), &x, &[Target::Class(1), Target::Class(0)]);
        // Grad-CAM = ReLU(CAM) / (h·w): the gradient at the features is W[c] / (h·w) everywhere
        let hw = (cam.shape[1] * cam.shape[2]) as f32;
        let want: Vec<f32> = cam.data.iter().map(|v| v.max(0.0) / hw).collect();
        let e = rel_rms(&grad.data, &want);
        assert!(e < 1e-5 && want.iter().any(|&v| v > 0.0), "{}: {e:.2e}", eng.model().origin);
    }
}

#[test]
fn eigen_cam_projects_on_the_first_principal_component() {
    // A[k, p] = a_k·b_p + c_k: centring removes c_k, the principal component is b − mean(b),
    // with singular value |a|·|b − mean(b)|, so the projection is |a|·(b − mean(b)); oriented to
    // correlate with Σ_k A[k, p] (Σ a_k > 0 here), then ReLU'd
    let (k, p) = (4, 9);
    let a = [0.5f64, 1.0, -0.25, 2.0];
    let c = [3.0f64, -1.0, 0.5, 0.0];
    let b: Vec<f64> = (0..p).map(|i| ((i * 37) % 11) as f64 / 11.0 - 0.3).collect();
    let m: Vec<f32> = (0..k).flat_map(|ch| b.iter().map(move |bp| (a[ch] * bp + c[ch]) as f32)).collect();
    let mean_b = b.iter().sum::<f64>() / p as f64;
    let norm_a = a.iter().map(|v| v * v).sum::<f64>().sqrt();
    let want: Vec<f64> = b.iter().map(|bp| (norm_a * (bp - mean_b)).max(0.0)).collect();
    let got = eigen_projection(&m, k, p);
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-5, "{got:?}\n{want:?}");
    }
    // the opposite orientation of the data gives the other half
    let neg: Vec<f32> = m.iter().map(|v| -v).collect();
    let got = eigen_projection(&neg, k, p);
    for (g, bp) in got.iter().zip(&b) {
        assert!((*g as f64 - (norm_a * (mean_b - bp)).max(0.0)).abs() < 1e-5);
    }
}

#[test]
fn options_a_method_does_not_take_are_errors() {
    let eng = Engine::new(Arc::new(tiny_model()), Cpu).unwrap();
    for (name, opts) in [
        ("gradcam", MethodOptions { samples: Some(3), ..Default::default() }),
        ("saliency", MethodOptions { masks: Some(3), ..Default::default() }),
        ("ig", MethodOptions { noise: Some(0.1), ..Default::default() }),
        ("saliency", layer("relu1")),
        ("smoothgrad", MethodOptions { base: Some("smoothgrad".into()), ..Default::default() }),
        ("smoothgrad", MethodOptions { noise: Some(f32::NAN), ..Default::default() }),
        ("ig", MethodOptions { samples: Some(0), ..Default::default() }),
    ] {
        assert!(attribution(&eng, name, &opts).is_err(), "{name} {opts:?}");
    }
    // class-only methods refuse a unit target
    let x = input(1, 8);
    let unit = [Target::Channel { layer: eng.model().resolve("relu2").unwrap(), channel: 1 }];
    for name in ["cam", "scorecam", "ablationcam"] {
        assert!(attribution(&eng, name, &layer_or_none(name)).unwrap().attribute(&x, Some(&unit)).is_err(), "{name}");
    }
}

fn layer_or_none(name: &str) -> MethodOptions {
    if name == "cam" {
        MethodOptions::default()
    } else {
        layer("relu1")
    }
}

#[test]
fn every_method_on_the_cuda_engine_equals_the_cpu_engine() {
    let m = Arc::new(tiny_model());
    let cpu = Engine::new(m.clone(), Cpu).unwrap();
    let x = input(2, 10);
    let t = [Target::Class(0), Target::Class(2)];
    for gpu in common::gpus() {
    let dev = gpu.name();
    let gpu = Engine::new(m.clone(), gpu).unwrap();
    for info in METHODS {
        let opts = match info.name {
            "smoothgrad" => MethodOptions { samples: Some(2), ..Default::default() },
            "ig" => MethodOptions { samples: Some(4), ..Default::default() },
            "scorecam" | "ablationcam" => MethodOptions { masks: Some(4), ..Default::default() },
            // the combination (flip, scale, resize, per-item min / max) on both engines
            "gradcampp" => MethodOptions { layers: vec!["relu1".into(), "relu2".into()], aug_smooth: true, ..Default::default() },
            _ => MethodOptions::default(),
        };
        let (a, b) = (map_of(&cpu, info.name, &opts, &x, &t), map_of(&gpu, info.name, &opts, &x, &t));
        assert_eq!(a.shape, b.shape, "{}", info.name);
        let e = rel_rms(&b.data, &a.data);
        assert!(e < 1e-5, "{} on {dev}: relative RMS {e:.2e} between the engines", info.name);
        assert!(a.data.iter().any(|&v| v != 0.0), "{}: an all-zero map proves nothing", info.name);
    }
    }
}

/// pytorch-grad-cam's `scale_cam_image` of one map (no resize: the tiny network's layers are at
/// the input's size; the resize is the backend's, tested on its own).
fn scale_cam(m: &[f64]) -> Map {
    let lo = m.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = m.iter().map(|v| v - lo).fold(f64::NEG_INFINITY, f64::max);
    m.iter().map(|v| (v - lo) / (1e-7 + hi)).collect()
}

/// A plane `[S][S]` mirrored left–right.
fn mirror(m: &[f64]) -> Map {
    (0..S * S).map(|p| m[p / S * S + (S - 1 - p % S)]).collect()
}

/// Several layers and `aug_smooth` against pytorch-grad-cam's recipe written out here, from the
/// single-layer maps of inputs flipped and scaled on the host.
#[test]
fn several_layers_and_aug_smooth_combine_as_pytorch_grad_cam() {
    let m = Arc::new(tiny_model());
    let eng = Engine::new(m, Cpu).unwrap();
    let x = input(2, 21);
    let t = [Target::Class(1), Target::Class(2)];
    let augmented = |flip: bool, k: f32| {
        let mut y = x.clone();
        for (p, v) in y.data.iter_mut().enumerate() {
            let (plane, yx) = (p / (S * S), p % (S * S));
            let src = if flip { plane * S * S + yx / S * S + (S - 1 - yx % S) } else { p };
            *v = k * x.data[src];
        }
        y
    };
    for kind in ["gradcam", "eigencam", "scorecam"] {
        let layers = ["relu1", "relu2"];
        // pytorch-grad-cam's forward at several layers: ReLU, scale, mean, scale again
        let forward = |xa: &Tensor| -> Vec<Map> {
            let per_layer: Vec<Tensor> = layers.iter().map(|l| map_of(&eng, kind, &layer(l), xa, &t)).collect();
            (0..2)
                .map(|i| {
                    let scaled: Vec<Map> = per_layer.iter().map(|p| scale_cam(&p.item(i).iter().map(|&v| (v as f64).max(0.0)).collect::<Vec<_>>())).collect();
                    scale_cam(&(0..S * S).map(|q| scaled.iter().map(|s| s[q]).sum::<f64>() / layers.len() as f64).collect::<Vec<_>>())
                })
                .collect()
        };
        let several = MethodOptions { layers: layers.map(String::from).to_vec(), ..Default::default() };
        let got = map_of(&eng, kind, &several, &x, &t);
        assert_eq!(got.shape, vec![2, S, S], "{kind}");
        let want = forward(&x);
        for i in 0..2 {
            check(&format!("{kind} at {layers:?}, item {i}"), got.item(i), &want[i]);
        }
        // aug_smooth: the mean over the six augmentations of the maps flipped back
        let mut want = vec![vec![0.0; S * S]; 2];
        for &(flip, k) in &deepviz::viz::AUGMENTATIONS {
            for (i, mi) in forward(&augmented(flip, k)).into_iter().enumerate() {
                let mi = if flip { mirror(&mi) } else { mi };
                want[i].iter_mut().zip(&mi).for_each(|(w, v)| *w += v / 6.0);
            }
        }
        let smooth = MethodOptions { aug_smooth: true, ..several.clone() };
        let got = map_of(&eng, kind, &smooth, &x, &t);
        for i in 0..2 {
            check(&format!("{kind} aug_smooth at {layers:?}, item {i}"), got.item(i), &want[i]);
        }
        // the method's name and its layers
        let a = attribution(&eng, kind, &smooth).unwrap();
        assert_eq!((a.info().name, a.layer_name().as_deref()), (kind, Some("relu1,relu2")));
    }
    // one layer with aug_smooth is scaled to [0, 1]; targets found on the input as given
    let one = attribution(&eng, "gradcam", &MethodOptions { aug_smooth: true, ..Default::default() }).unwrap();
    let (maps, found) = one.attribute(&x, None).unwrap();
    assert!(maps.data.iter().all(|&v| (0.0..=1.0 + 1e-6).contains(&v)) && maps.data.iter().any(|&v| v > 0.5));
    let top = attribution(&eng, "gradcam", &MethodOptions::default()).unwrap().attribute(&x, None).unwrap().1;
    assert_eq!(found, top);
    // several layers are for the CAM methods; aug_smooth too
    for (name, opts) in [("saliency", &several_layers()), ("guided-gradcam", &several_layers()), ("cam", &MethodOptions { aug_smooth: true, ..Default::default() })] {
        let e = attribution(&eng, name, opts).err().unwrap_or_else(|| panic!("{name} took {opts:?}")).to_string();
        assert!(e.contains("one layer") || e.contains("no layer") || e.contains("aug-smooth"), "{name}: {e}");
    }
}

fn several_layers() -> MethodOptions {
    MethodOptions { layers: vec!["relu1".into(), "relu2".into()], ..Default::default() }
}

/// DeepDream's guided objective (the notebook's `objective_guide`): the value per item is
/// Σ_p max_j ⟨A_p, G_j⟩, and one step moves the picture along the gradient whose seed at each
/// position p is the guide vector G_j*(p) that matches it best — both computed here from the
/// layer's output, the step from the engine's backward pass with those seeds.
#[test]
fn deepdream_guide_objective_and_its_step() {
    let m = Arc::new(tiny_model());
    let eng = Engine::new(m.clone(), Cpu).unwrap();
    let relu2 = m.resolve("relu2").unwrap();
    let out = |x: &Tensor| eng.download(eng.forward(eng.upload(x).unwrap(), relu2, &[relu2]).unwrap().get(relu2).unwrap()).unwrap();
    let g = out(&input(1, 31)); // [1, 5, 6, 6]: 36 guide vectors
    let (c, p) = (C[2], S * S);
    let dream = DeepDream { jitter: 0, lr: 0.01, ..DeepDream::new(Objective::guide(relu2, &g).unwrap()) };
    let x = input(2, 32);
    let a = out(&x);
    let (mut want_value, mut seeds) = (vec![0f64; 2], vec![0f32; 2 * c * p]);
    for i in 0..2 {
        let ai = a.item(i);
        for q in 0..p {
            let dot = |j: usize| (0..c).map(|k| ai[k * p + q] as f64 * g.data[k * p + j] as f64).sum::<f64>();
            // the first of equal maxima, as argmax takes it
            let best = (0..p).fold(0, |b, j| if dot(j) > dot(b) { j } else { b });
            want_value[i] += dot(best);
            for k in 0..c {
                seeds[(i * c + k) * p + q] = g.data[k * p + best];
            }
        }
    }
    let mut img = eng.upload(&x).unwrap();
    let value = dream.step(&eng, &mut img, &m.preprocess, &mut 0).unwrap();
    check("guided objective", &value, &want_value);
    // x + lr · g / (mean|g| + 1e-8) per item, clamped to the pixel range
    let acts = eng.forward(eng.upload(&x).unwrap(), relu2, &[relu2]).unwrap();
    let seed = eng.upload(&Tensor::new(vec![2, c, S, S], seeds).unwrap()).unwrap();
    let gx = eng.download(&eng.backward(&acts, vec![(relu2, seed)], &[m.input()], Rule::Gradient).unwrap()[0]).unwrap();
    let n = 3 * p;
    let want: Vec<f64> = (0..2 * n)
        .map(|e| {
            let (i, ch) = (e / n, e % n / p);
            let mean = gx.item(i).iter().map(|v| v.abs() as f64).sum::<f64>() / n as f64;
            let (lo, hi) = ((0.0 - m.preprocess.mean[ch] as f64) / m.preprocess.std[ch] as f64, (1.0 - m.preprocess.mean[ch] as f64) / m.preprocess.std[ch] as f64);
            (x.data[e] as f64 + 0.01 * gx.data[e] as f64 / (mean + 1e-8)).clamp(lo, hi)
        })
        .collect();
    check("guided step", &eng.download(&img).unwrap().data, &want);
    // the same step on the emulated CUDA engine (argmax, one-hot, the 1x1 convolutions there)
    let gpu = Engine::new(m.clone(), Gpu::emulated()).unwrap();
    let mut gimg = gpu.upload(&x).unwrap();
    let gvalue = dream.step(&gpu, &mut gimg, &m.preprocess, &mut 0).unwrap();
    check("guided objective, emulated GPU", &gvalue, &want_value);
    check("guided step, emulated GPU", &gpu.download(&gimg).unwrap().data, &want);
    // a guide of another width is refused with the shapes
    let wrong = Tensor::new(vec![C[1], 4], vec![1.0; C[1] * 4]).unwrap();
    let mut img = eng.upload(&x).unwrap();
    let e = DeepDream::new(Objective::guide(relu2, &wrong).unwrap()).step(&eng, &mut img, &m.preprocess, &mut 0).unwrap_err().to_string();
    assert!(e.contains("guide"), "{e}");
}

/// The zoom loop's zoom is exact on a ramp a·i + b·j + c (bilinear interpolation reproduces a
/// linear function): output (i, j) = the ramp at ((1 − s)·i + h·s/2, (1 − s)·j + w·s/2).
#[test]
fn dream_zoom_samples_the_centre() {
    let (h, w, s) = (7usize, 13usize, 0.1f32);
    let ramp = |i: f64, j: f64, ch: usize| 0.5 * i - 0.25 * j + ch as f64;
    let x = Tensor::new(vec![1, 2, h, w], (0..2 * h * w).map(|e| ramp((e % (h * w) / w) as f64, (e % w) as f64, e / (h * w)) as f32).collect()).unwrap();
    let z = zoom(&x, s).unwrap();
    let s = s as f64;
    let want: Vec<f64> = (0..2 * h * w).map(|e| ramp((1.0 - s) * (e % (h * w) / w) as f64 + h as f64 * s / 2.0, (1.0 - s) * (e % w) as f64 + w as f64 * s / 2.0, e / (h * w))).collect();
    check("zoom of a ramp", &z.data, &want);
    assert_eq!(zoom(&x, 0.0).unwrap().data, x.data);
    for bad in [-0.1, 0.5, f32::NAN] {
        assert!(zoom(&x, bad).is_err(), "zoom {bad}");
    }
}

/// A tiled DeepDream step (jitter 0: no shift) is the step along the tiles' gradients, each
/// computed on its own and pasted into place: 64x80 in tiles of at most 32 is 2 x 3 tiles of
/// 32 and 27 / 27 / 26; the value is the tiles' sum. The same on the CUDA engine (the emulation, and the real GPU when present).
#[test]
fn deepdream_in_tiles_steps_along_the_tiles_gradients() {
    let m = Arc::new(tiny_model());
    let cpu = Engine::new(m.clone(), Cpu).unwrap();
    let relu2 = m.resolve("relu2").unwrap();
    let (h, w) = (64, 80);
    let x = Tensor::new(vec![2, 3, h, w], common::seeded(41, 2 * 3 * h * w)).unwrap();
    let dream = DeepDream { jitter: 0, lr: 0.01, tile: 32, ..DeepDream::new(Objective::layer(relu2)) };
    let (mut g, mut want_value) = (vec![0f32; x.data.len()], vec![0f64; 2]);
    for (y0, th) in [(0, 32), (32, 32)] {
        for (x0, tw) in [(0, 27), (27, 27), (54, 26)] {
            let crop: Vec<f32> = (0..2 * 3 * th * tw).map(|e| { let (p, i, j) = (e / (th * tw), e % (th * tw) / tw, e % tw); x.data[(p * h + y0 + i) * w + x0 + j] }).collect();
            let acts = cpu.forward(cpu.upload(&Tensor::new(vec![2, 3, th, tw], crop).unwrap()).unwrap(), relu2, &[relu2]).unwrap();
            let a = acts.get(relu2).unwrap().clone();
            for (i, v) in want_value.iter_mut().enumerate() {
                *v += a.item(i).iter().map(|&v| 0.5 * (v as f64).powi(2)).sum::<f64>();
            }
            let gt = cpu.download(&cpu.backward(&acts, vec![(relu2, a)], &[m.input()], Rule::Gradient).unwrap()[0]).unwrap();
            for (e, v) in gt.data.iter().enumerate() {
                let (p, i, j) = (e / (th * tw), e % (th * tw) / tw, e % tw);
                g[(p * h + y0 + i) * w + x0 + j] = *v;
            }
        }
    }
    let n = 3 * h * w;
    let want: Vec<f64> = (0..2 * n)
        .map(|e| {
            let (i, ch) = (e / n, e % n / (h * w));
            let mean = g[i * n..(i + 1) * n].iter().map(|v| v.abs() as f64).sum::<f64>() / n as f64;
            let p = &m.preprocess;
            let (lo, hi) = ((0.0 - p.mean[ch] as f64) / p.std[ch] as f64, (1.0 - p.mean[ch] as f64) / p.std[ch] as f64);
            (x.data[e] as f64 + 0.01 * g[e] as f64 / (mean + 1e-8)).clamp(lo, hi)
        })
        .collect();
    fn tiled_step<B: Backend>(eng: &Engine<B>, dream: &DeepDream, x: &Tensor) -> (Vec<f32>, Vec<f32>) {
        let mut img = eng.upload(x).unwrap();
        let value = dream.step(eng, &mut img, &eng.model().preprocess, &mut 0).unwrap();
        (value, eng.download(&img).unwrap().data)
    }
    let mut runs = vec![("cpu".to_string(), tiled_step(&cpu, &dream, &x))];
    runs.extend(common::gpus().into_iter().map(|g| (g.name().to_string(), tiled_step(&Engine::new(m.clone(), g).unwrap(), &dream, &x))));
    for (name, (value, stepped)) in runs {
        check(&format!("tiled objective, {name}"), &value, &want_value);
        check(&format!("tiled step, {name}"), &stepped, &want);
    }
    // the tiles matter: the whole picture at once steps elsewhere
    let mut whole = cpu.upload(&x).unwrap();
    DeepDream { tile: 0, ..dream.clone() }.step(&cpu, &mut whole, &m.preprocess, &mut 0).unwrap();
    let e = rel_rms(&cpu.download(&whole).unwrap().data, &want.iter().map(|&v| v as f32).collect::<Vec<_>>());
    assert!(e > 1e-6, "tiling changed nothing: {e:.2e}");
    let mut img = cpu.upload(&x).unwrap();
    assert!(DeepDream { tile: 16, ..dream }.step(&cpu, &mut img, &m.preprocess, &mut 0).is_err());
}

/// Every method of the registry on torchvision architectures as `scripts/export_torch.py`
/// exports them (PyTorch's module paths; random weights from the golden fixtures' tensor lists),
/// on the CPU engine: a finite map of the method's shape that is not all zero, for each of two
/// items and their top classes; for the CAM family also at two named layers with aug_smooth.
/// CAM needs a linear classifier after global average pooling: squeezenet1_1's is a convolution,
/// so there it must be a clear error.
#[test]
fn every_method_runs_on_torchvision_exports() {
    let layers: [(&str, [&str; 2]); 4] = [
        ("resnet18", ["layer3", "layer4"]),
        ("googlenet", ["inception4e", "inception5b"]),
        ("mobilenet_v2", ["features.14", "features.18"]),
        ("squeezenet1_1", ["features.9", "features.12"]),
    ];
    for (arch, two) in layers {
        let m = Arc::new(common::st::fixture_model(arch));
        let has_cam = m.graph.heads.cam.is_some();
        let eng = Engine::new(m, Cpu).unwrap();
        let x = common::seeded_tensor(7, &[2, 3, 64, 64]);
        for info in METHODS {
            // Score-CAM runs the network once per channel of its layer (7–13 s each on the
            // larger three in the dev profile): squeezenet1_1's 512 channels stand for them
            if info.name == "scorecam" && arch != "squeezenet1_1" {
                continue;
            }
            let takes = |o: deepviz::viz::Opt| info.options.contains(&o);
            let light = MethodOptions {
                samples: takes(deepviz::viz::Opt::Samples).then_some(2),
                masks: takes(deepviz::viz::Opt::Masks).then_some(8),
                ..Default::default()
            };
            let mut runs = vec![("default", light.clone())];
            // (Score-CAM and Ablation-CAM rerun the network per channel: their combination
            // is the same code as the others', so it is left to the cheaper ones here)
            if takes(deepviz::viz::Opt::AugSmooth) && !matches!(info.name, "scorecam" | "ablationcam") {
                runs.push(("two layers, aug_smooth", MethodOptions { layers: two.iter().map(|s| s.to_string()).collect(), aug_smooth: true, ..light }));
            }
            for (what, opts) in runs {
                let got = attribution(&eng, info.name, &opts).and_then(|a| a.attribute(&x, None));
                if info.name == "cam" && !has_cam {
                    let e = got.expect_err("CAM without a linear classifier after pooling").to_string();
                    assert!(e.contains("CAM"), "{arch}: {e}");
                    continue;
                }
                let (map, targets) = got.unwrap_or_else(|e| panic!("{arch} {} ({what}): {e}", info.name));
                assert_eq!((map.shape.len(), map.shape[0], targets.len()), (3, 2, 2), "{arch} {} ({what})", info.name);
                assert!(map.data.iter().all(|v| v.is_finite()), "{arch} {} ({what}): not finite", info.name);
                assert!(map.data.iter().any(|&v| v != 0.0), "{arch} {} ({what}): all zero", info.name);
            }
        }
    }
}
