//! Loading a model: one `.safetensors` file holds the tensors under their PyTorch state-dict
//! names and, in `__metadata__`, the architecture (`"arch": "resnet50"`) and optionally the
//! preprocessing (`input_size`, `mean`, `std`). Everything is validated before use: a header that
//! lies, a missing or unexpected tensor, a wrong shape or dtype each give an error naming the
//! tensor. Tensors may be f32, f16, bf16 or f64.
//!
//! The graph stays what PyTorch runs: a batch norm is its own node, so `layer3.1.conv2` is the
//! convolution's output and `layer3.1.bn2` the normalised one, as forward hooks on those modules
//! see them. Folding a batch norm into the convolution before it is the engine's business
//! ([`crate::engine`]), done where nobody looks at the convolution's own output.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::graph::{shapes, Graph, NodeId, Op, ParamSpec};
use crate::imageio::Preprocess;
use crate::tensor::Tensor;
use crate::zoo;

/// The embedded default: EfficientNet-Lite0 with its ImageNet weights (see weights/README.md),
/// when the build found the file (build.rs): in a checkout of the repository, not in the crates.io
/// package, whose size limit (10 MB) the 18.8 MB would break.
#[cfg(deepviz_bundled_model)]
static DEFAULT_WEIGHTS: Option<&[u8]> = Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/efficientnet_lite0.safetensors")));
#[cfg(not(deepviz_bundled_model))]
static DEFAULT_WEIGHTS: Option<&[u8]> = None;
static IMAGENET_CLASSES: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/imagenet_classes.txt"));

/// A layer of one model: a node of its graph, checked against the model it came from, so a
/// layer of another model is an error rather than the wrong node ([`Model::resolve`] makes them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layer {
    node: NodeId,
    model: u64,
}

impl Layer {
    /// The node in the model's graph.
    pub fn node(self) -> NodeId {
        self.node
    }
}

/// A row of [`Model::layer_table`].
#[derive(Clone, Debug, PartialEq)]
pub struct LayerRow {
    /// the module path a user names
    pub path: String,
    /// the node it resolves to: the path itself, or for a container its last node
    pub node: String,
    /// that node's op ([`crate::graph::Op::kind`])
    pub op: &'static str,
    /// its output shape for one image at the model's input size
    pub shape: Vec<usize>,
}

static MODEL_IDS: AtomicU64 = AtomicU64::new(1);

/// A loaded, validated model.
pub struct Model {
    /// the network: named nodes, shapes, parameter slots
    pub graph: Graph,
    /// parameter values (host, PyTorch layouts), indexed by the graph's `ParamId`s
    pub params: Vec<Arc<Tensor>>,
    /// tells this model's [`Layer`]s from other models'
    uid: u64,
    names: HashMap<String, NodeId>,
    /// how an image becomes the network's input: size, mean, std
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
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::model(origin, format!("metadata `{key}` = {s:?} holds a value that is not a finite number")));
    }
    let v: Vec<f32> = if v.len() == 1 { vec![v[0]; N] } else { v };
    v.try_into().map_err(|_| Error::model(origin, format!("metadata `{key}` = {s:?} needs {N} values")))
}

fn is_ignored(g: &Graph, name: &str) -> bool {
    name.ends_with("num_batches_tracked") || g.ignored_prefixes.iter().any(|p| name.starts_with(p.as_str()))
}

