//! Forward and backward execution of a model's graph on any [`Backend`].
//!
//! The forward pass runs the nodes in topological order. A convolution whose batch norm folds
//! into it ([`super::Folded`]) runs once, with the folded weights, giving the batch norm's output
//! — unless the caller keeps that convolution, which then runs with its own weights and the
//! batch norm after it. Values nobody needs are dropped as soon as their last consumer ran: what
//! stays is the input, `upto`, the kept layers and what the backward pass of a later op reads
//! (an activation's input, a max pool's argmax, both factors of a channel scale, an LRN's input).
//!
//! Fusion (on unless [`Engine::set_fusion`] turns it off): a convolution whose output only its
//! batch norm, a residual add and a ReLU / ReLU6 read, one after another, runs them in its
//! epilogue ([`Backend::conv2d_fused`], a [`Chain`]), and the nodes inside the chain are never
//! written; the activation's backward then reads the chain's output instead of its input (for
//! these two the mask is the same function of either). In the backward pass, a convolution
//! whose input is a ReLU / ReLU6 read by it alone passes its gradient through the activation's
//! mask in the same backward-data ([`Backend::conv2d_backward_data_masked`]) under
//! [`Rule::Gradient`]. Kept layers are never fused away, and the arithmetic is the unfused
//! passes' in the same order, so fused and unfused results agree to the bit (tests/fusion.rs);
//! `deepviz trace` counts what it saves (resnet50 saliency at batch 1: 257 → 160 launches).
//!
//! The backward pass starts from gradient seeds at any kept nodes (the gradient of a scalar
//! objective w.r.t. those nodes' outputs) and returns the gradient at any kept nodes — the input
//! image, or a named layer. Only activation gradients are propagated; weights are constants. How
//! a gradient passes an activation function is the [`Rule`].

use super::{Engine, Prep};
use crate::backend::{Act, Backend};
use crate::error::{Error, Result};
use crate::graph::shapes::{conv_geom, infer};
use crate::graph::{NodeId, Op};
use crate::model::Layer;

/// How gradients pass the network's rectifiers (ReLU, ReLU6) in the backward pass; every other
/// op passes the true gradient under every rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rule {
    /// The true gradient.
    #[default]
    Gradient,
    /// Guided backpropagation (Springenberg et al. 2015, "Striving for Simplicity"): a rectifier
    /// passes a gradient only where both its input and the gradient are positive. As captum's
    /// `GuidedBackprop`, which overrides `nn.ReLU`; here ReLU6 is treated the same way (the
    /// gradient of its upper clip is kept).
    GuidedBackprop,
    /// The deconvnet (Zeiler & Fergus 2014): a rectifier passes the positive part of the
    /// gradient, whatever its forward input was (captum's `Deconvolution`).
    Deconvnet,
}

/// Everything a forward pass kept, up to and including node `upto`.
pub struct Activations<B: Backend> {
    values: Vec<Option<B::T>>,
    argmax: Vec<Option<B::Idx>>,
    /// output shapes of every node up to `upto`
    pub shapes: Vec<Vec<usize>>,
    upto: NodeId,
    /// convolutions that ran folded with the batch norm after them
    folded: Vec<bool>,
    /// nodes the caller asked to keep (and the input and `upto`)
    kept: Vec<bool>,
    /// activations that ran in their convolution's epilogue: their backward reads their own
    /// output (their input was never written)
    act_out: Vec<bool>,
    /// how many nodes up to `upto` read each node's output
    readers: Vec<u32>,
    /// whether the backward pass may fuse ([`Engine::set_fusion`])
    fuse: bool,
}

impl<B: Backend> Activations<B> {
    /// The output of `layer`, if the forward pass kept it.
    pub fn get(&self, layer: Layer) -> Option<&B::T> {
        self.values.get(layer.node()).and_then(|v| v.as_ref()).filter(|_| self.kept[layer.node()])
    }

