//! Forward and backward execution of a graph on any [`Backend`].
//!
//! The forward pass keeps every activation (and max-pool argmaxes) on the backend: the
//! visualisations need the activations of named layers and the backward pass needs the inputs
//! of every op. The backward pass starts from gradient seeds at any nodes (the gradient of a
//! scalar objective w.r.t. those nodes' outputs) and returns the gradient at any requested
//! nodes — the input image, or a named layer. Only activation gradients are propagated;
//! weights are constants here.

use super::shapes::{conv_geom, infer};
use super::{Graph, NodeId, Op};
use crate::backend::Backend;
use crate::error::{Error, Result};

/// Everything the forward pass computed, up to and including node `upto`.
pub struct Activations<B: Backend> {
    pub values: Vec<Option<B::T>>,
    argmax: Vec<Option<B::Idx>>,
    pub shapes: Vec<Vec<usize>>,
    pub upto: NodeId,
}

impl<B: Backend> Activations<B> {
    /// The activation of node `id` (None if the forward stopped before it).
    pub fn get(&self, id: NodeId) -> Option<&B::T> {
        self.values.get(id).and_then(|v| v.as_ref())
    }
}

/// The prepared parameter `i` (every parameter a node names was prepared by the engine).
fn wt<W>(w: &[Option<W>], i: usize) -> &W {
    w[i].as_ref().expect("engine prepared every parameter a node uses")
}

fn unfolded(g: &Graph, id: NodeId) -> Error {
    Error::Unsupported(format!("layer `{}`: batch norm was not folded at load time", g.nodes[id].name))
}

/// Run the graph on `x` up to node `upto` (use `g.output` for the whole network). `w` are the
/// parameters prepared for `be` (by `ParamId`), `pshapes` their shapes.
pub fn forward<B: Backend>(
    g: &Graph,
    w: &[Option<B::W>],
    pshapes: &[Vec<usize>],
    be: &B,
    x: B::T,
    upto: NodeId,
) -> Result<Activations<B>> {
    let shapes = infer(g, pshapes, be.shape(&x), upto)?;
    let n = g.nodes.len();
    let mut values: Vec<Option<B::T>> = vec![None; n];
    let mut argmax: Vec<Option<B::Idx>> = (0..n).map(|_| None).collect();
    values[0] = Some(x);
    for id in 1..=upto {
        let node = &g.nodes[id];
        let inp = |k: usize| values[node.inputs[k]].as_ref().expect("topological order");
        let y = match &node.op {
            Op::Input => inp(0).clone(),
            Op::Conv { weight, bias, stride, pad, dilation, groups } => {
                let geom = conv_geom(pad, *stride, *dilation, *groups, &shapes[node.inputs[0]], &pshapes[*weight]);
                be.conv2d(inp(0), wt(w, *weight), bias.map(|b| wt(w, b)), &geom)?
            }
            Op::BatchNorm { .. } => return Err(unfolded(g, id)),
            Op::Affine { scale, shift } => be.affine(inp(0), wt(w, *scale), wt(w, *shift))?,
            Op::Linear { weight, bias } => be.linear(inp(0), wt(w, *weight), bias.map(|b| wt(w, b)))?,
            Op::Act(a) => be.act(inp(0), *a)?,
            Op::MaxPool(p) => {
                let (y, am) = be.max_pool2d(inp(0), p)?;
                argmax[id] = Some(am);
                y
            }
            Op::AvgPool(p) => be.avg_pool2d(inp(0), p)?,
            Op::AdaptiveAvgPool(o) => be.adaptive_avg_pool2d(inp(0), *o)?,
            Op::Add => be.add(inp(0), inp(1))?,
            Op::Concat => {
                let xs: Vec<&B::T> = node.inputs.iter().map(|&i| values[i].as_ref().unwrap()).collect();
                be.concat(&xs)?
            }
            Op::ChannelScale => be.channel_scale(inp(0), inp(1))?,
            Op::Flatten => be.reshape(inp(0).clone(), &shapes[id])?,
            Op::Lrn(l) => be.lrn(inp(0), l)?,
        };
        debug_assert_eq!(be.shape(&y), shapes[id].as_slice(), "layer {}", node.name);
        values[id] = Some(y);
    }
    Ok(Activations { values, argmax, shapes, upto })
}

