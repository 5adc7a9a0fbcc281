//! Forward and backward execution of a graph on a [`Backend`].
//!
//! The forward pass keeps every activation (and max-pool argmaxes): the visualisations need the
//! activations of named layers and the backward pass needs the inputs of every op. The backward
//! pass starts from gradient seeds at any nodes (the gradient of a scalar objective w.r.t. those
//! nodes) and returns the gradient at any requested nodes — the input image, or a named layer.
//! Only activation gradients are propagated; weights are constants here.

use super::shapes::{conv_geom, infer};
use super::{Graph, NodeId, Op};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Everything the forward pass computed, up to and including node `upto`.
pub struct Activations {
    pub values: Vec<Option<Tensor>>,
    argmax: Vec<Option<Vec<u32>>>,
    pub shapes: Vec<Vec<usize>>,
    pub upto: NodeId,
}

impl Activations {
    /// The activation of node `id` (None if the forward stopped before it).
    pub fn get(&self, id: NodeId) -> Option<&Tensor> {
        self.values.get(id).and_then(|v| v.as_ref())
    }
}

fn bn_scale_shift(params: &[Tensor], w: usize, b: usize, m: usize, v: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let (w, b, m, v) = (&params[w].data, &params[b].data, &params[m].data, &params[v].data);
    let scale: Vec<f32> = w.iter().zip(v).map(|(w, v)| w / (v + eps).sqrt()).collect();
    let shift = b.iter().zip(m).zip(&scale).map(|((b, m), s)| b - m * s).collect();
    (scale, shift)
}

/// Run the graph on `x` up to node `upto` (use `g.output` for the whole network).
pub fn forward(g: &Graph, params: &[Tensor], be: &dyn Backend, x: Tensor, upto: NodeId) -> Result<Activations> {
    let pshapes: Vec<Vec<usize>> = params.iter().map(|t| t.shape.clone()).collect();
    let shapes = infer(g, &pshapes, &x.shape, upto)?;
    let n = g.nodes.len();
    let mut values: Vec<Option<Tensor>> = vec![None; n];
    let mut argmax: Vec<Option<Vec<u32>>> = vec![None; n];
    values[0] = Some(x);
    for id in 1..=upto {
        let node = &g.nodes[id];
        let inp = |k: usize| values[node.inputs[k]].as_ref().expect("topological order");
        let y = match &node.op {
            Op::Input => inp(0).clone(),
            Op::Conv { weight, bias, stride, pad, dilation, groups } => {
                let (x, w) = (inp(0), &params[*weight]);
                let geom = conv_geom(pad, *stride, *dilation, *groups, &x.shape, &w.shape);
                be.conv2d(x, w, bias.map(|b| &params[b]), &geom)
            }
            Op::BatchNorm { weight, bias, mean, var, eps } => {
                let (s, t) = bn_scale_shift(params, *weight, *bias, *mean, *var, *eps);
                be.affine(inp(0), &s, &t)
            }
            Op::Affine { scale, shift } => be.affine(inp(0), &params[*scale].data, &params[*shift].data),
            Op::Linear { weight, bias } => be.linear(inp(0), &params[*weight], bias.map(|b| &params[b])),
            Op::Act(a) => be.act(inp(0), *a),
            Op::MaxPool(p) => {
                let (y, am) = be.max_pool2d(inp(0), p);
                argmax[id] = Some(am);
                y
            }
            Op::AvgPool(p) => be.avg_pool2d(inp(0), p),
            Op::AdaptiveAvgPool(o) => be.adaptive_avg_pool2d(inp(0), *o),
            Op::Add => {
                let mut y = inp(0).clone();
                y.add_assign(inp(1));
                y
            }
            Op::Concat => concat(&node.inputs.iter().map(|&i| values[i].as_ref().unwrap()).collect::<Vec<_>>()),
            Op::ChannelScale => be.channel_scale(inp(0), inp(1)),
            Op::Flatten => {
                let x = inp(0);
                Tensor { shape: shapes[id].clone(), data: x.data.clone() }
            }
            Op::Lrn(l) => be.lrn(inp(0), l),
        };
        debug_assert_eq!(y.shape, shapes[id], "layer {}", node.name);
        values[id] = Some(y);
    }
    Ok(Activations { values, argmax, shapes, upto })
}

