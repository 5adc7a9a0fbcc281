//! An [`Engine`] is a model made ready on one backend: its weights prepared there once
//! (uploaded, repacked for the CUDA engine, batch norms folded into the convolutions before
//! them), and the forward / backward passes run there.
//!
//! - `mod.rs` (this file): [`Engine`] and what it prepares per node.
//! - `exec.rs`: the forward pass (keeping what the caller observes and what the backward pass
//!   needs, fusing the rest) and the backward pass from seeds at any layers, under a [`Rule`].
//!
//! Folding. A batch norm that is the only consumer of a convolution is folded into it
//! (W' = W·s, b' = b·s + t with s = γ/√(σ²+ε), t = β − μ·s), so the pair costs one convolution.
//! The convolution's own output then never exists; when a caller observes that convolution (a
//! Grad-CAM layer, a DeepDream objective, a gradient wanted there), the forward pass runs the
//! pair unfolded, with the convolution's own weights (prepared on first use) and the batch norm
//! as an affine map, so `layer3.1.conv2` is what a PyTorch hook on that conv sees.

mod exec;

pub use exec::{Activations, Rule};

use std::sync::{Arc, Mutex, OnceLock};

use crate::backend::{Backend, Role};
use crate::error::{Error, Result};
use crate::graph::{NodeId, Op, ParamId};
use crate::model::{Layer, Model};
use crate::tensor::Tensor;

/// A batch norm folded into the convolution before it.
pub(crate) struct Folded<W> {
    /// the batch norm node whose output the folded convolution gives
    pub bn: NodeId,
    pub w: W,
    pub b: W,
}

/// What one node needs on the backend, prepared once.
pub(crate) enum Prep<W> {
    None,
    /// A convolution: its own weights (for a convolution usually folded, prepared on first use),
    /// and the folded weights when a batch norm follows it alone.
    Conv { w: OnceLock<W>, b: OnceLock<Option<W>>, fold: Option<Folded<W>> },
    Linear { w: W, b: Option<W> },
    /// A batch norm's or an affine node's y = x·scale + shift.
    Affine { scale: W, shift: W },
}

/// A model made ready on one backend: its weights uploaded and prepared once (batch norms
/// folded where nobody looks at the convolution's own output), run forward and backward.
pub struct Engine<B: Backend> {
    model: Arc<Model>,
    /// the backend it runs on
    pub be: B,
    prep: Vec<Prep<B::W>>,
    /// small host constants already on the backend ([`Engine::constant`]), newest last
    constants: Mutex<Vec<(Tensor, B::T)>>,
    /// whether passes fuse ops into their convolutions ([`Engine::set_fusion`])
    fuse: bool,
}

/// How many constants [`Engine::constant`] keeps, and the largest it keeps (elements).
const CONSTANTS: usize = 16;
const CONSTANT_MAX: usize = 4096;

/// A batch norm node's (scale, shift): y = x·scale + shift.
fn bn_affine(model: &Model, id: NodeId) -> Option<(Vec<f32>, Vec<f32>)> {
    let Op::BatchNorm { weight, bias, mean, var, eps } = model.graph.nodes[id].op else { return None };
    let p = |i: ParamId| &model.params[i].data;
    let scale: Vec<f32> = p(weight).iter().zip(p(var)).map(|(w, v)| w / (v + eps).sqrt()).collect();
    let shift = p(bias).iter().zip(p(mean)).zip(&scale).map(|((b, m), s)| b - m * s).collect();
    Some((scale, shift))
}

fn vector(v: Vec<f32>) -> Arc<Tensor> {
    Arc::new(Tensor { shape: vec![v.len()], data: v })
}

/// The parameters a node's op reads.
fn op_params(op: &Op) -> Vec<ParamId> {
    match *op {
        Op::Conv { weight, bias, .. } | Op::Linear { weight, bias } => std::iter::once(weight).chain(bias).collect(),
        Op::BatchNorm { weight, bias, mean, var, .. } => vec![weight, bias, mean, var],
        Op::Affine { scale, shift } => vec![scale, shift],
        _ => vec![],
    }
}

