//! The graph runtime: a small DAG of named layers.
//!
//! - `mod.rs` (this file): [`Op`], [`Node`], the [`GraphBuilder`] the model zoo uses to describe
//!   an architecture (and the tensors it expects, by their PyTorch state-dict names).
//! - `shapes.rs`: shape inference and validation, run before any op executes.
//!
//! Layer names are PyTorch module paths. A node's `name` is the module whose output it is; a
//! container path (`layer4`, `features`, `blocks.5`) resolves to the last node inside it, which
//! is the container's output — what a PyTorch forward hook on that module would see. A module
//! called several times (torchvision's Bottleneck reuses `relu`) gives the earlier calls the
//! names `relu:0`, `relu:1`, … and the last call the plain name, as "last hook call wins".
//! Every module is its own node — a batch norm too — so a name means what a hook on that
//! module sees; the engine decides what to fuse when it runs the graph ([`crate::engine`]).

pub mod shapes;

use crate::backend::{Act, LrnGeom, Pool2dGeom};

/// Index into a graph's nodes (topological order).
pub type NodeId = usize;
/// Index into the parameter list (specs while building, tensors once loaded).
pub type ParamId = usize;

/// Convolution padding: explicit (top, bottom, left, right) or TensorFlow "SAME", resolved
/// against the actual input size at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pad {
    /// (top, bottom, left, right) pixels
    Explicit([usize; 4]),
    /// TensorFlow's "SAME": the output is ⌈input / stride⌉, any odd pixel of padding at the bottom / right
    Same,
}

impl Pad {
    /// Symmetric PyTorch padding (ph, pw).
    pub fn sym(ph: usize, pw: usize) -> Pad {
        Pad::Explicit([ph, ph, pw, pw])
    }
}

/// What a node computes, as the PyTorch module (or function) it stands for.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// the image batch `[n, 3, h, w]`
    Input,
    /// `Conv2d`
    Conv {
        /// the weight `[cout, cin / groups, kh, kw]`
        weight: ParamId,
        /// the bias `[cout]`, if any
        bias: Option<ParamId>,
        /// (vertical, horizontal)
        stride: [usize; 2],
        /// the padding
        pad: Pad,
        /// (vertical, horizontal)
        dilation: [usize; 2],
        /// channel groups (cin for a depthwise convolution)
        groups: usize,
    },
    /// Inference batch norm (running statistics). The engine folds it into the convolution
    /// before it where nobody looks at that convolution's own output, else runs it as an affine
    /// map.
    BatchNorm {
        /// γ `[c]`
        weight: ParamId,
        /// β `[c]`
        bias: ParamId,
        /// running mean `[c]`
        mean: ParamId,
        /// running variance `[c]`
        var: ParamId,
        /// added to the variance
        eps: f32,
    },
    /// `y = x * scale[c] + shift[c]`
    Affine {
        /// `[c]`
        scale: ParamId,
        /// `[c]`
        shift: ParamId,
    },
    /// `Linear`: y = x Wᵀ + b on `[n, k]`
    Linear {
        /// `[out, in]`
        weight: ParamId,
        /// `[out]`, if any
        bias: Option<ParamId>,
    },
    /// an elementwise activation
    Act(Act),
    /// `MaxPool2d`
    MaxPool(Pool2dGeom),
    /// `AvgPool2d`
    AvgPool(Pool2dGeom),
    /// `AdaptiveAvgPool2d` to (h, w)
    AdaptiveAvgPool([usize; 2]),
    /// elementwise sum of two inputs (residual)
    Add,
    /// channel concatenation of all inputs
    Concat,
    /// inputs: (x `[n,c,h,w]`, s `[n,c,1,1]`) -> x * s
    ChannelScale,
    /// [n, ...] -> [n, prod(...)]
    Flatten,
    /// `LocalResponseNorm` (AlexNet, GoogLeNet)
    Lrn(LrnGeom),
}

impl Op {
    /// What the op is, in PyTorch's words (the module class, or the function for ops done by
    /// functions): `Conv2d`, `BatchNorm2d`, `ReLU`, `add`, `cat`, …
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv { .. } => "Conv2d",
            Op::BatchNorm { .. } => "BatchNorm2d",
            Op::Affine { .. } => "affine",
            Op::Linear { .. } => "Linear",
            Op::Act(Act::Relu) => "ReLU",
            Op::Act(Act::Relu6) => "ReLU6",
            Op::Act(Act::Silu) => "SiLU",
            Op::Act(Act::Sigmoid) => "Sigmoid",
            Op::Act(Act::HardSwish) => "Hardswish",
            Op::MaxPool(_) => "MaxPool2d",
            Op::AvgPool(_) => "AvgPool2d",
            Op::AdaptiveAvgPool(_) => "AdaptiveAvgPool2d",
            Op::Add => "add",
            Op::Concat => "cat",
            Op::ChannelScale => "mul",
            Op::Flatten => "flatten",
            Op::Lrn(_) => "LocalResponseNorm",
        }
    }
}

