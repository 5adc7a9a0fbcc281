//! Targets: what a map explains, and the gradient seeds that express it.

use super::ops::indicator;
use crate::backend::{Backend, Binary, Reduce};
use crate::engine::{Activations, Engine};
use crate::error::{Error, Result};
use crate::model::Layer;
use crate::tensor::Tensor;

/// What a map explains: the score whose gradient the methods take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// the pre-softmax score of a class (a unit of the network's output)
    Class(usize),
    /// the mean over positions of one channel of a layer (lucid's `channel` objective)
    Channel {
        /// the layer
        layer: Layer,
        /// the channel's index
        channel: usize,
    },
    /// one activation: a channel at (y, x) of a layer (y = x = 0 for a layer without positions)
    Neuron {
        /// the layer
        layer: Layer,
        /// the channel's index
        channel: usize,
        /// the row
        y: usize,
        /// the column
        x: usize,
    },
}

impl Target {
    /// The layer whose output holds the score (`out` for a class).
    pub fn layer(&self, out: Layer) -> Layer {
        match *self {
            Target::Class(_) => out,
            Target::Channel { layer, .. } | Target::Neuron { layer, .. } => layer,
        }
    }

    /// The class, for a class target.
    pub fn class(&self) -> Option<usize> {
        if let Target::Class(c) = self {
            Some(*c)
        } else {
            None
        }
    }
}

/// The layers the forward pass must keep for these targets.
pub(crate) fn target_layers(targets: Option<&[Target]>, out: Layer) -> Vec<Layer> {
    let mut v: Vec<Layer> = targets.unwrap_or(&[]).iter().map(|t| t.layer(out)).filter(|&l| l != out).collect();
    v.sort_by_key(|l| l.node());
    v.dedup();
    v
}

/// The targets of a batch: as given, or each item's top class, still on the backend until
/// [`Targets::resolve`] brings it back — after the work that does not need it, so the host does
/// not wait in the middle of a job.
pub struct Targets<B: Backend> {
    given: Option<Vec<Target>>,
    /// each item's top class (`[n, 1]`), when no targets were given
    top: Option<B::T>,
}

impl<B: Backend> Targets<B> {
    /// Targets known on the host.
    pub fn given(targets: Vec<Target>) -> Self {
        Targets { given: Some(targets), top: None }
    }

    /// Every item's target as a value (the top classes read back from the backend).
    pub fn resolve(&self, eng: &Engine<B>) -> Result<Vec<Target>> {
        match (&self.given, &self.top) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(top)) => Ok(eng.download(top)?.data.iter().map(|&c| Target::Class(c as usize)).collect()),
            (None, None) => unreachable!("top classes are computed when no targets are given"),
        }
    }
}

/// A forward pass with its targets turned into gradient seeds.
pub(crate) struct Targeted<B: Backend> {
    pub acts: Activations<B>,
    /// d(each item's target score) / d(layer output), at every layer that holds a target
    pub seeds: Vec<(Layer, B::T)>,
    pub targets: Targets<B>,
}

