//! Network Dissection's counting pass (`crate::dataset::dissect`) on a backend's own tensors:
//! [`IouCounts`], which the CUDA engine implements (`cuda/dissect.rs`, `kernels/dissect.cu`) so
//! that a batch's maps never leave the device. It is an op of one method, not a generic
//! primitive: upsampling, thresholding and intersecting with every label plane, composed of
//! generic ops, would write each unit's whole upsampled mask (units × label pixels per image)
//! where the fused kernel writes only counts, and the counts are integers a f32 tensor cannot
//! hold. The CPU engine has none ([`crate::backend::Backend::iou_counts`] gives `None`): the
//! maps are on the host already, and the pass counts them there.

use crate::error::Result;

/// One image's labels, as the pass reads them (`crate::dataset::broden::ImageLabels`).
#[derive(Clone, Copy, Debug)]
pub struct MaskLabels<'a> {
    /// the label images' height and width
    pub hw: [usize; 2],
    /// label planes (`h × w` label numbers each, 0 = none)
    pub planes: &'a [Vec<u32>],
    /// whole-image labels
    pub scalars: &'a [usize],
    /// per category, whether the image is annotated in it
    pub annotated: &'a [bool],
}

/// Integer counts of the masks `M_k` (unit k's map upsampled bilinearly to the labels'
/// resolution, above its threshold, exactly as `crate::imageio::colormap::upsample_bilinear_above`
/// finds them) against the labels `L_c`, added over batches where the maps live.
pub trait IouCounts<T>: Send {
    /// Add a batch: `maps` `[n, units, h, w]` and each image's labels (`images.len() == n`):
    /// `|M_k ∩ L_c|` per unit and label, `|M_k|` per unit and category the image is annotated in.
    fn add(&mut self, maps: &T, images: &[MaskLabels<'_>]) -> Result<()>;
    /// The counts so far: `inter[unit][label]`, `unit_area[unit][category]`.
    fn counts(&self) -> Result<(Vec<Vec<u64>>, Vec<Vec<u64>>)>;
}