/// One node: its module path, its op and the nodes it reads.
#[derive(Clone, Debug)]
pub struct Node {
    /// the PyTorch module path (`layer4.1.conv2`)
    pub name: String,
    /// what it computes
    pub op: Op,
    /// the nodes whose outputs it reads, in the op's argument order
    pub inputs: Vec<NodeId>,
}

/// A tensor the architecture expects in the weights file.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// its state-dict name
    pub name: String,
    /// its shape
    pub shape: Vec<usize>,
}

/// Heads the visualisations need to know about.
#[derive(Clone, Debug, Default)]
pub struct Heads {
    /// default Grad-CAM layer: the last feature layer before the classifier's pooling
    pub gradcam_layer: String,
    /// default DeepDream layer
    pub dream_layer: String,
    /// CAM (Zhou et al. 2016): (feature layer, linear classifier node name), present only when
    /// the classifier is a linear layer right after global average pooling
    pub cam: Option<(String, String)>,
}

/// An architecture: nodes in topological order, the parameters they expect, and which tensors of
/// a state dict are known but unused (auxiliary heads, `num_batches_tracked`).
#[derive(Clone, Debug)]
pub struct Graph {
    /// the architecture's name (`resnet50`)
    pub arch: String,
    /// the nodes, in topological order (node 0 is the input)
    pub nodes: Vec<Node>,
    /// the parameters the nodes expect, by [`ParamId`]
    pub params: Vec<ParamSpec>,
    /// state-dict name prefixes that are known but unused
    pub ignored_prefixes: Vec<String>,
    /// the node whose output is the logits
    pub output: NodeId,
    /// the layers the visualisations default to
    pub heads: Heads,
    /// the input size the architecture was trained at (h, w)
    pub input_size: [usize; 2],
}

/// Builds a [`Graph`] node by node. Each method takes the module path (PyTorch naming) and the
/// input node(s) and returns the new node.
pub struct GraphBuilder {
    g: Graph,
}

impl GraphBuilder {
    /// A graph of architecture `arch` holding only its input node, at input size 224x224.
    pub fn new(arch: &str) -> Self {
        let input = Node { name: "input".into(), op: Op::Input, inputs: vec![] };
        GraphBuilder {
            g: Graph {
                arch: arch.into(),
                nodes: vec![input],
                params: vec![],
                ignored_prefixes: vec![],
                output: 0,
                heads: Heads::default(),
                input_size: [224, 224],
            },
        }
    }

    /// The input node.
    pub fn input(&self) -> NodeId {
        0
    }

    fn param(&mut self, name: String, shape: Vec<usize>) -> ParamId {
        self.g.params.push(ParamSpec { name, shape });
        self.g.params.len() - 1
    }

    fn node(&mut self, name: &str, op: Op, inputs: Vec<NodeId>) -> NodeId {
        self.g.nodes.push(Node { name: name.into(), op, inputs });
        self.g.nodes.len() - 1
    }