/// Per node, the batch norm folded into it: a batch norm folds into the convolution before it
/// when it is that conv's only consumer.
fn fold_targets(model: &Model) -> Vec<Option<NodeId>> {
    let g = &model.graph;
    let mut consumers = vec![0usize; g.nodes.len()];
    for n in &g.nodes {
        for &i in &n.inputs {
            consumers[i] += 1;
        }
    }
    let mut folds_into: Vec<Option<NodeId>> = vec![None; g.nodes.len()];
    for (id, n) in g.nodes.iter().enumerate() {
        if let (Op::BatchNorm { .. }, [src]) = (&n.op, n.inputs.as_slice()) {
            if matches!(g.nodes[*src].op, Op::Conv { .. }) && consumers[*src] == 1 && *src != g.output {
                folds_into[*src] = Some(id);
            }
        }
    }
    folds_into
}

/// What node `id` needs on `be` (`fold`: the batch norm folded into it, for a convolution).
fn prepare<B: Backend>(model: &Model, be: &B, id: NodeId, fold: Option<NodeId>) -> Result<Prep<B::W>> {
    let param = |i: ParamId, role| be.weight(&model.params[i], role);
    Ok(match &model.graph.nodes[id].op {
        Op::Conv { weight, bias, .. } => {
            let (w, b) = (OnceLock::new(), OnceLock::new());
            let fold = match fold {
                Some(bn) => {
                    let (s, t) = bn_affine(model, bn).expect("a batch norm node");
                    let raw = &model.params[*weight];
                    let per = raw.numel() / raw.shape[0];
                    let mut fw = (**raw).clone();
                    for (o, chunk) in fw.data.chunks_mut(per).enumerate() {
                        chunk.iter_mut().for_each(|x| *x *= s[o]);
                    }
                    let fb: Vec<f32> = match bias {
                        Some(p) => model.params[*p].data.iter().zip(&s).zip(&t).map(|((b, s), t)| b * s + t).collect(),
                        None => t,
                    };
                    Some(Folded { bn, w: be.weight(&Arc::new(fw), Role::ConvWeight)?, b: be.weight(&vector(fb), Role::Vector)? })
                }
                None => {
                    // never folded: prepared now, like every other weight
                    let _ = w.set(param(*weight, Role::ConvWeight)?);
                    let _ = b.set(bias.map(|p| param(p, Role::Vector)).transpose()?);
                    None
                }
            };
            Prep::Conv { w, b, fold }
        }
        Op::Linear { weight, bias } => Prep::Linear { w: param(*weight, Role::LinearWeight)?, b: bias.map(|p| param(p, Role::Vector)).transpose()? },
        Op::Affine { scale, shift } => Prep::Affine { scale: param(*scale, Role::Vector)?, shift: param(*shift, Role::Vector)? },
        Op::BatchNorm { .. } => {
            let (s, t) = bn_affine(model, id).expect("a batch norm node");
            Prep::Affine { scale: be.weight(&vector(s), Role::Vector)?, shift: be.weight(&vector(t), Role::Vector)? }
        }
        _ => Prep::None,
    })
}

impl<B: Backend> Engine<B> {
    /// This engine with some parameters given new values (`(ParamId, tensor)`, shapes as
    /// before): the model is rebuilt around the shared unchanged tensors
    /// ([`Model::with_params`]) and only the nodes that read a changed parameter (or fold a
    /// batch norm that does) are prepared again, so a chain of edits — the cascading
    /// randomisation of [`crate::viz::sanity`] — uploads each changed layer once and never the
    /// whole network.
    pub fn with_params(mut self, changes: &[(ParamId, Arc<Tensor>)]) -> Result<Self> {
        let model = Arc::new(self.model.with_params(changes)?);
        let folds_into = fold_targets(&model);
        let changed = |id: NodeId| op_params(&model.graph.nodes[id].op).iter().any(|p| changes.iter().any(|c| c.0 == *p));
        for (id, &fold) in folds_into.iter().enumerate() {
            if changed(id) || fold.is_some_and(changed) {
                self.prep[id] = prepare(&model, &self.be, id, fold)?;
            }
        }
        self.model = model;
        Ok(self)
    }

