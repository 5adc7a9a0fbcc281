//! Loading a model: one `.safetensors` file holds the tensors under their PyTorch state-dict
//! names and, in `__metadata__`, the architecture (`"arch": "resnet50"`) and optionally the
//! preprocessing (`input_size`, `mean`, `std`). Everything is validated before use: a header that
//! lies, a missing or unexpected tensor, a wrong shape or dtype each give an error naming the
//! tensor. Batch norms are folded into the preceding convolution at load time (the folded conv
//! node answers to both module paths). Tensors may be f32, f16, bf16 or f64.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::graph::{shapes, Graph, NodeId, Op, ParamSpec};
use crate::imageio::Preprocess;
use crate::tensor::Tensor;
use crate::zoo;

/// The embedded default: EfficientNet-Lite0 with its ImageNet weights (see weights/README.md).
static DEFAULT_WEIGHTS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/efficientnet_lite0.safetensors"));
static IMAGENET_CLASSES: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/imagenet_classes.txt"));

/// A loaded, validated, batch-norm-folded model.
pub struct Model {
    pub graph: Graph,
    /// parameter values (host, PyTorch layouts), indexed by the graph's `ParamId`s
    pub params: Vec<Arc<Tensor>>,
    names: HashMap<String, NodeId>,
    pub preprocess: Preprocess,
    /// class names when the classifier has 1000 outputs (ImageNet); empty otherwise
    pub classes: Vec<String>,
    /// where the model came from (a path, or "embedded default")
    pub origin: String,
}

fn to_f32(name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::F64 => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        other => return Err(Error::tensor(name, format!("dtype {other:?} is not supported (expected f32, f16, bf16 or f64)"))),
    })
}

fn parse_floats<const N: usize>(origin: &str, key: &str, s: &str) -> Result<[f32; N]> {
    let v: Vec<f32> = s.split(',').map(|x| x.trim().parse::<f32>()).collect::<Result<_, _>>().map_err(|_| {
        Error::model(origin, format!("metadata `{key}` = {s:?} is not a comma-separated list of numbers"))
    })?;
    let v: Vec<f32> = if v.len() == 1 { vec![v[0]; N] } else { v };
    v.try_into().map_err(|_| Error::model(origin, format!("metadata `{key}` = {s:?} needs {N} values")))
}

fn is_ignored(g: &Graph, name: &str) -> bool {
    name.ends_with("num_batches_tracked") || g.ignored_prefixes.iter().any(|p| name.starts_with(p.as_str()))
}