/// Backpropagate from `seeds` (gradient of the objective w.r.t. those nodes' outputs) and return
/// the gradient w.r.t. each node in `want` (zeros where the objective does not depend on it).
pub fn backward<B: Backend>(
    g: &Graph,
    w: &[Option<B::W>],
    pshapes: &[Vec<usize>],
    be: &B,
    acts: &Activations<B>,
    seeds: Vec<(NodeId, B::T)>,
    want: &[NodeId],
) -> Result<Vec<B::T>> {
    let n = g.nodes.len();
    let mut grads: Vec<Option<B::T>> = vec![None; n];
    let mut top = 0;
    for (id, t) in seeds {
        if id > acts.upto || be.shape(&t) != acts.shapes[id].as_slice() {
            return Err(Error::shape(format!("gradient seed for `{}`", g.nodes[id].name), acts.shapes.get(id), be.shape(&t)));
        }
        top = top.max(id);
        match &mut grads[id] {
            Some(acc) => be.add_assign(acc, &t)?,
            slot => *slot = Some(t),
        }
    }
    let lowest = want.iter().copied().min().unwrap_or(0);
    for id in (1..=top).rev() {
        if id < lowest {
            break;
        }
        let Some(gy) = grads[id].take() else { continue };
        let node = &g.nodes[id];
        if want.contains(&id) {
            grads[id] = Some(gy.clone());
        }
        let x = |k: usize| acts.values[node.inputs[k]].as_ref().expect("forward kept it");
        let xs = |k: usize| &acts.shapes[node.inputs[k]];
        let gin: Vec<B::T> = match &node.op {
            Op::Input => vec![],
            Op::Conv { weight, stride, pad, dilation, groups, .. } => {
                let geom = conv_geom(pad, *stride, *dilation, *groups, xs(0), &pshapes[*weight]);
                vec![be.conv2d_backward_data(&gy, wt(w, *weight), xs(0), &geom)?]
            }
            Op::BatchNorm { .. } => return Err(unfolded(g, id)),
            Op::Affine { scale, .. } => vec![be.affine_backward(&gy, wt(w, *scale))?],
            Op::Linear { weight, .. } => vec![be.linear_backward_data(&gy, wt(w, *weight))?],
            Op::Act(a) => vec![be.act_backward(x(0), &gy, *a)?],
            Op::MaxPool(_) => vec![be.max_pool2d_backward(&gy, acts.argmax[id].as_ref().unwrap(), xs(0))?],
            Op::AvgPool(p) => vec![be.avg_pool2d_backward(&gy, xs(0), p)?],
            Op::AdaptiveAvgPool(_) => vec![be.adaptive_avg_pool2d_backward(&gy, xs(0))?],
            Op::Add => vec![gy.clone(), gy],
            Op::Concat => be.split(&gy, &node.inputs.iter().map(|&i| acts.shapes[i][1]).collect::<Vec<_>>())?,
            Op::ChannelScale => {
                let (gx, gs) = be.channel_scale_backward(x(0), x(1), &gy)?;
                vec![gx, gs]
            }
            Op::Flatten => vec![be.reshape(gy, xs(0))?],
            Op::Lrn(l) => vec![be.lrn_backward(x(0), &gy, l)?],
        };
        for (&src, gx) in node.inputs.iter().zip(gin) {
            match &mut grads[src] {
                Some(acc) => be.add_assign(acc, &gx)?,
                slot => *slot = Some(gx),
            }
        }
    }
    want.iter()
        .map(|&id| match grads[id].take() {
            Some(t) => Ok(t),
            None => be.zeros(&acts.shapes[id]),
        })
        .collect()
}
