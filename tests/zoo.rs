//! The zoo's graphs against the published models: structure (names unique, topological order,
//! every parameter used once, heads that resolve) and parameter totals from torchvision's
//! `num_params` metadata (`torchvision/models/*.py`) and from the weights files themselves.
//! Totals count weights, biases and BN affine parameters, not BN running statistics.

use std::collections::{HashMap, HashSet};

use deepviz::graph::{shapes, Graph, Op};
use deepviz::zoo::{build, ARCHS};

/// (arch, use the efficientnet_lite_pytorch naming, expected parameter total)
const TOTALS: &[(&str, bool, usize)] = &[
    ("resnet18", false, 11_689_512),
    ("resnet34", false, 21_797_672),
    ("resnet50", false, 25_557_032),
    ("resnet101", false, 44_549_160),
    ("resnet152", false, 60_192_808),
    ("vgg11", false, 132_863_336),
    ("vgg11_bn", false, 132_868_840),
    ("vgg13", false, 133_047_848),
    ("vgg13_bn", false, 133_053_736),
    ("vgg16", false, 138_357_544),
    ("vgg16_bn", false, 138_365_992),
    ("vgg19", false, 143_667_240),
    ("vgg19_bn", false, 143_678_248),
    ("alexnet", false, 61_100_840),
    // without the auxiliary heads (13,004,888 with them)
    ("googlenet", false, 6_624_904),
    ("mobilenet_v2", false, 3_504_872),
    ("squeezenet1_0", false, 1_248_424),
    ("squeezenet1_1", false, 1_235_496),
    ("efficientnet_lite0", false, 4_652_008),
    ("efficientnet_lite0", true, 4_652_008),
    ("tf_efficientnet_lite0", false, 4_652_008),
];

fn graph(arch: &str, package_naming: bool) -> Graph {
    let has = move |name: &str| package_naming && name == "_conv_stem.weight";
    build(arch, &has).unwrap_or_else(|e| panic!("{arch}: {e}"))
}

fn every_graph() -> Vec<Graph> {
    TOTALS.iter().map(|&(arch, pkg, _)| graph(arch, pkg)).collect()
}

/// The node a module path names, by the loader's rule (`Model::resolve`): an exact node name,
/// else the last node inside the module (`path.…` or `path:…`).
fn resolve(g: &Graph, path: &str) -> Option<usize> {
    let exact = g.nodes.iter().rposition(|n| n.name == path);
    let inside = |n: &str| n.strip_prefix(path).is_some_and(|r| r.starts_with('.') || r.starts_with(':'));
    exact.or_else(|| g.nodes.iter().rposition(|n| inside(&n.name)))
}

fn params_of(op: &Op) -> Vec<usize> {
    match *op {
        Op::Conv { weight, bias, .. } | Op::Linear { weight, bias } => std::iter::once(weight).chain(bias).collect(),
        Op::BatchNorm { weight, bias, mean, var, .. } => vec![weight, bias, mean, var],
        Op::Affine { scale, shift } => vec![scale, shift],
        _ => vec![],
    }
}

fn trainable_total(g: &Graph) -> usize {
    g.params
        .iter()
        .filter(|p| !p.name.ends_with(".running_mean") && !p.name.ends_with(".running_var"))
        .map(|p| p.shape.iter().product::<usize>())
        .sum()
}

#[test]
fn every_arch_is_covered_and_unknown_names_fail() {
    let tested: HashSet<&str> = TOTALS.iter().map(|t| t.0).collect();
    for arch in ARCHS {
        assert!(tested.contains(arch), "{arch} has no expected parameter total");
    }
    let err = build("resnet19", &|_| false).unwrap_err().to_string();
    assert!(err.contains("resnet18"), "the error should list the known archs: {err}");
}

#[test]
fn parameter_totals_match_the_published_models() {
    for &(arch, pkg, want) in TOTALS {
        let g = graph(arch, pkg);
        assert_eq!(trainable_total(&g), want, "{arch} (package naming: {pkg})");
    }
}

#[test]
fn names_are_unique_and_nodes_topological() {
    for g in every_graph() {
        let mut names = HashSet::new();
        for p in &g.params {
            assert!(names.insert(&p.name), "{}: parameter {} twice", g.arch, p.name);
        }
        let mut names = HashSet::new();
        assert!(matches!(g.nodes[0].op, Op::Input), "{}: node 0 must be the input", g.arch);
        for (i, n) in g.nodes.iter().enumerate() {
            assert!(names.insert(&n.name), "{}: node {} twice", g.arch, n.name);
            assert!(i == 0 || !n.inputs.is_empty(), "{}: {} has no input", g.arch, n.name);
            for &j in &n.inputs {
                assert!(j < i, "{}: {} reads node {j}, which comes after it", g.arch, n.name);
            }
        }
        assert_eq!(g.output, g.nodes.len() - 1, "{}: the logits should be the last node", g.arch);
        assert_eq!(g.input_size, [224, 224], "{}", g.arch);
    }
}

/// Shapes flow end to end: at the training size, and at an odd size and batch (231×197, batch 3)
/// that exercises ceil-mode pooling and TF "SAME" padding on uneven inputs.
#[test]
fn shapes_infer_to_logits() {
    for g in every_graph() {
        let params: Vec<Vec<usize>> = g.params.iter().map(|p| p.shape.clone()).collect();
        for input in [[1, 3, 224, 224], [3, 3, 231, 197]] {
            let out = shapes::infer(&g, &params, &input, g.output).unwrap_or_else(|e| panic!("{} {input:?}: {e}", g.arch));
            assert_eq!(out[g.output], [input[0], 1000], "{} {input:?}", g.arch);
        }
        // the Grad-CAM layer at 224: 7×7 except where the classifier pools earlier features
        let out = shapes::infer(&g, &params, &[1, 3, 224, 224], g.output).unwrap();
        let cam = out[resolve(&g, &g.heads.gradcam_layer).unwrap()][2..].to_vec();
        let want = match g.arch.as_str() {
            a if a.starts_with("vgg") => [14, 14],
            "alexnet" | "squeezenet1_0" | "squeezenet1_1" => [13, 13],
            _ => [7, 7],
        };
        assert_eq!(cam, want, "{}: Grad-CAM layer {}", g.arch, g.heads.gradcam_layer);
    }
}