impl Model {
    /// Load a model file. `arch` overrides (or supplies) the file's `arch` metadata.
    pub fn load(path: &Path, arch: Option<&str>) -> Result<Model> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string(), arch)
    }

    /// The embedded default model (EfficientNet-Lite0, ImageNet).
    pub fn default_model() -> Result<Model> {
        Self::from_bytes(DEFAULT_WEIGHTS, "embedded default (efficientnet_lite0)", None)
    }

    pub fn from_bytes(bytes: &[u8], origin: &str, arch: Option<&str>) -> Result<Model> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::model(origin, format!("not a valid safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::model(origin, format!("not a valid safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let arch = match arch.map(str::to_string).or_else(|| meta.get("arch").cloned()) {
            Some(a) => a,
            None => {
                return Err(Error::model(
                    origin,
                    format!("no `arch` in the file's metadata; pass --arch NAME (one of: {})", zoo::ARCHS.join(", ")),
                ))
            }
        };
        let names: HashSet<&str> = st.names().into_iter().collect();
        let mut graph = zoo::build(&arch, &|n: &str| names.contains(n))?;

        // every expected tensor, with the right shape and a float dtype
        let mut params = Vec::with_capacity(graph.params.len());
        for ParamSpec { name, shape } in &graph.params {
            let view = st.tensor(name).map_err(|_| {
                Error::model(origin, format!("missing tensor `{name}` (shape {shape:?}) required by arch `{arch}`"))
            })?;
            if view.shape() != shape.as_slice() {
                return Err(Error::model(
                    origin,
                    format!("tensor `{name}` has shape {:?}, arch `{arch}` expects {shape:?}", view.shape()),
                ));
            }
            let data = to_f32(name, view.dtype(), view.data()).map_err(|e| Error::model(origin, e.to_string()))?;
            if data.iter().any(|v| !v.is_finite()) {
                return Err(Error::model(origin, format!("tensor `{name}` holds NaN or infinite values")));
            }
            params.push(Tensor { shape: shape.clone(), data });
        }
        // nothing unexpected
        let expected: HashSet<&str> = graph.params.iter().map(|p| p.name.as_str()).collect();
        let mut extra: Vec<&str> =
            names.iter().copied().filter(|n| !expected.contains(n) && !is_ignored(&graph, n)).collect();
        if !extra.is_empty() {
            extra.sort();
            let more = if extra.len() > 3 { format!(" and {} more", extra.len() - 3) } else { String::new() };
            return Err(Error::model(
                origin,
                format!(
                    "unexpected tensor{} {}{more}: not part of arch `{arch}` (is the architecture right?)",
                    if extra.len() > 1 { "s" } else { "" },
                    extra.iter().take(3).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                ),
            ));
        }

        let [h, w] = graph.input_size;
        let mut pre = Preprocess::imagenet([h, w]);
        if let Some(s) = meta.get("input_size") {
            let [a, b] = parse_floats::<2>(origin, "input_size", s)?;
            if a < 1.0 || b < 1.0 {
                return Err(Error::model(origin, format!("metadata `input_size` = {s:?} is not a size")));
            }
            pre.size = [a as usize, b as usize];
        }
        if let Some(s) = meta.get("mean") {
            pre.mean = parse_floats::<3>(origin, "mean", s)?;
        }
        if let Some(s) = meta.get("std") {
            pre.std = parse_floats::<3>(origin, "std", s)?;
            if pre.std.iter().any(|&v| v <= 0.0) {
                return Err(Error::model(origin, format!("metadata `std` = {s:?} must be positive")));
            }
        }

        match meta.get("transform_input").map(String::as_str) {
            None | Some("false") | Some("0") => {}
            Some("true") | Some("1") => insert_input_transform(&mut graph, &mut params),
            Some(v) => return Err(Error::model(origin, format!("metadata `transform_input` = {v:?} is not true/false"))),
        }
        fold_batch_norms(&mut graph, &mut params);
        let params = params.into_iter().map(Arc::new).collect();
        let mut model = Model { graph, params, names: HashMap::new(), preprocess: pre, classes: vec![], origin: origin.into() };
        model.index_names();
        // the whole graph must be consistent at the model's input size
        let out = model.infer_shapes(&[1, 3, model.preprocess.size[0], model.preprocess.size[1]])?;
        let ncls = out[model.graph.output].iter().skip(1).product::<usize>();
        if ncls == 1000 {
            model.classes = IMAGENET_CLASSES.lines().map(str::to_string).collect();
        }
        Ok(model)
    }

    fn index_names(&mut self) {
        self.names.clear();
        for (id, n) in self.graph.nodes.iter().enumerate() {
            self.names.insert(n.name.clone(), id);
            for a in &n.aliases {
                self.names.insert(a.clone(), id);
            }
        }
    }

    /// Resolve a PyTorch module path to the node whose output it is: an exact node name or
    /// alias, else the last node inside that module (a container's output).
    pub fn resolve(&self, layer: &str) -> Result<NodeId> {
        if let Some(&id) = self.names.get(layer) {
            return Ok(id);
        }
        let inside = |n: &str| n.strip_prefix(layer).is_some_and(|r| r.starts_with('.') || r.starts_with(':'));
        let found = self
            .graph
            .nodes
            .iter()
            .enumerate()
            .rev()
            .find(|(_, n)| inside(&n.name) || n.aliases.iter().any(|a| inside(a)))
            .map(|(i, _)| i);
        found.ok_or_else(|| Error::UnknownLayer { name: layer.into(), hint: self.close_matches(layer) })
    }

    fn close_matches(&self, layer: &str) -> String {
        let mut all: Vec<&str> = self.layer_paths();
        all.sort_by_key(|n| edit_distance(layer, n));
        let near: Vec<String> = all.iter().take(5).map(|n| format!("`{n}`")).collect();
        format!("; close matches: {} (`deepviz layers` lists them all)", near.join(", "))
    }

    /// Every module path a user can name: node names, aliases and their containers, in order.
    pub fn layer_paths(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        let mut out = vec![];
        for n in &self.graph.nodes {
            for name in std::iter::once(&n.name).chain(&n.aliases) {
                let base = name.split(':').next().unwrap_or(name);
                for (i, ch) in base.char_indices() {
                    if ch == '.' && seen.insert(&base[..i]) {
                        out.push(&base[..i]);
                    }
                }
                if seen.insert(name.as_str()) {
                    out.push(name.as_str());
                }
            }
        }
        out
    }

    pub fn name(&self, id: NodeId) -> &str {
        &self.graph.nodes[id].name
    }

    pub fn output(&self) -> NodeId {
        self.graph.output
    }

    /// Output shapes of every node for an input shape (validates the input).
    pub fn infer_shapes(&self, input: &[usize]) -> Result<Vec<Vec<usize>>> {
        let ps: Vec<Vec<usize>> = self.params.iter().map(|t| t.shape.clone()).collect();
        shapes::infer(&self.graph, &ps, input, self.graph.nodes.len() - 1)
    }

    pub fn class_name(&self, i: usize) -> String {
        self.classes.get(i).cloned().unwrap_or_else(|| format!("class {i}"))
    }
}