    /// `name.weight` `[cout, cin/groups, k0, k1]` and, if `bias`, `name.bias` `[cout]`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        name: &str,
        x: NodeId,
        cin: usize,
        cout: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: Pad,
        dilation: [usize; 2],
        groups: usize,
        bias: bool,
    ) -> NodeId {
        let weight = self.param(format!("{name}.weight"), vec![cout, cin / groups, kernel[0], kernel[1]]);
        let bias = bias.then(|| self.param(format!("{name}.bias"), vec![cout]));
        self.node(name, Op::Conv { weight, bias, stride, pad, dilation, groups }, vec![x])
    }

    /// Square kernel, stride and symmetric padding, no dilation, no groups, as most zoo convs.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_k(&mut self, name: &str, x: NodeId, cin: usize, cout: usize, k: usize, stride: usize, pad: usize, bias: bool) -> NodeId {
        self.conv(name, x, cin, cout, [k, k], [stride, stride], Pad::sym(pad, pad), [1, 1], 1, bias)
    }

    /// `name.{weight,bias,running_mean,running_var}` `[c]` (and `name.num_batches_tracked`, ignored).
    pub fn batch_norm(&mut self, name: &str, x: NodeId, c: usize, eps: f32) -> NodeId {
        let weight = self.param(format!("{name}.weight"), vec![c]);
        let bias = self.param(format!("{name}.bias"), vec![c]);
        let mean = self.param(format!("{name}.running_mean"), vec![c]);
        let var = self.param(format!("{name}.running_var"), vec![c]);
        self.node(name, Op::BatchNorm { weight, bias, mean, var, eps }, vec![x])
    }

    /// `name.weight` `[out, in]` and, if `bias`, `name.bias` `[out]`.
    pub fn linear(&mut self, name: &str, x: NodeId, cin: usize, cout: usize, bias: bool) -> NodeId {
        let weight = self.param(format!("{name}.weight"), vec![cout, cin]);
        let bias = bias.then(|| self.param(format!("{name}.bias"), vec![cout]));
        self.node(name, Op::Linear { weight, bias }, vec![x])
    }

    /// Node `name`: activation `a` of `x`.
    pub fn act(&mut self, name: &str, x: NodeId, a: Act) -> NodeId {
        self.node(name, Op::Act(a), vec![x])
    }

    /// Node `name`: max pooling of `x` by `g`.
    pub fn max_pool(&mut self, name: &str, x: NodeId, g: Pool2dGeom) -> NodeId {
        self.node(name, Op::MaxPool(g), vec![x])
    }

    /// Node `name`: average pooling of `x` by `g`.
    pub fn avg_pool(&mut self, name: &str, x: NodeId, g: Pool2dGeom) -> NodeId {
        self.node(name, Op::AvgPool(g), vec![x])
    }

    /// Node `name`: adaptive average pooling of `x` to `out` (h, w).
    pub fn adaptive_avg_pool(&mut self, name: &str, x: NodeId, out: [usize; 2]) -> NodeId {
        self.node(name, Op::AdaptiveAvgPool(out), vec![x])
    }

    /// Node `name`: `a + b`.
    pub fn add(&mut self, name: &str, a: NodeId, b: NodeId) -> NodeId {
        self.node(name, Op::Add, vec![a, b])
    }

    /// Node `name`: the channel concatenation of `xs`.
    pub fn concat(&mut self, name: &str, xs: &[NodeId]) -> NodeId {
        self.node(name, Op::Concat, xs.to_vec())
    }

    /// Node `name`: `x` times the per-channel scale `s` `[n, c, 1, 1]` (squeeze-and-excitation).
    pub fn channel_scale(&mut self, name: &str, x: NodeId, s: NodeId) -> NodeId {
        self.node(name, Op::ChannelScale, vec![x, s])
    }

    /// Node `name`: `x` flattened to `[n, everything else]`.
    pub fn flatten(&mut self, name: &str, x: NodeId) -> NodeId {
        self.node(name, Op::Flatten, vec![x])
    }

    /// Node `name`: local response normalisation of `x` by `g`.
    pub fn lrn(&mut self, name: &str, x: NodeId, g: LrnGeom) -> NodeId {
        self.node(name, Op::Lrn(g), vec![x])
    }

    /// `name.scale`, `name.shift` `[c]`: `y = x·scale[c] + shift[c]`.
    pub fn affine(&mut self, name: &str, x: NodeId, c: usize) -> NodeId {
        let scale = self.param(format!("{name}.scale"), vec![c]);
        let shift = self.param(format!("{name}.shift"), vec![c]);
        self.node(name, Op::Affine { scale, shift }, vec![x])
    }

    /// The graph so far (an importer infers each new node's shape from it).
    pub fn graph(&self) -> &Graph {
        &self.g
    }

    /// Tensors under this prefix may be in the file and are not used (e.g. "aux1.").
    pub fn ignore_prefix(&mut self, prefix: &str) {
        self.g.ignored_prefixes.push(prefix.into());
    }

    /// The input size the architecture was trained at (h, w).
    pub fn set_input_size(&mut self, h: usize, w: usize) {
        self.g.input_size = [h, w];
    }

    /// Rename earlier calls of a reused module: the nodes named `name` other than the last
    /// become `name:0`, `name:1`, …
    fn rename_repeats(&mut self) {
        use std::collections::HashMap;
        let mut count: HashMap<String, usize> = HashMap::new();
        for n in &self.g.nodes {
            *count.entry(n.name.clone()).or_default() += 1;
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for n in &mut self.g.nodes {
            let total = count[&n.name];
            if total > 1 {
                let k = seen.entry(n.name.clone()).or_default();
                if *k + 1 < total {
                    n.name = format!("{}:{}", n.name, k);
                }
                *k += 1;
            }
        }
    }

    /// The graph, its output node and heads set; repeated module names made unique (`name:0`, …).
    pub fn finish(mut self, output: NodeId, heads: Heads) -> Graph {
        self.rename_repeats();
        self.g.output = output;
        self.g.heads = heads;
        self.g
    }
}