impl Model {
    /// Load a model file. `arch` overrides (or supplies) the file's `arch` metadata.
    /// A file named `*.onnx`, or whose bytes look like ONNX ([`crate::onnx::is_onnx`]), is read
    /// as an ONNX model ([`Model::from_onnx`]).
    pub fn load(path: &Path, arch: Option<&str>) -> Result<Model> {
        crate::imageio::regular_file_len(path)?;
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let origin = path.display().to_string();
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")) {
            return Self::from_onnx(&bytes, &origin, arch);
        }
        Self::from_bytes(&bytes, &origin, arch)
    }

    /// An ONNX model ([`crate::onnx`]: the ops it maps, how node names become module paths).
    /// The file carries its architecture, so `arch` must be `None`. Preprocessing: ImageNet's
    /// mean and std at the input size the graph declares (224 where it is symbolic), unless the
    /// model's `metadata_props` give `input_size`, `mean`, `std` as safetensors metadata does.
    pub fn from_onnx(bytes: &[u8], origin: &str, arch: Option<&str>) -> Result<Model> {
        if let Some(a) = arch {
            return Err(Error::model(origin, format!("an ONNX file carries its own graph; --arch {a} is for .safetensors files")));
        }
        let crate::onnx::Imported { graph, params, meta } = crate::onnx::import(bytes, origin)?;
        Self::finish(graph, params, &meta, origin)
    }

    /// The embedded default model (EfficientNet-Lite0, ImageNet), or an error saying what to do
    /// where this build has none.
    ///
    /// Why the weights are embedded only sometimes: the 18.8 MB file would put the crates.io
    /// package over its 10 MB limit, while the CLI built from the repository should work offline
    /// with no `--model`. So the package leaves the file out and the build embeds it when it is
    /// there (build.rs), with no feature to remember: a checkout has it, a dependent's build from
    /// crates.io does not, and loads a model file instead ([`Model::load`]; the repository's
    /// `weights/efficientnet_lite0.safetensors` is that file).
    pub fn default_model() -> Result<Model> {
        match DEFAULT_WEIGHTS {
            Some(bytes) => Self::from_bytes(bytes, "embedded default (efficientnet_lite0)", None),
            None => Err(Error::Unsupported(
                "no default model in this build (the crates.io package leaves out the 18.8 MB weights): pass --model FILE \
                 (Model::load in the library), e.g. weights/efficientnet_lite0.safetensors from the deepviz repository, \
                 or build deepviz from a checkout of the repository, which embeds it"
                    .into(),
            )),
        }
    }

    /// The architecture `arch` (timm naming for efficientnet_lite0) with placeholder weights:
    /// zeros, and batch norms that are the identity. For measuring what the engine does with a
    /// model's shapes (`deepviz trace`), not for computing anything meaningful.
    pub fn placeholder(arch: &str) -> Result<Model> {
        let graph = zoo::build(arch, &|_| false)?;
        let params = graph
            .params
            .iter()
            .map(|p| {
                let v = if p.name.ends_with("running_var") || (p.name.ends_with(".weight") && p.shape.len() == 1) { 1.0 } else { 0.0 };
                Arc::new(Tensor::full(&p.shape, v))
            })
            .collect();
        Self::from_graph(graph, params, &format!("placeholder {arch}"))
    }

    /// A model of a graph built with [`crate::graph::GraphBuilder`] (an architecture outside the
    /// zoo, or a small network a test can check by hand) and its parameters, in the graph's
    /// parameter order; ImageNet preprocessing at the graph's input size.
    pub fn from_graph(graph: crate::graph::Graph, params: Vec<Arc<Tensor>>, origin: &str) -> Result<Model> {
        if params.len() != graph.params.len() {
            return Err(Error::model(origin, format!("{} parameters given, the graph has {}", params.len(), graph.params.len())));
        }
        for (p, spec) in params.iter().zip(&graph.params) {
            if p.shape != spec.shape || p.data.len() != p.shape.iter().product::<usize>() {
                return Err(Error::model(origin, format!("parameter `{}` has shape {:?}, the graph expects {:?}", spec.name, p.shape, spec.shape)));
            }
        }
        let pre = Preprocess::imagenet(graph.input_size);
        let uid = MODEL_IDS.fetch_add(1, Ordering::Relaxed);
        let mut model = Model { graph, params, uid, names: HashMap::new(), preprocess: pre, classes: vec![], origin: origin.to_string() };
        model.index_names();
        Ok(model)
    }

    /// The same model (graph, names, preprocessing — and so the same [`Layer`]s) with some
    /// parameters given new values `(ParamId, tensor)`; the unchanged tensors are shared, not
    /// copied. A parameter that does not exist, a wrong shape or a non-finite value is an error.
    pub fn with_params(&self, changes: &[(crate::graph::ParamId, Arc<Tensor>)]) -> Result<Model> {
        let mut params = self.params.clone();
        for (id, t) in changes {
            let spec = self.graph.params.get(*id).ok_or_else(|| Error::model(&self.origin, format!("no parameter #{id} (the model has {})", self.params.len())))?;
            if t.shape != spec.shape || t.data.len() != t.shape.iter().product::<usize>() {
                return Err(Error::model(&self.origin, format!("parameter `{}` has shape {:?}, the graph expects {:?}", spec.name, t.shape, spec.shape)));
            }
            if let Some(v) = t.data.iter().find(|v| !v.is_finite()) {
                return Err(Error::tensor(&spec.name, format!("holds {v}")));
            }
            params[*id] = t.clone();
        }
        Ok(Model { graph: self.graph.clone(), params, uid: self.uid, names: self.names.clone(), preprocess: self.preprocess, classes: self.classes.clone(), origin: self.origin.clone() })
    }

    /// A model file's bytes: safetensors, or ONNX when they look like it.
    pub fn from_bytes(bytes: &[u8], origin: &str, arch: Option<&str>) -> Result<Model> {
        if crate::onnx::is_onnx(bytes) {
            return Self::from_onnx(bytes, origin, arch);
        }
        check_header_keys(bytes).map_err(|msg| Error::model(origin, msg))?;
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
        let graph = zoo::build(&arch, &|n: &str| names.contains(n))?;

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
        Self::finish(graph, params, &meta, origin)
    }

    /// What every model file goes through once its graph and parameters are read: finite
    /// values, the preprocessing metadata (`input_size`, `mean`, `std`, `transform_input`),
    /// shapes consistent at the input size, class names for 1000 classes.
    fn finish(mut graph: Graph, mut params: Vec<Tensor>, meta: &HashMap<String, String>, origin: &str) -> Result<Model> {
        if params.len() != graph.params.len() {
            return Err(Error::model(origin, format!("{} parameters for a graph of {}", params.len(), graph.params.len())));
        }
        if let Some((_, spec)) = params.iter().zip(&graph.params).find(|(p, _)| p.data.iter().any(|v| !v.is_finite())) {
            return Err(Error::model(origin, format!("tensor `{}` holds NaN or infinite values", spec.name)));
        }
        let [h, w] = graph.input_size;
        let mut pre = Preprocess::imagenet([h, w]);
        if let Some(s) = meta.get("input_size") {
            let [a, b] = parse_floats::<2>(origin, "input_size", s)?;
            let side = crate::imageio::MAX_INPUT_SIDE as f32;
            if a < 1.0 || b < 1.0 || a.fract() != 0.0 || b.fract() != 0.0 || a > side || b > side {
                return Err(Error::model(
                    origin,
                    format!("metadata `input_size` = {s:?} is not a size of 1 to {} pixels a side (imageio::MAX_INPUT_SIDE)", crate::imageio::MAX_INPUT_SIDE),
                ));
            }
            pre.size = [a as usize, b as usize];
        }
        if let Some(s) = meta.get("mean") {
            pre.mean = parse_floats::<3>(origin, "mean", s)?;
        }
        if let Some(s) = meta.get("std") {
            pre.std = parse_floats::<3>(origin, "std", s)?;
            if pre.std.iter().any(|&v| !(v > 0.0)) {
                return Err(Error::model(origin, format!("metadata `std` = {s:?} must be positive")));
            }
        }

        match meta.get("transform_input").map(String::as_str) {
            None | Some("false") | Some("0") => {}
            Some("true") | Some("1") => insert_input_transform(&mut graph, &mut params),
            Some(v) => return Err(Error::model(origin, format!("metadata `transform_input` = {v:?} is not true/false"))),
        }
        let params = params.into_iter().map(Arc::new).collect();
        let uid = MODEL_IDS.fetch_add(1, Ordering::Relaxed);
        let mut model = Model { graph, params, uid, names: HashMap::new(), preprocess: pre, classes: vec![], origin: origin.into() };
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
        }
    }

    /// Resolve a PyTorch module path to the node whose output it is: an exact node name, else
    /// the last node inside that module (a container's output) — what a forward hook on that
    /// module sees. `input` is the (preprocessed) input.
    pub fn resolve(&self, layer: &str) -> Result<Layer> {
        if let Some(&id) = self.names.get(layer) {
            return Ok(self.layer(id));
        }
        let inside = |n: &str| n.strip_prefix(layer).is_some_and(|r| r.starts_with('.') || r.starts_with(':'));
        let found = self.graph.nodes.iter().rposition(|n| inside(&n.name));
        found.map(|id| self.layer(id)).ok_or_else(|| Error::UnknownLayer { name: layer.into(), hint: self.close_matches(layer) })
    }

    pub(crate) fn layer(&self, node: NodeId) -> Layer {
        Layer { node, model: self.uid }
    }

    /// The node of `layer`, or an error if it belongs to another model.
    pub fn check(&self, layer: Layer) -> Result<NodeId> {
        if layer.model != self.uid || layer.node >= self.graph.nodes.len() {
            return Err(Error::InvalidArgument(format!(
                "layer #{} belongs to another model than {} (resolve layer names on the model you run)",
                layer.node, self.origin
            )));
        }
        Ok(layer.node)
    }

    /// The network's input, as a layer (gradients w.r.t. the image are taken here).
    pub fn input(&self) -> Layer {
        self.layer(0)
    }

    /// The network's output (the logits), as a layer.
    pub fn output(&self) -> Layer {
        self.layer(self.graph.output)
    }

    fn close_matches(&self, layer: &str) -> String {
        let mut all: Vec<&str> = self.layer_paths();
        // Levenshtein distance in chars
        all.sort_by_key(|n| strsim::levenshtein(layer, n));
        let near: Vec<String> = all.iter().take(5).map(|n| format!("`{n}`")).collect();
        format!("; close matches: {} (`deepviz layers` lists them all)", near.join(", "))
    }

    /// Every module path a user can name: node names and their containers, in order.
    pub fn layer_paths(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        let mut out = vec![];
        for n in &self.graph.nodes {
            let name = &n.name;
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
        out
    }

    /// Every module path with what it yields at the model's input size: the node it resolves
    /// to (itself, or a container's last node), that node's op and output shape (batch 1).
    pub fn layer_table(&self) -> Result<Vec<LayerRow>> {
        let [h, w] = self.preprocess.size;
        let shapes = self.infer_shapes(&[1, 3, h, w])?;
        self.layer_paths()
            .into_iter()
            .map(|path| {
                let id = self.resolve(path)?.node;
                let n = &self.graph.nodes[id];
                Ok(LayerRow { path: path.to_string(), node: n.name.clone(), op: n.op.kind(), shape: shapes[id].clone() })
            })
            .collect()
    }

    /// The node name of a layer (the module path, `relu:0` for an earlier call of a reused module).
    pub fn name(&self, layer: Layer) -> &str {
        self.graph.nodes.get(layer.node).map_or("?", |n| n.name.as_str())
    }

    /// Output shapes of every node for an input shape (validates the input).
    pub fn infer_shapes(&self, input: &[usize]) -> Result<Vec<Vec<usize>>> {
        let ps: Vec<Vec<usize>> = self.params.iter().map(|t| t.shape.clone()).collect();
        shapes::infer(&self.graph, &ps, input, self.graph.nodes.len() - 1)
    }

    /// The name of class `i` from the model's class list, or `class i` beyond its end.
    pub fn class_name(&self, i: usize) -> String {
        self.classes.get(i).cloned().unwrap_or_else(|| format!("class {i}"))
    }
}