    /// The output shape of `layer` (empty past the end of the pass).
    pub fn shape(&self, layer: Layer) -> &[usize] {
        self.shapes.get(layer.node()).map_or(&[], |s| s.as_slice())
    }
}

/// A convolution that runs with the rest of its block in its epilogue
/// ([`Backend::conv2d_fused`]): conv [→ its folded batch norm] [→ + residual] [→ ReLU / ReLU6],
/// evaluated when the pass reaches the chain's last node, whose value it gives. The nodes before
/// the last are never written.
#[derive(Clone, Copy, Debug)]
struct Chain {
    conv: NodeId,
    residual: Option<NodeId>,
    act: Option<Act>,
}

/// The forward pass's fusion plan: the chains by their last node, and the nodes inside a chain
/// (not written). A node is fused away only when nobody can see it: not kept, not `upto`, read
/// by exactly one node (the next in its chain). Only ReLU and ReLU6 join a chain: their backward
/// can read the chain's output instead of the input that is never written ([`Act::is_mask`]).
fn fusion_plan(g: &crate::graph::Graph, shapes: &[Vec<usize>], upto: NodeId, kept: &[bool], folded: &[bool], readers: &[u32]) -> (Vec<Option<Chain>>, Vec<bool>) {
    let n = g.nodes.len();
    let mut chains = vec![None; n];
    let mut inside = vec![false; n];
    let reader = |id: NodeId| (id + 1..=upto).find(|&u| g.nodes[u].inputs.contains(&id));
    let hidden = |id: NodeId| id != upto && !kept[id] && readers[id] == 1;
    for c in 1..=upto {
        if !matches!(g.nodes[c].op, Op::Conv { .. }) || kept[c] {
            continue;
        }
        // the conv's value: its own, or its batch norm's when folded
        let mut last = c;
        let mut members = vec![c];
        if folded[c] {
            let Some(bn) = reader(c) else { continue };
            last = bn;
            members.push(bn);
        }
        let mut chain = Chain { conv: c, residual: None, act: None };
        let free = |u: NodeId, inside: &[bool], chains: &[Option<Chain>]| !inside[u] && chains[u].is_none();
        if hidden(last) {
            if let Some(u) = reader(last).filter(|&u| free(u, &inside, &chains)) {
                let node = &g.nodes[u];
                if matches!(node.op, Op::Add) && node.inputs.len() == 2 && node.inputs[0] != node.inputs[1] {
                    let other = if node.inputs[0] == last { node.inputs[1] } else { node.inputs[0] };
                    if shapes[other] == shapes[last] && !inside[other] {
                        chain.residual = Some(other);
                        last = u;
                        members.push(u);
                    }
                }
            }
        }
        if hidden(last) {
            if let Some(u) = reader(last).filter(|&u| free(u, &inside, &chains)) {
                if let Op::Act(a) = g.nodes[u].op {
                    if a.is_mask() {
                        chain.act = Some(a);
                        last = u;
                        members.push(u);
                    }
                }
            }
        }
        if chain.residual.is_none() && chain.act.is_none() {
            continue;
        }
        members.pop();
        members.iter().for_each(|&m| inside[m] = true);
        chains[last] = Some(chain);
    }
    (chains, inside)
}

/// The node whose backward pass reads each node's output (so it stays after the forward pass).
fn read_by_backward(op: &Op) -> bool {
    matches!(op, Op::Act(_) | Op::ChannelScale | Op::Lrn(_))
}

/// The engine's bound on the bytes a pass over values of these shapes holds at once: every
/// value, and room for the backward pass's four largest gradients.
pub(crate) fn pass_bytes(shapes: &[Vec<usize>]) -> u128 {
    let sizes = shapes.iter().map(|s| s.iter().product::<usize>() as u128 * 4);
    sizes.clone().sum::<u128>() + 4 * sizes.max().unwrap_or(0)
}

