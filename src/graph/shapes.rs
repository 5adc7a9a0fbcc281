//! Shape inference and validation. Runs over the whole graph before any op executes, so a wrong
//! input shape or an inconsistent weights file becomes one clear error naming the layer, never a
//! panic inside an op.

use super::{Graph, NodeId, Op, Pad};
use crate::backend::{same_padding, Conv2dGeom};
use crate::error::{Error, Result};

/// Resolve a convolution node's geometry (TF "SAME" padding against the actual input size).
pub fn conv_geom(
    pad: &Pad,
    stride: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
    x: &[usize],
    w: &[usize],
) -> Conv2dGeom {
    let pad = match *pad {
        Pad::Explicit(p) => p,
        Pad::Same => {
            let (t, b) = same_padding(x[2], w[2], stride[0], dilation[0]);
            let (l, r) = same_padding(x[3], w[3], stride[1], dilation[1]);
            [t, b, l, r]
        }
    };
    Conv2dGeom { stride, pad, dilation, groups }
}

fn err(g: &Graph, id: NodeId, expected: impl std::fmt::Debug, found: impl std::fmt::Debug) -> Error {
    Error::shape(format!("layer `{}`", g.nodes[id].name), expected, found)
}

/// Output shape of every node for an input of `input` (NCHW), given the shapes of the
/// parameters. Nodes after `upto` are not visited (their entry is empty).
pub fn infer(g: &Graph, param_shapes: &[Vec<usize>], input: &[usize], upto: NodeId) -> Result<Vec<Vec<usize>>> {
    if input.len() != 4 || input.contains(&0) {
        return Err(Error::shape("input", "a non-empty [n, c, h, w] batch", input));
    }
    let mut shapes: Vec<Vec<usize>> = vec![Vec::new(); g.nodes.len()];
    shapes[0] = input.to_vec();
    for id in 1..=upto {
        shapes[id] = infer_node(g, param_shapes, &shapes, id)?;
    }
    Ok(shapes)
}

/// Output shape of node `id` given the output shapes of the nodes before it (`shapes[..id]`):
/// what [`infer`] runs for each node, and what an importer runs as it adds nodes
/// ([`crate::onnx`]).
pub fn infer_node(g: &Graph, param_shapes: &[Vec<usize>], shapes: &[Vec<usize>], id: NodeId) -> Result<Vec<usize>> {
    let node = &g.nodes[id];
    let ins: Vec<&Vec<usize>> = node.inputs.iter().map(|&i| &shapes[i]).collect();
    let Some(&x) = ins.first() else { return Err(err(g, id, "an input", "none")) };
    let need4 = |s: &Vec<usize>| -> Result<()> {
        if s.len() == 4 {
            Ok(())
        } else {
            Err(err(g, id, "a 4-d [n, c, h, w] input", s))
        }
    };
    let out = match &node.op {
        Op::Input => x.clone(),
        Op::Conv { weight, stride, pad, dilation, groups, .. } => {
            need4(x)?;
            let w = &param_shapes[*weight];
            if x[1] != w[1] * groups {
                return Err(err(g, id, format!("{} input channels", w[1] * groups), format!("{} channels", x[1])));
            }
            let geom = conv_geom(pad, *stride, *dilation, *groups, x, w);
            let (oh, ow) = geom
                .out_hw(x[2], x[3], w[2], w[3])
                .ok_or_else(|| err(g, id, format!("an input of at least {}x{}", w[2], w[3]), &x[2..]))?;
            vec![x[0], w[0], oh, ow]
        }
        Op::BatchNorm { weight, .. } | Op::Affine { scale: weight, .. } => {
            need4(x)?;
            let c = param_shapes[*weight][0];
            if x[1] != c {
                return Err(err(g, id, format!("{c} channels"), format!("{} channels", x[1])));
            }
            x.clone()
        }
        Op::Linear { weight, .. } => {
            let w = &param_shapes[*weight];
            if x.len() != 2 || x[1] != w[1] {
                return Err(err(g, id, format!("[n, {}]", w[1]), x));
            }
            vec![x[0], w[0]]
        }
        Op::Act(_) | Op::Lrn(_) => x.clone(),
        Op::MaxPool(p) | Op::AvgPool(p) => {
            need4(x)?;
            if p.pad[0] * 2 > p.kernel[0] || p.pad[1] * 2 > p.kernel[1] {
                return Err(err(g, id, "padding at most half the kernel", p.pad));
            }
            let (oh, ow) = p
                .out_hw(x[2], x[3])
                .ok_or_else(|| err(g, id, format!("an input of at least {:?}", p.kernel), &x[2..]))?;
            vec![x[0], x[1], oh, ow]
        }
        Op::AdaptiveAvgPool(o) => {
            need4(x)?;
            vec![x[0], x[1], o[0], o[1]]
        }
        Op::Add => {
            if ins[1] != x {
                return Err(err(g, id, x, ins[1]));
            }
            x.clone()
        }
        Op::Concat => {
            need4(x)?;
            let mut c = 0;
            for s in &ins {
                if s.len() != 4 || s[0] != x[0] || s[2..] != x[2..] {
                    return Err(err(g, id, format!("[{}, _, {}, {}]", x[0], x[2], x[3]), s));
                }
                c += s[1];
            }
            vec![x[0], c, x[2], x[3]]
        }
        Op::ChannelScale => {
            need4(x)?;
            let want = vec![x[0], x[1], 1, 1];
            if *ins[1] != want {
                return Err(err(g, id, want, ins[1]));
            }
            x.clone()
        }
        Op::Flatten => vec![x[0], x[1..].iter().product()],
    };
    Ok(out)
}