/// A safetensors header whose JSON repeats a key (a tensor name, or `arch` in `__metadata__`) is
/// refused: a JSON parser keeps the last one silently, and which one was meant is unknowable.
/// Other damage is left to the safetensors parser.
fn check_header_keys(bytes: &[u8]) -> std::result::Result<(), String> {
    struct Unique;
    impl<'de> serde::de::Deserialize<'de> for Unique {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            d.deserialize_any(UniqueVisitor)
        }
    }
    struct UniqueVisitor;
    impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
        type Value = Unique;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Unique, A::Error> {
            let mut seen = HashSet::new();
            while let Some(k) = map.next_key::<String>()? {
                if !seen.insert(k.clone()) {
                    return Err(serde::de::Error::custom(format!("the header repeats the key `{k}`")));
                }
                map.next_value::<Unique>()?;
            }
            Ok(Unique)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Unique, A::Error> {
            while seq.next_element::<Unique>()?.is_some() {}
            Ok(Unique)
        }
        fn visit_bool<E>(self, _: bool) -> std::result::Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_str<E>(self, _: &str) -> std::result::Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_unit<E>(self) -> std::result::Result<Unique, E> {
            Ok(Unique)
        }
    }
    let Some(len) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize) else { return Ok(()) };
    let Some(header) = bytes.get(8..8usize.saturating_add(len)) else { return Ok(()) };
    match serde_json::from_slice::<Unique>(header) {
        Err(e) if e.to_string().contains("repeats the key") => Err(e.to_string().split(" at line").next().unwrap_or("").to_string()),
        _ => Ok(()), // malformed JSON: the safetensors parser says so
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
        op: Op::Affine { scale: n - 2, shift: n - 1 },
        inputs: vec![0],
    };
    g.nodes.insert(1, node);
    g.output += 1;
}