/// The largest batch (0 if none) whose pass stays within `bytes` by [`pass_bytes`], for a pass
/// over `shapes` (their first axis the batch).
pub(crate) fn batch_that_fits(shapes: &[Vec<usize>], bytes: usize) -> usize {
    let n = shapes.first().and_then(|s| s.first()).copied().unwrap_or(1).max(1);
    let per_item = pass_bytes(shapes).div_ceil(n as u128).max(1);
    (bytes as u128 / per_item).min(usize::MAX as u128) as usize
}

/// `e`, when the device ran out of memory during a pass over `shapes`, with the batch that
/// would fit in what the device has left (its free memory and the pool's cached buffers).
pub(crate) fn with_fit<B: Backend>(be: &B, e: Error, shapes: impl FnOnce() -> Result<Vec<Vec<usize>>>) -> Error {
    match e {
        Error::OutOfMemory { device, asked, free, total, fits: None } => {
            let fits = match (be.memory_available(), shapes()) {
                (Some(avail), Ok(s)) => {
                    let n = s.first().and_then(|s| s.first()).copied().unwrap_or(1);
                    Some(batch_that_fits(&s, avail).min(n.saturating_sub(1)))
                }
                _ => None,
            };
            Error::OutOfMemory { device, asked, free, total, fits }
        }
        e => e,
    }
}

pub(crate) fn forward<B: Backend>(eng: &Engine<B>, x: B::T, upto: NodeId, keep: &[NodeId]) -> Result<Activations<B>> {
    let g = &eng.model().graph;
    let be = &eng.be;
    let pshapes: Vec<Vec<usize>> = eng.model().params.iter().map(|p| p.shape.clone()).collect();
    let shapes = infer(g, &pshapes, be.shape(&x), upto)?;
    if let Some(budget) = be.memory_budget() {
        let need = pass_bytes(&shapes);
        if need > budget as u128 {
            let fits = batch_that_fits(&shapes, budget);
            return Err(Error::InvalidArgument(format!(
                "a {:?} batch needs about {} MiB for the {} engine's activations, more than the {} MiB it may use (DEEPVIZ_MEMORY_LIMIT, or 80% of the memory available): {}",
                be.shape(&x),
                need >> 20,
                be.name(),
                budget >> 20,
                match fits {
                    0 => "use a smaller input".to_string(),
                    k => format!("a batch of at most {k} fits (--batch-size {k})"),
                }
            )));
        }
    }
    let n = g.nodes.len();
    let mut kept = vec![false; n];
    for &k in keep.iter().chain([&0, &upto]) {
        if k > upto {
            return Err(Error::InvalidArgument(format!("layer `{}` comes after `{}`, where the forward pass stops", g.nodes[k].name, g.nodes[upto].name)));
        }
        kept[k] = true;
    }
    // fold where the convolution is not kept and its batch norm is reached
    let mut folded = vec![false; n];
    for (id, p) in eng.prep.iter().enumerate().take(upto + 1) {
        if let Prep::Conv { fold: Some(f), .. } = p {
            folded[id] = !kept[id] && f.bn <= upto;
        }
    }
    let mut readers = vec![0u32; n];
    for id in 1..=upto {
        g.nodes[id].inputs.iter().for_each(|&i| readers[i] += 1);
    }
    let (chains, inside) = if eng.fuse { fusion_plan(g, &shapes, upto, &kept, &folded, &readers) } else { (vec![None; n], vec![false; n]) };
    // what each node reads when it runs: a chain reads its conv's input and its residual, a
    // batch norm whose conv is folded the conv's input; nodes inside a chain read nothing
    let runs_with = |id: NodeId| -> Vec<NodeId> {
        match chains[id] {
            Some(ch) => std::iter::once(g.nodes[ch.conv].inputs[0]).chain(ch.residual).collect(),
            None if inside[id] => vec![],
            None => reads(g, id, &folded),
        }
    };
    let mut act_out = vec![false; n];
    // what each value is still needed for: its last forward consumer, and the backward pass
    let mut last_use = vec![0usize; n];
    let mut stays = kept.clone();
    for id in 1..=upto {
        let node = &g.nodes[id];
        for i in runs_with(id) {
            last_use[i] = i.max(last_use[i]).max(id);
        }
        if read_by_backward(&node.op) {
            if matches!(chains[id], Some(Chain { act: Some(_), .. })) {
                // a fused activation's backward reads its output
                act_out[id] = true;
                stays[id] = true;
            } else {
                node.inputs.iter().for_each(|&i| stays[i] = true);
            }
        }
    }
    let mut values: Vec<Option<B::T>> = vec![None; n];
    let mut argmax: Vec<Option<B::Idx>> = (0..n).map(|_| None).collect();
    values[0] = Some(x);
    for id in 1..=upto {
        let node = &g.nodes[id];
        if folded[id] || inside[id] {
            continue; // runs with its batch norm, or in its chain
        }
        let y = if let Some(ch) = chains[id] {
            eval_chain(eng, ch, &values, &shapes, &folded)?
        } else {
            let (y, am) = eval_node(eng, id, &values, &shapes, &folded)?;
            argmax[id] = am;
            y
        };
        debug_assert_eq!(be.shape(&y), shapes[id].as_slice(), "layer {}", node.name);
        values[id] = Some(y);
        // drop the inputs this node was the last to read
        for i in runs_with(id) {
            if !stays[i] && last_use[i] <= id {
                values[i] = None;
            }
        }
    }
    Ok(Activations { values, argmax, shapes, upto, folded, kept, act_out, readers, fuse: eng.fuse })
}

