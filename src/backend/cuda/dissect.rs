//! Launches for `kernels/dissect.cu`: Network Dissection's counts on the device
//! ([`DeviceIouCounts`], the CUDA engine's [`IouCounts`]). Per batch the host uploads the label
//! planes (u32), each image's descriptor, the bilinear taps of each label resolution (the
//! host's own numbers, [`bilinear_taps`]), the whole-image labels and the annotation flags; the
//! maps stay where the forward left them, and the u64 counts stay on the device until
//! [`IouCounts::counts`].

use std::collections::HashMap;

use super::{launch, len, ptr, DTensor, Gpu};
use crate::backend::dissect::{IouCounts, MaskLabels};
use crate::backend::Backend;
use crate::device::LaunchConfig;
use crate::error::{Error, Result};
use crate::imageio::colormap::bilinear_taps;

/// The kernels this file launches, as `(op, variant)` of [`crate::device::kernel_name`].
pub const KERNELS: &[(&str, &str)] = &[("dissect", "count")];

/// Threads of a (unit, image) block of `dissect_count_f32` (`DISSECT_THREADS`).
const THREADS: u32 = 256;
/// i64 fields per image in the descriptor (`DISSECT_DESC`): label offset, planes, sh, sw,
/// y-tap row, x-tap row, scalar offset, scalars.
const DESC: usize = 8;
/// Most images of a launch: the grid's y dimension.
const MAX_IMAGES: usize = 65535;

/// The counts of one pass, on the device: `inter` `[units, labels]` and `unit_area`
/// `[units, categories]`, u64 (two f32 words each).
pub struct DeviceIouCounts {
    gpu: Gpu,
    thresholds: DTensor,
    inter: DTensor,
    unit_area: DTensor,
    units: usize,
    labels: usize,
    categories: usize,
}

impl DeviceIouCounts {
    /// Zero counts for `thresholds.len()` units, `labels` label numbers, `categories` categories.
    pub fn new(gpu: &Gpu, thresholds: &[f32], labels: usize, categories: usize) -> Result<DeviceIouCounts> {
        let units = thresholds.len();
        Ok(DeviceIouCounts {
            gpu: gpu.clone(),
            thresholds: gpu.upload_words(thresholds)?,
            inter: gpu.zeros(&[units, 2 * labels.max(1)])?,
            unit_area: gpu.zeros(&[units, 2 * categories.max(1)])?,
            units,
            labels,
            categories,
        })
    }

    fn download(&self, t: &DTensor, cols: usize) -> Result<Vec<Vec<u64>>> {
        let mut v = vec![0u64; self.units * cols.max(1)];
        self.gpu.device().download(t.ptr(), bytemuck::cast_slice_mut(&mut v))?;
        Ok(v.chunks(cols.max(1)).map(|r| r[..cols].to_vec()).collect())
    }
}

impl IouCounts<DTensor> for DeviceIouCounts {
    fn add(&mut self, maps: &DTensor, images: &[MaskLabels<'_>]) -> Result<()> {
        let s = &maps.shape;
        let (n, c, h, w) = match s.len() {
            4 => (s[0], s[1], s[2], s[3]),
            2 => (s[0], s[1], 1, 1),
            _ => return Err(Error::shape("dissect maps", "[n, units, h, w]", s)),
        };
        if c != self.units || n != images.len() || n > MAX_IMAGES {
            return Err(Error::InvalidArgument(format!("dissect counts: maps {s:?} for {} units and {} images (at most {MAX_IMAGES})", self.units, images.len())));
        }
        if n == 0 {
            return Ok(());
        }
        let (mut desc, mut labels, mut scalars, mut annotated) = (Vec::with_capacity(n * DESC), vec![], vec![], vec![]);
        let (mut tap_i, mut tap_w): (Vec<i32>, Vec<f32>) = (vec![], vec![]);
        let mut rows: HashMap<(usize, usize), usize> = HashMap::new(); // (map side, label side) -> first tap row
        let mut taps = |from: usize, to: usize| {
            *rows.entry((from, to)).or_insert_with(|| {
                let at = tap_i.len() / 2;
                for (i0, i1, w0, w1) in bilinear_taps(from, to) {
                    tap_i.extend([i0 as i32, i1 as i32]);
                    tap_w.extend([w0, w1]);
                }
                at
            })
        };
        for im in images {
            let [sh, sw] = im.hw;
            if sh * sw >= i32::MAX as usize || im.planes.iter().any(|p| p.len() != sh * sw) || im.annotated.len() != self.categories {
                return Err(Error::InvalidArgument(format!("dissect counts: labels of {sh}x{sw} with planes of {:?} pixels and {} categories (expected {})", im.planes.iter().map(Vec::len).collect::<Vec<_>>(), im.annotated.len(), self.categories)));
            }
            let (y, x) = (taps(h, sh), taps(w, sw));
            desc.extend([labels.len(), im.planes.len(), sh, sw, y, x, scalars.len(), im.scalars.len()].map(|v| v as i64));
            im.planes.iter().for_each(|p| labels.extend_from_slice(p));
            scalars.extend(im.scalars.iter().map(|&l| l as u32));
            annotated.extend(im.annotated.iter().map(|&a| a as u32));
        }
        let g = &self.gpu;
        // (in buffers of a power of two of words: batches differ in their labels' sizes)
        let (desc, labels, tap_i, tap_w, scalars, annotated) = (g.upload_words_pow2(&desc)?, g.upload_words_pow2(&labels)?, g.upload_words_pow2(&tap_i)?, g.upload_words_pow2(&tap_w)?, g.upload_words_pow2(&scalars)?, g.upload_words_pow2(&annotated)?);
        let cfg = LaunchConfig { grid: [c as u32, n as u32, 1], block: [THREADS, 1, 1], shared_bytes: 0 };
        let args = [ptr(maps.ptr()), ptr(self.thresholds.ptr()), ptr(desc.ptr()), ptr(labels.ptr()), ptr(tap_i.ptr()), ptr(tap_w.ptr()), ptr(scalars.ptr()), ptr(annotated.ptr()), ptr(self.inter.ptr()), ptr(self.unit_area.ptr()), len(n), len(c), len(h), len(w), len(self.labels), len(self.categories)];
        // SAFETY: `dissect_count_f32(const float* maps, const float* thresholds, const long long*
        // desc, const unsigned* labels, const int* tap_i, const float* tap_w, const unsigned*
        // scalars, const unsigned* annotated, unsigned long long* inter, unsigned long long*
        // unit_area, n, units, h, w, n_labels, categories)`; it writes nothing but atomic adds
        // into the zeroed counts, at indices below units·labels and units·categories (labels and
        // scalars at or above n_labels are skipped); every label, tap and scalar index it reads
        // was laid out above for the image's own descriptor, and each tap is inside the map.
        launch(g.device(), "dissect", "count", cfg, &args)
    }

    fn counts(&self) -> Result<(Vec<Vec<u64>>, Vec<Vec<u64>>)> {
        Ok((self.download(&self.inter, self.labels)?, self.download(&self.unit_area, self.categories)?))
    }
}
