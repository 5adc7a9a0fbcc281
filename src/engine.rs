//! An [`Engine`] is a model made ready on one backend: its weights prepared there once (uploaded
//! and repacked for the CUDA engine), and the forward / backward passes run there.

use crate::backend::{Backend, Role};
use crate::error::Result;
use crate::graph::exec::{self, Activations};
use crate::graph::{NodeId, Op, ParamId};
use crate::model::Model;
use crate::tensor::Tensor;

pub struct Engine<'m, B: Backend> {
    pub model: &'m Model,
    pub be: B,
    /// prepared parameters, by `ParamId` (None: not used by any node, e.g. folded batch norms)
    weights: Vec<Option<B::W>>,
    pshapes: Vec<Vec<usize>>,
}

impl<'m, B: Backend> Engine<'m, B> {
    pub fn new(model: &'m Model, be: B) -> Result<Self> {
        let mut roles: Vec<Option<Role>> = vec![None; model.params.len()];
        for n in &model.graph.nodes {
            match &n.op {
                Op::Conv { weight, bias, .. } => {
                    roles[*weight] = Some(Role::ConvWeight);
                    if let Some(b) = bias {
                        roles[*b] = Some(Role::Vector);
                    }
                }
                Op::Linear { weight, bias } => {
                    roles[*weight] = Some(Role::LinearWeight);
                    if let Some(b) = bias {
                        roles[*b] = Some(Role::Vector);
                    }
                }
                Op::Affine { scale, shift } => {
                    roles[*scale] = Some(Role::Vector);
                    roles[*shift] = Some(Role::Vector);
                }
                _ => {}
            }
        }
        let weights = model
            .params
            .iter()
            .zip(&roles)
            .map(|(p, r)| r.map(|r| be.weight(p, r)).transpose())
            .collect::<Result<_>>()?;
        let pshapes = model.params.iter().map(|p| p.shape.clone()).collect();
        Ok(Engine { model, be, weights, pshapes })
    }

    /// Run the model on `x` up to node `upto` (`self.model.output()` for the whole network).
    pub fn forward(&self, x: B::T, upto: NodeId) -> Result<Activations<B>> {
        exec::forward(&self.model.graph, &self.weights, &self.pshapes, &self.be, x, upto)
    }

    /// Gradients at `want` of the objective whose gradients at some nodes are `seeds`.
    pub fn backward(&self, acts: &Activations<B>, seeds: Vec<(NodeId, B::T)>, want: &[NodeId]) -> Result<Vec<B::T>> {
        exec::backward(&self.model.graph, &self.weights, &self.pshapes, &self.be, acts, seeds, want)
    }

    pub fn upload(&self, x: &Tensor) -> Result<B::T> {
        self.be.upload(x)
    }

    pub fn download(&self, x: &B::T) -> Result<Tensor> {
        self.be.download(x)
    }

    /// A prepared parameter (it must be one a node uses).
    pub fn weight(&self, p: ParamId) -> &B::W {
        self.weights[p].as_ref().expect("parameter used by a node")
    }
}