/// Run a fused chain: its convolution (with the folded weights when its batch norm is folded
/// in), residual add and activation in one [`Backend::conv2d_fused`].
fn eval_chain<B: Backend>(eng: &Engine<B>, ch: Chain, values: &[Option<B::T>], shapes: &[Vec<usize>], folded: &[bool]) -> Result<B::T> {
    let g = &eng.model().graph;
    let cn = &g.nodes[ch.conv];
    let Op::Conv { weight, stride, pad, dilation, groups, .. } = &cn.op else { unreachable!("chains start at a conv") };
    let geom = conv_geom(pad, *stride, *dilation, *groups, &shapes[cn.inputs[0]], &eng.model().params[*weight].shape);
    let (w, b) = match (folded[ch.conv], eng.prep(ch.conv)) {
        (true, Prep::Conv { fold: Some(f), .. }) => (&f.w, Some(&f.b)),
        _ => eng.conv_weights(ch.conv)?,
    };
    let alive = |i: NodeId| values[i].as_ref().expect("a chain's inputs are alive until it runs");
    eng.be.conv2d_fused(alive(cn.inputs[0]), w, b, &geom, ch.residual.map(alive), ch.act)
}

/// The inputs each node reads (a batch norm whose convolution is folded reads the conv's input).
fn reads(g: &crate::graph::Graph, id: NodeId, folded: &[bool]) -> Vec<NodeId> {
    match &g.nodes[id].op {
        Op::BatchNorm { .. } if folded[g.nodes[id].inputs[0]] => g.nodes[g.nodes[id].inputs[0]].inputs.clone(),
        _ => g.nodes[id].inputs.clone(),
    }
}

/// Which nodes `upto` depends on through the nodes after `from` (those, and what they read).
fn needed_after(g: &crate::graph::Graph, from: NodeId, upto: NodeId) -> Vec<bool> {
    let mut needed = vec![false; g.nodes.len()];
    needed[upto] = true;
    for id in (from + 1..=upto).rev() {
        if needed[id] {
            g.nodes[id].inputs.iter().for_each(|&i| needed[i] = true);
        }
    }
    needed
}

/// The nodes up to `from` whose outputs the nodes after `from` (up to `upto`) read: what a
/// forward pass must keep for [`forward_from`].
pub(crate) fn boundary(g: &crate::graph::Graph, from: NodeId, upto: NodeId) -> Vec<NodeId> {
    if from >= upto {
        return vec![];
    }
    let needed = needed_after(g, from, upto);
    (0..=from).filter(|&i| needed[i]).collect()
}