    /// Prepare `model` on `be`.
    pub fn new(model: impl Into<Arc<Model>>, be: B) -> Result<Self> {
        let model: Arc<Model> = model.into();
        let folds_into = fold_targets(&model);
        let prep = (0..model.graph.nodes.len()).map(|id| prepare(&model, &be, id, folds_into[id])).collect::<Result<Vec<_>>>()?;
        // DEEPVIZ_FUSE=0 runs every op on its own (to compare, or to look at an op's output in
        // a profile); the answer is the same to the bit
        let fuse = std::env::var("DEEPVIZ_FUSE").map_or(true, |v| v != "0");
        Ok(Engine { model, be, prep, constants: Mutex::new(Vec::new()), fuse })
    }

    /// Whether the forward pass runs a convolution's batch norm (folded), residual add and
    /// ReLU / ReLU6 in the convolution's epilogue, and the backward pass applies a ReLU / ReLU6
    /// mask in the backward-data of the convolution after it (on by default; the environment
    /// variable `DEEPVIZ_FUSE=0` turns it off). Fused and unfused passes compute the same
    /// numbers in the same order, so the results agree to the bit; what changes is how many
    /// tensors are written, launches made and bytes moved (`deepviz trace`). Layers kept by a
    /// pass are never fused away, so every layer stays observable.
    pub fn set_fusion(&mut self, on: bool) {
        self.fuse = on;
    }

    /// The model it runs.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The shared model (to build another engine on it, or keep it beyond this engine).
    pub fn model_arc(&self) -> &Arc<Model> {
        &self.model
    }

    /// Run the model on `x` up to `upto` (`model().output()` for the whole network), keeping the
    /// outputs of the layers in `keep` (to read with [`Activations::get`], or to seed or ask for
    /// gradients at in [`Engine::backward`]). The input and `upto` are always kept.
    ///
    /// Memory: the engine bounds a pass by every value it computes plus room for four of the
    /// largest gradients. On the CPU a pass past [`Backend::memory_budget`] is refused before it
    /// starts; on a GPU that runs out, [`Error::OutOfMemory`] (here and in
    /// [`Engine::backward`]) says which batch would fit in what is left, and the engine stays
    /// usable (the failed pass's buffers go back to its pool).
    pub fn forward(&self, x: B::T, upto: Layer, keep: &[Layer]) -> Result<Activations<B>> {
        let upto = self.model.check(upto)?;
        let keep = keep.iter().map(|&l| self.model.check(l)).collect::<Result<Vec<_>>>()?;
        let xs = self.be.shape(&x).to_vec();
        let pshapes = || self.model.params.iter().map(|p| p.shape.clone()).collect::<Vec<_>>();
        exec::forward(self, x, upto, &keep).map_err(|e| exec::with_fit(&self.be, e, || crate::graph::shapes::infer(&self.model.graph, &pshapes(), &xs, upto)))
    }

    /// Gradients at `want` of the objective whose gradients at some layers are `seeds`, passing
    /// activations by `rule`. Seeds and wanted layers must have been kept by the forward pass.
    pub fn backward(&self, acts: &Activations<B>, seeds: Vec<(Layer, B::T)>, want: &[Layer], rule: Rule) -> Result<Vec<B::T>> {
        let seeds = seeds.into_iter().map(|(l, t)| Ok((self.model.check(l)?, t))).collect::<Result<Vec<_>>>()?;
        let want = want.iter().map(|&l| self.model.check(l)).collect::<Result<Vec<_>>>()?;
        exec::backward(self, acts, seeds, &want, rule).map_err(|e| exec::with_fit(&self.be, e, || Ok(acts.shapes.clone())))
    }