/// torchvision's GoogLeNet / Inception-v3 `transform_input`: pretrained weights expect
/// inputs normalised with mean = std = 0.5, so the model re-normalises ImageNet-normalised
/// input: x_c' = x_c · std_c / 0.5 + (mean_c − 0.5) / 0.5. Inserted as a fixed affine node.
fn insert_input_transform(g: &mut Graph, params: &mut Vec<Tensor>) {
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    let scale: Vec<f32> = std.iter().map(|s| s / 0.5).collect();
    let shift: Vec<f32> = mean.iter().map(|m| (m - 0.5) / 0.5).collect();
    for (suffix, data) in [("scale", scale), ("shift", shift)] {
        g.params.push(ParamSpec { name: format!("transform_input.{suffix}"), shape: vec![3] });
        params.push(Tensor { shape: vec![3], data });
    }
    let n = params.len();
    for node in &mut g.nodes {
        for i in &mut node.inputs {
            *i += 1; // everything moves up one; consumers of the input now read the transform
        }
    }
    let node = crate::graph::Node {
        name: "transform_input".into(),
        aliases: vec![],
        op: Op::Affine { scale: n - 2, shift: n - 1 },
        inputs: vec![0],
    };
    g.nodes.insert(1, node);
    g.output += 1;
}

/// Fold each batch norm that directly follows a convolution (and is that convolution's only
/// consumer) into it; turn the others into per-channel affine ops.
fn fold_batch_norms(g: &mut Graph, params: &mut Vec<Tensor>) {
    let mut consumers = vec![0usize; g.nodes.len()];
    for n in &g.nodes {
        for &i in &n.inputs {
            consumers[i] += 1;
        }
    }
    let mut redirect: Vec<NodeId> = (0..g.nodes.len()).collect();
    let mut removed = vec![false; g.nodes.len()];
    for id in 0..g.nodes.len() {
        let Op::BatchNorm { weight, bias, mean, var, eps } = g.nodes[id].op.clone() else { continue };
        let (w, b, m, v) = (&params[weight].data, &params[bias].data, &params[mean].data, &params[var].data);
        let scale: Vec<f32> = w.iter().zip(v).map(|(w, v)| w / (v + eps).sqrt()).collect();
        let shift: Vec<f32> = b.iter().zip(m).zip(&scale).map(|((b, m), s)| b - m * s).collect();
        let src = g.nodes[id].inputs[0];
        let foldable = matches!(g.nodes[src].op, Op::Conv { .. }) && consumers[src] == 1;
        if foldable {
            let bn_name = g.nodes[id].name.clone();
            let Op::Conv { weight: cw, bias: cb, .. } = &mut g.nodes[src].op else { unreachable!() };
            let wt = &mut params[*cw];
            let per = wt.numel() / wt.shape[0];
            for (o, chunk) in wt.data.chunks_mut(per).enumerate() {
                chunk.iter_mut().for_each(|x| *x *= scale[o]);
            }
            let new_bias: Vec<f32> = match cb {
                Some(p) => params[*p].data.iter().zip(&scale).zip(&shift).map(|((b, s), t)| b * s + t).collect(),
                None => shift,
            };
            let c = new_bias.len();
            match cb {
                Some(p) => params[*p].data = new_bias,
                None => {
                    g.params.push(ParamSpec { name: format!("{bn_name}.bias (folded)"), shape: vec![c] });
                    params.push(Tensor { shape: vec![c], data: new_bias });
                    *cb = Some(params.len() - 1);
                }
            }
            g.nodes[src].aliases.push(bn_name);
            redirect[id] = src;
            removed[id] = true;
        } else {
            let c = scale.len();
            for (suffix, data) in [("scale", scale), ("shift", shift)] {
                g.params.push(ParamSpec { name: format!("{}.{suffix} (folded)", g.nodes[id].name), shape: vec![c] });
                params.push(Tensor { shape: vec![c], data });
            }
            let n = params.len();
            g.nodes[id].op = Op::Affine { scale: n - 2, shift: n - 1 };
        }
    }
    // drop the folded nodes and renumber
    let mut new_id = vec![0usize; g.nodes.len()];
    let mut nodes = Vec::with_capacity(g.nodes.len());
    for (id, mut node) in std::mem::take(&mut g.nodes).into_iter().enumerate() {
        if removed[id] {
            continue;
        }
        node.inputs = node.inputs.iter().map(|&i| new_id[redirect[i]]).collect();
        new_id[id] = nodes.len();
        nodes.push(node);
    }
    g.output = new_id[redirect[g.output]];
    g.nodes = nodes;
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + (ca != cb) as usize).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