/// The output of `upto` when the output of `from` is replaced by `value`, whose batch holds
/// each item of `acts`'s batch `repeat` times in a row: only the nodes after `from` that `upto`
/// depends on run; the values before `from` they read come from `acts` (which must have kept
/// [`boundary`]), repeated likewise.
pub(crate) fn forward_from<B: Backend>(eng: &Engine<B>, acts: &Activations<B>, from: NodeId, value: B::T, upto: NodeId, repeat: usize) -> Result<B::T> {
    let g = &eng.model().graph;
    let be = &eng.be;
    if from >= upto || upto > acts.upto {
        return Err(Error::InvalidArgument(format!("cannot rerun from `{}` to `{}`", g.nodes[from].name, g.nodes[upto].name)));
    }
    let n = acts.shapes[0][0];
    let mut shapes = acts.shapes.clone();
    shapes.iter_mut().for_each(|s| s[0] *= repeat);
    if be.shape(&value) != shapes[from].as_slice() {
        return Err(Error::shape(format!("the replacement of `{}`", g.nodes[from].name), format!("{:?}", shapes[from]), be.shape(&value)));
    }
    let needed = needed_after(g, from, upto);
    // fold what the forward pass would fold (nothing here is observed)
    let mut folded = vec![false; g.nodes.len()];
    for id in from + 1..=upto {
        if let Prep::Conv { fold: Some(f), .. } = eng.prep(id) {
            folded[id] = f.bn <= upto && needed[f.bn];
        }
    }
    let mut values: Vec<Option<B::T>> = vec![None; g.nodes.len()];
    values[from] = Some(value);
    for id in from + 1..=upto {
        if !needed[id] || folded[id] {
            continue;
        }
        for i in reads(g, id, &folded) {
            if values[i].is_none() && i < from {
                // only what the caller kept: what else happens to be alive depends on fusion
                let v = acts.values[i].as_ref().filter(|_| acts.kept[i]).ok_or_else(|| Error::InvalidArgument(format!("layer `{}` was not kept by the forward pass", g.nodes[i].name)))?;
                // [n, …] → [n, repeat, m] → [n·repeat, …]
                let m: usize = acts.shapes[i][1..].iter().product();
                let spread = be.binary(&be.reshape(v.clone(), &[n, 1, m])?, &be.full(&[1, repeat, 1], 1.0)?, crate::backend::Binary::Mul)?;
                values[i] = Some(be.reshape(spread, &shapes[i])?);
            }
        }
        let (y, _) = eval_node(eng, id, &values, &shapes, &folded)?;
        values[id] = Some(y);
    }
    Ok(values[upto].take().expect("computed"))
}