/// Forward `x` through the whole network, keeping `keep` and the target layers, and build the
/// seeds of `targets` (one per item; `None`: each item's top class, found on the backend).
pub(crate) fn forward<B: Backend>(eng: &Engine<B>, x: &B::T, targets: Option<&[Target]>, keep: &[Layer]) -> Result<Targeted<B>> {
    let be = &eng.be;
    let model = eng.model();
    let out = model.output();
    let mut keep = keep.to_vec();
    keep.extend(target_layers(targets, out));
    let acts = eng.forward(x.clone(), out, &keep)?;
    let n = acts.shape(model.input())[0];
    let out_shape = acts.shape(out).to_vec();
    let ncls: usize = out_shape[1..].iter().product();
    let Some(targets) = targets else {
        let top = be.reduce(acts.get(out).expect("kept"), Reduce::ArgMax, &[1])?;
        let seed = indicator(be, &top, 1, ncls)?;
        return Ok(Targeted { acts, seeds: vec![(out, seed)], targets: Targets { top: Some(top), given: None } });
    };
    if targets.len() != n {
        return Err(Error::InvalidArgument(format!("{} targets given for a batch of {n}", targets.len())));
    }
    // per layer, the per-item (channel, y, x) of its targets; −1 where an item targets elsewhere
    let mut layers: Vec<Layer> = targets.iter().map(|t| t.layer(out)).collect();
    layers.sort_by_key(|l| l.node());
    layers.dedup();
    let mut seeds = vec![];
    for layer in layers {
        model.check(layer)?;
        let shape = acts.shape(layer).to_vec();
        let name = model.name(layer);
        let (c, h, w) = match shape.len() {
            4 => (shape[1], shape[2], shape[3]),
            2 => (shape[1], 1, 1),
            _ => return Err(Error::shape(format!("target layer `{name}`"), "[n, c, h, w] or [n, k]", &shape)),
        };
        let mut idx = [vec![-1f32; n], vec![-1f32; n], vec![-1f32; n]];
        let mut mean_over_positions = false;
        for (i, t) in targets.iter().enumerate().filter(|(_, t)| t.layer(out) == layer) {
            let (ch, pos) = match *t {
                Target::Class(k) => (k, None),
                Target::Channel { channel, .. } => (channel, None),
                Target::Neuron { channel, y, x, .. } => (channel, Some((y, x))),
            };
            if ch >= c {
                let what = if layer == out { format!("class {ch} is out of range: the model has {ncls} classes") } else { format!("channel {ch} of layer `{name}` is out of range (it has {c})") };
                return Err(Error::InvalidArgument(what));
            }
            idx[0][i] = ch as f32;
            match pos {
                Some((y, x)) if y < h && x < w => {
                    idx[1][i] = y as f32;
                    idx[2][i] = x as f32;
                }
                Some((y, x)) => return Err(Error::InvalidArgument(format!("position ({y}, {x}) is outside layer `{name}` ({h}x{w})"))),
                None => mean_over_positions |= matches!(t, Target::Channel { .. }),
            }
        }
        let rank = shape.len();
        let up = |v: &Vec<f32>| -> Result<B::T> {
            let mut s = vec![1; rank];
            s[0] = n;
            eng.constant(Tensor::new(s, v.clone())?)
        };
        let mut seed = indicator(be, &up(&idx[0])?, 1, c)?;
        if rank == 4 {
            let has_neurons = idx[1].iter().any(|&v| v >= 0.0);
            // a channel target: 1/(h·w) at every position; a neuron: 1 at its position
            let spatial = if has_neurons {
                let yx = be.binary(&indicator(be, &up(&idx[1])?, 2, h)?, &indicator(be, &up(&idx[2])?, 3, w)?, Binary::Mul)?;
                if mean_over_positions {
                    // items with channel targets (y = x = −1) get the mean instead
                    let is_channel: Vec<f32> = idx[1].iter().zip(&idx[0]).map(|(&y, &c)| if y < 0.0 && c >= 0.0 { 1.0 / (h * w) as f32 } else { 0.0 }).collect();
                    be.binary(&yx, &up(&is_channel)?, Binary::Add)?
                } else {
                    yx
                }
            } else {
                be.full(&[1, 1, h, w], 1.0 / (h * w) as f32)?
            };
            seed = be.binary(&seed, &spatial, Binary::Mul)?;
        }
        seeds.push((layer, seed));
    }
    Ok(Targeted { acts, seeds, targets: Targets::given(targets.to_vec()) })
}

/// Each item's target score in a forward pass with its seeds: Σ over seeded layers of
/// Σ(value ⊙ seed), `[n, 1]` (the score whose gradient the seeds start).
pub(crate) fn score<B: Backend>(eng: &Engine<B>, acts: &Activations<B>, seeds: &[(Layer, B::T)]) -> Result<B::T> {
    let be = &eng.be;
    let mut total: Option<B::T> = None;
    for (layer, seed) in seeds {
        let v = acts.get(*layer).expect("seeded layers are kept");
        let s = super::ops::per_item(be, &be.binary(v, seed, Binary::Mul)?, None, Reduce::Sum)?;
        let n = be.shape(&s)[0];
        let s = be.reshape(s, &[n, 1])?;
        total = Some(match total {
            None => s,
            Some(t) => be.binary(&t, &s, Binary::Add)?,
        });
    }
    Ok(total.expect("a forward pass with targets has seeds"))
}