#[test]
fn every_parameter_is_used_by_exactly_one_node() {
    for g in every_graph() {
        let mut uses = vec![0usize; g.params.len()];
        for n in &g.nodes {
            for p in params_of(&n.op) {
                uses[p] += 1;
                // a reused module's earlier calls are `module:k`; their parameters are `module.*`
                let module = n.name.split(':').next().unwrap_or_default();
                let owner = &g.params[p].name;
                assert!(owner.starts_with(&format!("{module}.")), "{}: node {} uses {owner}", g.arch, n.name);
            }
        }
        for (p, &u) in g.params.iter().zip(&uses) {
            assert_eq!(u, 1, "{}: {} used {u} times", g.arch, p.name);
        }
    }
}

/// Grad-CAM and CAM read the features after the last non-linearity (or the concatenation of
/// activated branches); a head that resolved to a conv or batch norm output would be a naming bug
/// (as timm's `bn2` would be if its batch norm kept the plain name).
#[test]
fn heads_resolve_to_activated_features() {
    for g in every_graph() {
        let h = &g.heads;
        let activated = |layer: &str| {
            let id = resolve(&g, layer).unwrap_or_else(|| panic!("{}: head layer {layer:?} not found", g.arch));
            assert!(
                matches!(g.nodes[id].op, Op::Act(_) | Op::Concat | Op::Add | Op::MaxPool(_)),
                "{}: {layer} resolves to {} ({:?})",
                g.arch,
                g.nodes[id].name,
                g.nodes[id].op
            );
        };
        activated(&h.gradcam_layer);
        // DeepDream may use any layer (MobileNetV2's blocks end in a linear bottleneck)
        assert!(resolve(&g, &h.dream_layer).is_some(), "{}: dream layer {} not found", g.arch, h.dream_layer);
        if let Some((feat, fc)) = &h.cam {
            activated(feat);
            let fc_node = g.nodes.iter().find(|n| &n.name == fc);
            assert!(matches!(fc_node.map(|n| &n.op), Some(Op::Linear { .. })), "{}: CAM classifier {fc} is not a linear node", g.arch);
        }
    }
}

#[test]
fn reused_modules_name_the_last_call_plainly() {
    let g = graph("resnet50", false);
    let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    let i = names.iter().position(|&n| n == "layer1.0.relu").expect("layer1.0.relu");
    assert_eq!(&names[i - 2..=i], &["layer1.0.downsample.1", "layer1.0.add", "layer1.0.relu"]);
    assert!(names.contains(&"layer1.0.relu:0") && names.contains(&"layer1.0.relu:1"));

    let g = graph("efficientnet_lite0", true);
    let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names.iter().filter(|n| n.starts_with("_swish")).count(), 2);
    assert_eq!(names[names.iter().position(|&n| n == "_swish").unwrap() - 1], "_bn1");
    assert!(names.contains(&"_blocks.10.add"));
}

/// The package-named graph against the real file: every tensor but `num_batches_tracked` is a
/// parameter with the same shape, and every parameter is in the file.
#[test]
fn efficientnet_lite0_matches_the_weights_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/efficientnet_lite0.safetensors");
    let Ok(bytes) = std::fs::read(path) else {
        eprintln!("skipped: {path} not present");
        return;
    };
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse safetensors");
    let file: HashMap<String, Vec<usize>> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.ends_with(".num_batches_tracked"))
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect();
    let g = build("efficientnet_lite0", &|name| file.contains_key(name)).expect("build");
    assert!(resolve(&g, "_blocks.0").is_some(), "the file's naming should select the package graph");
    let graph: HashMap<&str, &Vec<usize>> = g.params.iter().map(|p| (p.name.as_str(), &p.shape)).collect();
    for (name, shape) in &file {
        assert_eq!(graph.get(name.as_str()).copied(), Some(shape), "{name}: file shape {shape:?}");
    }
    for p in &g.params {
        assert_eq!(file.get(&p.name), Some(&p.shape), "{}: graph shape {:?}", p.name, p.shape);
    }
}

/// `scripts/export_torch.py` refuses, before importing torch (so this runs without it), what
/// deepviz cannot load, listing what it can — read from the same `ARCHS` table this crate has.
#[test]
fn export_script_refuses_unknown_architectures_up_front() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/export_torch.py");
    let run = |args: &[&str]| {
        let o = std::process::Command::new("python3").arg(&script).args(args).args(["-o", "/nonexistent/x.safetensors"]).output();
        let o = match o {
            Ok(o) => o,
            Err(e) => panic!("python3 is needed to run {}: {e}", script.display()),
        };
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = run(&["vit_b_16"]);
    let listed: Vec<&str> = err.split("torchvision: ").nth(1).expect(&err).trim().split(", ").collect();
    let mut want: Vec<&str> = deepviz::zoo::ARCHS.iter().copied().filter(|a| !a.contains("efficientnet_lite0")).collect();
    want.sort();
    let mut got = listed.clone();
    got.sort();
    assert_eq!(got, want, "{err}");
    assert!(run(&["efficientnet_lite0"]).contains("(it exports with --timm)"));
    assert!(run(&["resnet50", "--timm", "--weights", "DEFAULT"]).contains("with --timm use --pretrained"));
}