/// Run node `id` on its inputs' values (a batch norm whose convolution is folded: the pair).
fn eval_node<B: Backend>(eng: &Engine<B>, id: NodeId, values: &[Option<B::T>], shapes: &[Vec<usize>], folded: &[bool]) -> Result<(B::T, Option<B::Idx>)> {
let g = &eng.model().graph;
let be = &eng.be;
let node = &g.nodes[id];
let pshapes = |i: usize| &eng.model().params[i].shape;
let inp = |k: usize| values[node.inputs[k]].as_ref().expect("inputs are alive until their last consumer");
let mut argmax = None;
let y = match (&node.op, eng.prep(id)) {
        (Op::Input, _) => inp(0).clone(),
        (Op::Conv { weight, stride, pad, dilation, groups, .. }, _) => {
            let geom = conv_geom(pad, *stride, *dilation, *groups, &shapes[node.inputs[0]], pshapes(*weight));
            let (w, b) = eng.conv_weights(id)?;
            be.conv2d(inp(0), w, b, &geom)?
        }
        (Op::BatchNorm { .. }, _) if folded[node.inputs[0]] => {
            let c = node.inputs[0];
            let (cn, Prep::Conv { fold: Some(f), .. }) = (&g.nodes[c], eng.prep(c)) else { unreachable!("folded convs have folded weights") };
            let Op::Conv { weight, stride, pad, dilation, groups, .. } = &cn.op else { unreachable!("folded nodes are convs") };
            let geom = conv_geom(pad, *stride, *dilation, *groups, &shapes[cn.inputs[0]], pshapes(*weight));
            be.conv2d(values[cn.inputs[0]].as_ref().expect("alive"), &f.w, Some(&f.b), &geom)?
        }
        (Op::BatchNorm { .. } | Op::Affine { .. }, Prep::Affine { scale, shift }) => be.affine(inp(0), scale, shift)?,
        (Op::Linear { .. }, Prep::Linear { w, b }) => be.linear(inp(0), w, b.as_ref())?,
        (Op::Act(a), _) => be.act(inp(0), *a)?,
        (Op::MaxPool(p), _) => {
            let (y, am) = be.max_pool2d(inp(0), p)?;
            argmax = Some(am);
            y
        }
        (Op::AvgPool(p), _) => be.avg_pool2d(inp(0), p)?,
        (Op::AdaptiveAvgPool(o), _) => be.adaptive_avg_pool2d(inp(0), *o)?,
        (Op::Add, _) => be.add(inp(0), inp(1))?,
        (Op::Concat, _) => {
            let xs: Vec<&B::T> = node.inputs.iter().map(|&i| values[i].as_ref().expect("alive")).collect();
            be.concat(&xs)?
        }
        (Op::ChannelScale, _) => be.channel_scale(inp(0), inp(1))?,
        (Op::Flatten, _) => be.reshape(inp(0).clone(), &shapes[id])?,
        (Op::Lrn(l), _) => be.lrn(inp(0), l)?,
        (op, _) => unreachable!("the engine prepares every node it runs ({op:?})"),
    };
    Ok((y, argmax))
}

/// The gradient through activation `a` (forward input `x`) under `rule`.
fn act_backward<B: Backend>(be: &B, x: &B::T, gy: &B::T, a: Act, rule: Rule) -> Result<B::T> {
    match (rule, a) {
        (Rule::Gradient, _) | (_, Act::Silu | Act::Sigmoid | Act::HardSwish) => be.act_backward(x, gy, a),
        (Rule::GuidedBackprop, _) => be.act_backward(x, &be.act(gy, Act::Relu)?, a),
        (Rule::Deconvnet, _) => be.act(gy, Act::Relu),
    }
}

