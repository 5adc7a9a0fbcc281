//! Receptive fields computed from the graph: which input pixels can change a unit's value.
//!
//! Per axis a node's units form a lattice: unit `i` sees input pixels `[lo + i·jump, lo +
//! i·jump + size)` (before clipping to the image). A convolution or pool with kernel `k`,
//! dilation `d`, stride `s` and leading padding `p` maps the lattice of its input to
//! `lo' = lo − p·jump`, `size' = size + (d·(k−1))·jump`, `jump' = jump·s` (the textbook
//! recurrence, e.g. Araujo et al. 2019, "Computing receptive fields of convolutional neural
//! networks"). Element-wise ops keep the lattice; a residual add, a concat or a channel scale
//! takes the union of its inputs' fields (the inputs share one stride, else the graph is refused);
//! global pooling, a linear layer or anything after one sees the whole image. TensorFlow "SAME"
//! padding is resolved against the actual sizes, so the field depends on the input size only
//! through it. The field is theoretical: the effective one (Luo et al. 2016) is smaller.

use crate::error::{Error, Result};
use crate::graph::shapes::{conv_geom, infer};
use crate::graph::{Graph, Op};

/// One axis of a receptive field: unit `i` sees `[lo + i·jump, lo + i·jump + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RfAxis {
    /// where unit 0's field starts (negative: in the padding)
    pub lo: i64,
    /// the field's extent in pixels
    pub size: u64,
    /// the step between neighbouring units' fields, in pixels
    pub jump: u64,
}

impl RfAxis {
    /// The pixels unit `i` sees, clipped to `[0, n)`: (first, one past the last).
    pub fn span(&self, i: usize, n: usize) -> (usize, usize) {
        let a = self.lo + (i as i64) * self.jump as i64;
        let b = a + self.size as i64;
        (a.clamp(0, n as i64) as usize, b.clamp(0, n as i64) as usize)
    }
}

/// A node's receptive field on the input: per axis (height, width), or the whole image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rf {
    /// the fields of a lattice of units (a feature map), per axis: height, width
    Lattice([RfAxis; 2]),
    /// every unit sees the whole image (after global pooling or a linear layer)
    Whole,
}

impl Rf {
    /// The input box unit (y, x) sees in an `h × w` input: `[x0, y0, x1, y1)` (x1, y1 exclusive).
    pub fn region(&self, y: usize, x: usize, h: usize, w: usize) -> [usize; 4] {
        match self {
            Rf::Whole => [0, 0, w, h],
            Rf::Lattice([ay, ax]) => {
                let ((y0, y1), (x0, x1)) = (ay.span(y, h), ax.span(x, w));
                [x0, y0, x1, y1]
            }
        }
    }
}

fn union(g: &Graph, id: usize, a: Rf, b: Rf) -> Result<Rf> {
    Ok(match (a, b) {
        (Rf::Lattice(a), Rf::Lattice(b)) => {
            let mut out = a;
            for d in 0..2 {
                if a[d].jump != b[d].jump {
                    return Err(Error::Unsupported(format!(
                        "layer `{}` joins inputs of strides {} and {}: no receptive-field lattice",
                        g.nodes[id].name, a[d].jump, b[d].jump
                    )));
                }
                let lo = a[d].lo.min(b[d].lo);
                let hi = (a[d].lo + a[d].size as i64).max(b[d].lo + b[d].size as i64);
                out[d] = RfAxis { lo, size: (hi - lo) as u64, jump: a[d].jump };
            }
            Rf::Lattice(out)
        }
        _ => Rf::Whole,
    })
}

fn window(rf: Rf, k: [usize; 2], s: [usize; 2], pad_lead: [usize; 2], dil: [usize; 2]) -> Rf {
    match rf {
        Rf::Whole => Rf::Whole,
        Rf::Lattice(a) => Rf::Lattice(std::array::from_fn(|d| RfAxis {
            lo: a[d].lo - (pad_lead[d] as i64) * a[d].jump as i64,
            size: a[d].size + (dil[d] * (k[d] - 1)) as u64 * a[d].jump,
            jump: a[d].jump * s[d] as u64,
        })),
    }
}

/// The receptive field of every node up to `upto`, for an input of `input_hw` pixels.
pub fn receptive_fields(g: &Graph, param_shapes: &[Vec<usize>], input_hw: [usize; 2], upto: usize) -> Result<Vec<Rf>> {
    let shapes = infer(g, param_shapes, &[1, 3, input_hw[0], input_hw[1]], upto)?;
    let pixel = RfAxis { lo: 0, size: 1, jump: 1 };
    let mut rf = vec![Rf::Whole; g.nodes.len()];
    rf[0] = Rf::Lattice([pixel, pixel]);
    for id in 1..=upto {
        let n = &g.nodes[id];
        let x = rf[n.inputs[0]];
        rf[id] = match &n.op {
            Op::Input => x,
            Op::Conv { weight, stride, pad, dilation, groups, .. } => {
                let w = &param_shapes[*weight];
                let geom = conv_geom(pad, *stride, *dilation, *groups, &shapes[n.inputs[0]], w);
                window(x, [w[2], w[3]], *stride, [geom.pad[0], geom.pad[2]], *dilation)
            }
            Op::MaxPool(p) | Op::AvgPool(p) => window(x, p.kernel, p.stride, p.pad, [1, 1]),
            Op::AdaptiveAvgPool(out) => {
                // PyTorch's bins: start floor(i·in/out), end ceil((i+1)·in/out); a lattice only
                // when the input divides evenly (then kernel = stride = in / out)
                let s = &shapes[n.inputs[0]];
                let (ih, iw) = (s[2], s[3]);
                if ih % out[0] == 0 && iw % out[1] == 0 && out[0] > 1 && out[1] > 1 {
                    let k = [ih / out[0], iw / out[1]];
                    window(x, k, k, [0, 0], [1, 1])
                } else {
                    Rf::Whole
                }
            }
            Op::BatchNorm { .. } | Op::Affine { .. } | Op::Act(_) | Op::Lrn(_) => x,
            Op::Add | Op::Concat | Op::ChannelScale => n.inputs[1..].iter().try_fold(x, |acc, &i| union(g, id, acc, rf[i]))?,
            Op::Linear { .. } | Op::Flatten => Rf::Whole,
        };
    }
    Ok(rf)
}
