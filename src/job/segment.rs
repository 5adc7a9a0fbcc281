//! `deepviz segment`: weakly supervised segmentation over files ([`crate::viz::segment`]): each
//! image's attribution map, upsampled to the network's input as the pictures are (|map| for a
//! signed method), seeds a GrabCut of the preprocessed crop (the picture the network saw,
//! de-normalised for `.npy` inputs).

use image::RgbImage;
use rayon::prelude::*;
use serde_json::{json, Value};

use super::{png_bytes, target_pairs, target_suffix, upload_pairs, Inputs, Progress, TargetSpec};
use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::imageio;
use crate::output::OutputSet;
use crate::tensor::Tensor;
use crate::viz::segment::{largest_component, mask_in_box, mask_picture, overlay, seed_maps, GrabCut, Segmentation};
use crate::viz::{attribution, MethodOptions, Target};

/// Segmentation seeded by an attribution method's maps, over files.
#[derive(Clone, Debug)]
pub struct SegmentJob {
    /// a method of [`crate::viz::METHODS`] (Simonyan et al. use `saliency`)
    pub method: String,
    /// the method's options (`--layer`, `--samples`, …)
    pub options: MethodOptions,
    /// which targets each image's maps explain
    pub targets: TargetSpec,
    /// the seeds' quantiles and the cuts' settings
    pub grabcut: GrabCut,
    /// also write each mask as a float32 `.npy` of 0 and 1, `[h, w]`
    pub raw: bool,
    /// also write the mask and overlay at each image's own resolution (nearest, in its crop box)
    pub full_size: bool,
    /// keep only the mask's largest 8-connected foreground component (as Simonyan et al. do)
    pub largest_component: bool,
    /// images per forward / backward pass
    pub batch_size: usize,
}

/// The files of one segmentation, encoded (in parallel) before they join the output set.
struct Encoded {
    seg: Segmentation,
    files: Vec<(String, Vec<u8>)>,
}

impl SegmentJob {
    /// Run on `eng` over `inputs`, writing per map `{stem}_segment_mask.png`,
    /// `{stem}_segment_overlay.png` (with `raw` `{stem}_segment_mask.npy`, with `full_size`
    /// `{stem}_segment_mask_full.png` and `_overlay_full.png`) into `out`; one JSON record each.
    pub fn run<B: Backend>(&self, eng: &Engine<B>, inputs: &Inputs, out: &mut OutputSet, progress: &mut dyn FnMut(Progress)) -> Result<Vec<Value>> {
        // bad settings are refused before any input is read
        self.grabcut.check()?;
        let method = attribution(eng, &self.method, &self.options)?;
        let info = method.info();
        let model = eng.model();
        let pre = model.preprocess;
        let be = &eng.be;
        let mut records = vec![];
        progress(Progress::Start { total: inputs.files.len(), what: format!("segment ({})", info.name) });
        let batches = inputs.batches(&pre, self.batch_size);
        let batches = if self.full_size { batches.keeping_originals() } else { batches };
        for batch in batches {
            let batch = batch?;
            let [_, _, h, w] = batch.x.shape[..] else { unreachable!("batches are [n, 3, h, w]") };
            let per_item: Vec<Option<Vec<Target>>> = batch.items.iter().map(|it| self.targets.for_item(model, it)).collect::<Result<_>>()?;
            let pairs = target_pairs(&per_item);
            for chunk in pairs.chunks(self.batch_size.max(1)) {
                let x = upload_pairs(eng, &batch, chunk)?;
                let (maps, targets) = method.attribute_on_device(&x, chunk.iter().map(|p| p.1).collect::<Option<Vec<_>>>().as_deref())?;
                let ms = be.shape(&maps).to_vec();
                let norm = seed_maps(be, &maps, info.signed, [h, w])?;
                let targets = targets.resolve(eng)?;
                let encoded: Vec<Encoded> = chunk
                    .par_iter()
                    .enumerate()
                    .map(|(k, &(i, _))| {
                        let it = &batch.items[i];
                        let mut seg = self.grabcut.segment_map(&it.picture, norm.item(k)).map_err(|e| Error::InvalidArgument(format!("{}: {e}", it.source.display())))?;
                        if self.largest_component {
                            seg.mask = largest_component(&seg.mask, h, w)?;
                        }
                        let several = per_item[i].as_ref().is_some_and(|t| t.len() > 1);
                        let stem = if several { format!("{}{}", it.stem, target_suffix(eng, &targets[k])) } else { it.stem.clone() };
                        let files = self.encode(&stem, &seg, &it.picture, it.original.as_ref().zip(it.crop.as_ref()))?;
                        Ok(Encoded { seg, files })
                    })
                    .collect::<Result<_>>()?;
                for ((&(i, _), target), e) in chunk.iter().zip(&targets).zip(encoded) {
                    let it = &batch.items[i];
                    let files = e.files.iter().map(|(name, bytes)| out.add(name, bytes)).collect::<Result<Vec<_>>>()?;
                    let mut rec = json!({
                        "image": it.source.display().to_string(),
                        "method": info.name,
                        "layer": method.layer_name(),
                        "map_shape": [ms[2], ms[3]],
                        "mask_shape": [h, w],
                        "fg_quantile": self.grabcut.fg_quantile,
                        "bg_quantile": self.grabcut.bg_quantile,
                        "foreground_fraction": e.seg.foreground_fraction(),
                        "seeds": {"foreground": e.seg.foreground_seeds, "background": e.seg.background_seeds},
                        "iterations": e.seg.iterations,
                        "converged": e.seg.converged,
                        "largest_component": self.largest_component,
                        "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                    });
                    if let Some(c) = &it.crop {
                        rec["crop"] = json!(c);
                    }
                    match *target {
                        Target::Class(c) => {
                            rec["class"] = json!(c);
                            rec["class_name"] = json!(model.class_name(c));
                        }
                        _ => rec["target"] = json!(super::target_label(eng, target)),
                    }
                    records.push(rec);
                }
            }
            progress(Progress::Advance(batch.items.len()));
        }
        progress(Progress::Finish);
        Ok(records)
    }

    /// The named files of one segmentation.
    fn encode(&self, stem: &str, seg: &Segmentation, picture: &RgbImage, original: Option<(&RgbImage, &imageio::CropBox)>) -> Result<Vec<(String, Vec<u8>)>> {
        let (h, w) = (seg.height, seg.width);
        let mut files = vec![
            (format!("{stem}_segment_mask.png"), png_bytes(&mask_picture(&seg.mask, h, w))?),
            (format!("{stem}_segment_overlay.png"), png_bytes(&overlay(picture, &seg.mask)?)?),
        ];
        if self.raw {
            let t = Tensor::new(vec![h, w], seg.mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect())?;
            files.push((format!("{stem}_segment_mask.npy"), imageio::npy::npy_bytes(&t)));
        }
        if let (true, Some((orig, crop))) = (self.full_size, original) {
            let full = mask_in_box(&seg.mask, h, w, crop);
            let (fw, fh) = (orig.width() as usize, orig.height() as usize);
            files.push((format!("{stem}_segment_mask_full.png"), png_bytes(&mask_picture(&full, fh, fw))?));
            files.push((format!("{stem}_segment_overlay_full.png"), png_bytes(&overlay(orig, &full)?)?));
        }
        Ok(files)
    }
}
