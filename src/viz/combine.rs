//! pytorch-grad-cam's two ways of combining class activation maps, around any CAM method:
//!
//! - **several target layers** (`target_layers=[a, b]`): each layer's map is ReLU'd, min–max
//!   scaled per image (`(m − min) / (max − min + 1e-7)`, its `scale_cam_image`) and resized to
//!   the input's size (bilinear, half-pixel centres: cv2's `INTER_LINEAR` when upsampling, and
//!   PyTorch's `align_corners=False`); the maps are averaged over the layers and the mean is
//!   scaled again (`aggregate_multi_layers`).
//! - **`aug_smooth`** (test-time augmentation, as its `forward_augmentation_smoothing` with
//!   ttach): the input not flipped and flipped left–right, each times 0.9, 1 and 1.1 (six
//!   inputs); the map of each, combined over the layers as above, is flipped back, and the six
//!   are averaged (not scaled again).
//!
//! So a combined map is `[n, 1, H, W]` at the input's size with values in [0, 1], where a
//! single-layer map is raw at its layer's resolution.
//!
//! One deviation: pytorch-grad-cam takes the top class of each *augmented* input when no
//! target is given, so the six maps of an image can explain different classes. Here the
//! targets are fixed once on the input as given (each item's top class by default), as
//! SmoothGrad fixes them, so a map explains one class.

use super::{Attribution, MethodInfo, Target, Targets};
use crate::backend::{Backend, Binary, Reduce, Unary};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// The six augmentations of `aug_smooth`: (flipped left–right, factor).
pub const AUGMENTATIONS: [(bool, f32); 6] = [(false, 0.9), (false, 1.0), (false, 1.1), (true, 0.9), (true, 1.0), (true, 1.1)];

/// One CAM method at several layers, with or without `aug_smooth`, combined as
/// pytorch-grad-cam (Jacob Gildenblat's library) does: each layer's map ReLU'd,
/// min–max scaled and resized to the input, averaged and scaled again; `aug_smooth` averages
/// six flipped and scaled inputs' maps (the module documentation has the details and the one
/// deviation).
pub struct Combined<'e, B: Backend> {
    /// the method at each layer, in the order given
    pub layers: Vec<Box<dyn Attribution<B> + 'e>>,
    /// also average over pytorch-grad-cam's six test-time augmentations (flips and scales)
    pub aug_smooth: bool,
}

impl<'e, B: Backend> Combined<'e, B> {
    /// The combination of `layers` (one method, one layer each; at least one).
    pub fn new(layers: Vec<Box<dyn Attribution<B> + 'e>>, aug_smooth: bool) -> Result<Self> {
        let Some(first) = layers.first() else {
            return Err(Error::InvalidArgument("a combined CAM needs at least one layer".into()));
        };
        if let Some(other) = layers.iter().find(|m| m.info().name != first.info().name) {
            return Err(Error::InvalidArgument(format!("a combined CAM takes one method at every layer, not {} and {}", first.info().name, other.info().name)));
        }
        Ok(Combined { layers, aug_smooth })
    }

    /// The layers' maps of `x`, each ReLU'd, scaled and resized to `size`, averaged and scaled
    /// again (pytorch-grad-cam's `forward` without augmentation), with the targets.
    fn over_layers(&self, x: &B::T, targets: Option<&[Target]>, size: (usize, usize)) -> Result<(B::T, Targets<B>)> {
        let be = &self.engine().be;
        let mut sum: Option<B::T> = None;
        let mut resolved = None;
        for m in &self.layers {
            let (map, t) = m.attribute_on_device(x, targets)?;
            let scaled = be.resize(&scale(be, &be.unary(&map, Unary::Relu)?)?, size.0, size.1)?;
            sum = Some(match sum {
                None => scaled,
                Some(s) => be.binary(&s, &scaled, Binary::Add)?,
            });
            resolved.get_or_insert(t);
        }
        // the mean of maps in [0, 1] is ≥ 0: aggregate_multi_layers' ReLU changes nothing
        let mean = be.unary(&sum.expect("at least one layer"), Unary::Affine(1.0 / self.layers.len() as f32, 0.0))?;
        Ok((scale(be, &mean)?, resolved.expect("at least one layer")))
    }
}

/// pytorch-grad-cam's `scale_cam_image` without the resize: per item, (m − min) / (1e-7 + max
/// of that).
fn scale<B: Backend>(be: &B, m: &B::T) -> Result<B::T> {
    let lo = super::ops::per_item(be, m, None, Reduce::Min)?;
    let shifted = be.binary(m, &lo, Binary::Sub)?;
    let hi = be.unary(&super::ops::per_item(be, &shifted, None, Reduce::Max)?, Unary::Affine(1.0, 1e-7))?;
    be.binary(&shifted, &hi, Binary::Div)
}

impl<B: Backend> Attribution<B> for Combined<'_, B> {
    fn info(&self) -> &'static MethodInfo {
        self.layers[0].info()
    }
    fn engine(&self) -> &Engine<B> {
        self.layers[0].engine()
    }
    fn layer_name(&self) -> Option<String> {
        let names: Option<Vec<String>> = self.layers.iter().map(|m| m.layer_name()).collect();
        names.map(|n| n.join(","))
    }
    fn scaled(&self) -> bool {
        true
    }
    fn attribute_on_device(&self, x: &B::T, targets: Option<&[Target]>) -> Result<(B::T, Targets<B>)> {
        let eng = self.engine();
        let be = &eng.be;
        let s = be.shape(x).to_vec();
        if s.len() != 4 {
            return Err(Error::shape("a combined CAM's input", "[n, c, h, w]", &s));
        }
        let size = (s[2], s[3]);
        let (map, found) = self.over_layers(x, targets, size)?;
        if !self.aug_smooth {
            return Ok((map, found));
        }
        // the targets of the input as given, for every augmentation (module docs)
        let fixed = match targets {
            Some(t) => t.to_vec(),
            None => found.resolve(eng)?,
        };
        let mut sum = map;
        for &(flip, factor) in AUGMENTATIONS.iter().filter(|a| **a != (false, 1.0)) {
            let xa = if flip { be.flip(x, false, true)? } else { x.clone() };
            let xa = be.unary(&xa, Unary::Affine(factor, 0.0))?;
            let (m, _) = self.over_layers(&xa, Some(&fixed), size)?;
            let m = if flip { be.flip(&m, false, true)? } else { m };
            sum = be.binary(&sum, &m, Binary::Add)?;
        }
        let mean = be.unary(&sum, Unary::Affine(1.0 / AUGMENTATIONS.len() as f32, 0.0))?;
        Ok((mean, Targets::given(fixed)))
    }
}