pub(crate) fn backward<B: Backend>(
    eng: &Engine<B>,
    acts: &Activations<B>,
    seeds: Vec<(NodeId, B::T)>,
    want: &[NodeId],
    rule: Rule,
) -> Result<Vec<B::T>> {
    let g = &eng.model().graph;
    let be = &eng.be;
    let pshapes = |i: usize| &eng.model().params[i].shape;
    let n = g.nodes.len();
    let not_kept = |id: NodeId, what: &str| {
        Error::InvalidArgument(format!("{what} layer `{}` was not kept by the forward pass (list it in `keep`)", g.nodes[id].name))
    };
    for &w in want {
        if w > acts.upto || !acts.kept[w] {
            return Err(not_kept(w, "the gradient's"));
        }
    }
    let mut grads: Vec<Option<B::T>> = vec![None; n];
    let mut top = 0;
    for (id, t) in seeds {
        if id > acts.upto || !acts.kept[id] {
            return Err(not_kept(id, "the seed's"));
        }
        if be.shape(&t) != acts.shapes[id].as_slice() {
            return Err(Error::shape(format!("gradient seed for `{}`", g.nodes[id].name), &acts.shapes[id], be.shape(&t)));
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
        let value = |i: NodeId| acts.values[i].as_ref().expect("the forward pass keeps what the backward reads");
        let x = |k: usize| value(node.inputs[k]);
        let xs = |k: usize| &acts.shapes[node.inputs[k]];
        // Backward-data of conv `c` with weights `w`, into the conv's input — or, when that input
        // is a ReLU / ReLU6 read by this conv alone, through the activation's mask in the same
        // pass ([`Backend::conv2d_backward_data_masked`]) and into the activation's input, which
        // the activation then never sees (it has no gradient of its own to pass on).
        let conv_back = |c: NodeId, w: &B::W, grads: &[Option<B::T>]| -> Result<(Vec<NodeId>, Vec<B::T>)> {
            let cn = &g.nodes[c];
            let Op::Conv { weight, stride, pad, dilation, groups, .. } = &cn.op else { unreachable!("a conv") };
            let src = cn.inputs[0];
            let xshape = &acts.shapes[src];
            let geom = conv_geom(pad, *stride, *dilation, *groups, xshape, pshapes(*weight));
            let through = match &g.nodes[src].op {
                Op::Act(a) if acts.fuse && rule == Rule::Gradient && a.is_mask() && acts.readers[src] == 1 && !want.contains(&src) && grads[src].is_none() => Some(*a),
                _ => None,
            };
            Ok(match through {
                Some(a) => {
                    let mask = if acts.act_out[src] { value(src) } else { value(g.nodes[src].inputs[0]) };
                    (vec![g.nodes[src].inputs[0]], vec![be.conv2d_backward_data_masked(&gy, w, xshape, &geom, mask, a)?])
                }
                None => (vec![src], vec![be.conv2d_backward_data(&gy, w, xshape, &geom)?]),
            })
        };
        // a folded conv + batch norm pair passes its gradient straight to the conv's input
        let (targets, gin): (Vec<NodeId>, Vec<B::T>) = match (&node.op, eng.prep(id)) {
            (Op::BatchNorm { .. }, _) if acts.folded[node.inputs[0]] => {
                let c = node.inputs[0];
                let Prep::Conv { fold: Some(f), .. } = eng.prep(c) else { unreachable!("folded convs have folded weights") };
                conv_back(c, &f.w, &grads)?
            }
            (Op::Conv { .. }, _) => conv_back(id, eng.conv_weights(id)?.0, &grads)?,
            (op, prep) => {
                let gin = match (op, prep) {
                    (Op::Input, _) => vec![],
                    (Op::BatchNorm { .. } | Op::Affine { .. }, Prep::Affine { scale, .. }) => vec![be.affine_backward(&gy, scale)?],
                    (Op::Linear { .. }, Prep::Linear { w, .. }) => vec![be.linear_backward_data(&gy, w)?],
                    (Op::Act(a), _) => vec![act_backward(be, if acts.act_out[id] { value(id) } else { x(0) }, &gy, *a, rule)?],
                    (Op::MaxPool(_), _) => vec![be.max_pool2d_backward(&gy, acts.argmax[id].as_ref().expect("kept with its pool"), xs(0))?],
                    (Op::AvgPool(p), _) => vec![be.avg_pool2d_backward(&gy, xs(0), p)?],
                    (Op::AdaptiveAvgPool(_), _) => vec![be.adaptive_avg_pool2d_backward(&gy, xs(0))?],
                    (Op::Add, _) => vec![gy.clone(), gy],
                    (Op::Concat, _) => be.split(&gy, &node.inputs.iter().map(|&i| acts.shapes[i][1]).collect::<Vec<_>>())?,
                    (Op::ChannelScale, _) => {
                        let (gx, gs) = be.channel_scale_backward(x(0), x(1), &gy)?;
                        vec![gx, gs]
                    }
                    (Op::Flatten, _) => vec![be.reshape(gy, xs(0))?],
                    (Op::Lrn(l), _) => vec![be.lrn_backward(x(0), &gy, l)?],
                    (op, _) => unreachable!("the engine prepares every node it runs ({op:?})"),
                };
                (node.inputs.clone(), gin)
            }
        };
        for (&src, gx) in targets.iter().zip(gin) {
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