fn concat(xs: &[&Tensor]) -> Tensor {
    let (n, _, h, w) = xs[0].nchw();
    let c: usize = xs.iter().map(|x| x.shape[1]).sum();
    let mut data = Vec::with_capacity(n * c * h * w);
    for b in 0..n {
        for x in xs {
            data.extend_from_slice(x.item(b));
        }
    }
    Tensor { shape: vec![n, c, h, w], data }
}

/// Split the gradient of a concat back into its inputs' channel ranges.
fn split(gy: &Tensor, channels: &[usize]) -> Vec<Tensor> {
    let (n, _, h, w) = gy.nchw();
    let hw = h * w;
    let mut out: Vec<Tensor> = channels.iter().map(|&c| Tensor::zeros(&[n, c, h, w])).collect();
    for b in 0..n {
        let src = gy.item(b);
        let mut off = 0;
        for (t, &c) in out.iter_mut().zip(channels) {
            t.item_mut(b).copy_from_slice(&src[off..off + c * hw]);
            off += c * hw;
        }
    }
    out
}

/// Backpropagate from `seeds` (gradient of the objective w.r.t. those nodes' outputs) and return
/// the gradient w.r.t. each node in `want` (zeros where the objective does not depend on it).
pub fn backward(
    g: &Graph,
    params: &[Tensor],
    be: &dyn Backend,
    acts: &Activations,
    seeds: Vec<(NodeId, Tensor)>,
    want: &[NodeId],
) -> Result<Vec<Tensor>> {
    let n = g.nodes.len();
    let mut grads: Vec<Option<Tensor>> = vec![None; n];
    let mut top = 0;
    for (id, t) in seeds {
        if id > acts.upto || t.shape != acts.shapes[id] {
            return Err(Error::shape(
                format!("gradient seed for `{}`", g.nodes[id].name),
                acts.shapes.get(id),
                &t.shape,
            ));
        }
        top = top.max(id);
        match &mut grads[id] {
            Some(acc) => acc.add_assign(&t),
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
        // keep the gradient if someone asked for it
        if want.contains(&id) {
            grads[id] = Some(gy.clone());
        }
        let x = |k: usize| acts.values[node.inputs[k]].as_ref().expect("forward kept it");
        let xs = |k: usize| &acts.shapes[node.inputs[k]];
        let gin: Vec<Tensor> = match &node.op {
            Op::Input => vec![],
            Op::Conv { weight, stride, pad, dilation, groups, .. } => {
                let w = &params[*weight];
                let geom = conv_geom(pad, *stride, *dilation, *groups, xs(0), &w.shape);
                vec![be.conv2d_backward_data(&gy, w, xs(0), &geom)]
            }
            Op::BatchNorm { weight, bias, mean, var, eps } => {
                let (s, _) = bn_scale_shift(params, *weight, *bias, *mean, *var, *eps);
                vec![be.affine_backward(&gy, &s)]
            }
            Op::Affine { scale, .. } => vec![be.affine_backward(&gy, &params[*scale].data)],
            Op::Linear { weight, .. } => vec![be.linear_backward(x(0), &params[*weight], &gy).0],
            Op::Act(a) => vec![be.act_backward(x(0), &gy, *a)],
            Op::MaxPool(_) => vec![be.max_pool2d_backward(&gy, acts.argmax[id].as_ref().unwrap(), xs(0))],
            Op::AvgPool(p) => vec![be.avg_pool2d_backward(&gy, xs(0), p)],
            Op::AdaptiveAvgPool(_) => vec![be.adaptive_avg_pool2d_backward(&gy, xs(0))],
            Op::Add => vec![gy.clone(), gy],
            Op::Concat => split(&gy, &node.inputs.iter().map(|&i| acts.shapes[i][1]).collect::<Vec<_>>()),
            Op::ChannelScale => {
                let (gx, gs) = be.channel_scale_backward(x(0), x(1), &gy);
                vec![gx, gs]
            }
            Op::Flatten => vec![Tensor { shape: xs(0).clone(), data: gy.data }],
            Op::Lrn(l) => vec![be.lrn_backward(x(0), &gy, l)],
        };
        for (&src, gx) in node.inputs.iter().zip(gin) {
            match &mut grads[src] {
                Some(acc) => acc.add_assign(&gx),
                slot => *slot = Some(gx),
            }
        }
    }
    Ok(want
        .iter()
        .map(|&id| grads[id].take().unwrap_or_else(|| Tensor::zeros(&acts.shapes[id])))
        .collect())
}