    /// The layers at or before `from` whose outputs the layers after it (up to `upto`) read: keep
    /// them in the forward pass before [`Engine::forward_from`].
    pub fn boundary(&self, from: Layer, upto: Layer) -> Result<Vec<Layer>> {
        let (from, upto) = (self.model.check(from)?, self.model.check(upto)?);
        Ok(exec::boundary(&self.model.graph, from, upto).into_iter().map(|id| self.model.layer(id)).collect())
    }

    /// The output of `upto` with the output of `from` replaced by `value`, a batch that repeats
    /// each item of `acts` `repeat` times in a row (what-if passes: ablating channels, many
    /// edits of one item in one batch). Only the layers after `from` run; `acts` must have kept
    /// `from`'s [`Engine::boundary`].
    pub fn forward_from(&self, acts: &Activations<B>, from: Layer, value: B::T, upto: Layer, repeat: usize) -> Result<B::T> {
        let (from, upto) = (self.model.check(from)?, self.model.check(upto)?);
        exec::forward_from(self, acts, from, value, upto, repeat.max(1))
    }

    /// `x` (a host tensor `[n, c, h, w]`) on the backend.
    pub fn upload(&self, x: &Tensor) -> Result<B::T> {
        self.be.upload(x)
    }

    /// `x` on the backend, uploaded once: a small host constant a job asks for again and again
    /// (the target indices of each SmoothGrad sample or IG step) costs one copy, not one per
    /// pass — and on a GPU no host wait per pass. The last few distinct ones are kept.
    pub(crate) fn constant(&self, x: Tensor) -> Result<B::T> {
        if x.data.len() > CONSTANT_MAX {
            return self.upload(&x);
        }
        let mut kept = self.constants.lock().unwrap_or_else(|e| e.into_inner());
        // compared bit for bit (a NaN constant is found again; -0 is not 0)
        let same = |t: &Tensor| t.shape == x.shape && t.data.iter().zip(&x.data).all(|(a, b)| a.to_bits() == b.to_bits());
        if let Some(i) = kept.iter().position(|(t, _)| same(t)) {
            let hit = kept.remove(i);
            let dev = hit.1.clone();
            kept.push(hit);
            return Ok(dev);
        }
        let dev = self.upload(&x)?;
        if kept.len() == CONSTANTS {
            kept.remove(0);
        }
        kept.push((x, dev.clone()));
        Ok(dev)
    }

    /// A backend tensor back on the host.
    pub fn download(&self, x: &B::T) -> Result<Tensor> {
        self.be.download(x)
    }

    pub(crate) fn prep(&self, id: NodeId) -> &Prep<B::W> {
        &self.prep[id]
    }

    /// A linear layer's prepared weight `[out, in]`.
    pub(crate) fn linear_weight(&self, layer: Layer) -> Result<&B::W> {
        match &self.prep[self.model.check(layer)?] {
            Prep::Linear { w, .. } => Ok(w),
            _ => Err(Error::InvalidArgument(format!("layer `{}` is not a linear layer", self.model.name(layer)))),
        }
    }

    /// A convolution's own (unfolded) weight and bias, prepared on first use.
    pub(crate) fn conv_weights(&self, id: NodeId) -> Result<(&B::W, Option<&B::W>)> {
        let (Prep::Conv { w, b, .. }, Op::Conv { weight, bias, .. }) = (&self.prep[id], &self.model.graph.nodes[id].op) else {
            return Err(Error::InvalidArgument(format!("layer `{}` is not a convolution", self.model.graph.nodes[id].name)));
        };
        if w.get().is_none() {
            let _ = w.set(self.be.weight(&self.model.params[*weight], Role::ConvWeight)?);
        }
        if b.get().is_none() {
            let _ = b.set(bias.map(|p| self.be.weight(&self.model.params[p], Role::Vector)).transpose()?);
        }
        Ok((w.get().expect("set above"), b.get().expect("set above").as_ref()))
    }
}
