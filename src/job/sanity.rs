//! `deepviz sanity`: the cascading model-parameter randomisation test ([`crate::viz::sanity`])
//! over files: per map a grid (the input, the original map, the map after each step, labelled
//! by the layer re-initialised last), a plot of the rank correlations and SSIM against the
//! original map per step, and `sanity_{method}.json` with every number and the means per step.

use std::sync::Arc;

use image::RgbImage;
use serde_json::{json, Value};

use super::{png_bytes, target_pairs, target_suffix, upload_pairs, Inputs, Progress, TargetSpec};
use crate::backend::{Backend, Unary};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::graph::{Op, ParamId};
use crate::imageio::colorize;
use crate::output::OutputSet;
use crate::tensor::Tensor;
use crate::viz::plot::{tile_grid, LinePlot, Series, PALETTE};
use crate::viz::render;
use crate::viz::sanity::{cascade, normalized_abs, reinitialised, spearman, ssim, Granularity};
use crate::viz::{attribution, method_info, MethodOptions, Target};

/// The cascading randomisation of one method over files.
#[derive(Clone, Debug)]
pub struct SanityJob {
    /// a method of [`crate::viz::METHODS`]
    pub method: String,
    /// the method's options, as for its own subcommand
    pub options: MethodOptions,
    /// class targets; by default each image's top class on the original model, kept for every
    /// randomised one
    pub targets: TargetSpec,
    /// what one re-initialisation step covers: a layer or a block
    pub granularity: Granularity,
    /// stop the cascade after the step of this name (a layer's module path, or a block's with
    /// [`Granularity::Block`]); `None`: down to the input
    pub upto: Option<String>,
    /// the re-initialisation's seed
    pub seed: u64,
    /// images per forward / backward pass
    pub batch_size: usize,
    /// side of each map's tile in the grid, in pixels
    pub tile: u32,
}

/// The similarities of one map to the original after every step (step 0: the original).
#[derive(Default)]
struct Similarity {
    spearman_abs: Vec<Option<f64>>,
    spearman_raw: Vec<Option<f64>>,
    ssim: Vec<Option<f64>>,
}

/// Each step's mean of the values present.
fn means(rows: &[&Vec<Option<f64>>]) -> Vec<Option<f64>> {
    let len = rows.first().map_or(0, |r| r.len());
    (0..len)
        .map(|k| {
            let v: Vec<f64> = rows.iter().filter_map(|r| r[k]).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        })
        .collect()
}

/// The plot of the three similarities against the steps (x ticks: the layer last randomised;
/// a gap where a map is constant and its rank correlation undefined).
fn similarity_plot(title: &str, names: &[String], s: [&[Option<f64>]; 3]) -> RgbImage {
    let labels = ["Spearman |map|", "Spearman map", "SSIM"];
    let series = s
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (v, label))| Series { label: label.into(), color: PALETTE[i], dashed: i == 1, points: v.iter().enumerate().map(|(k, y)| (k as f64, y.unwrap_or(f64::NAN))).collect() })
        .collect();
    let n = names.len();
    LinePlot {
        title: title.into(),
        x_label: "layers re-initialised, from the logits down to".into(),
        y_label: "similarity to the original map".into(),
        x_range: (0.0, (n - 1).max(1) as f64),
        y_range: (-1.0, 1.0),
        x_ticks: Some(names.iter().enumerate().map(|(k, s)| (k as f64, crate::viz::plot::fit(s, 24))).collect()),
        x_ticks_vertical: true,
        series,
    }
    .render((120 + 12 * n as u32).max(560), 420)
}

impl SanityJob {
    /// Run on `eng` (taken, as each step changes its weights; given back as it came, with the
    /// original weights) over `inputs`, writing per map `{stem}_{method}_sanity.png` and
    /// `{stem}_{method}_sanity_plot.png`, and `sanity_{method}.json` and
    /// `sanity_{method}_plot.png` (the means) into `out`; returns the JSON.
    pub fn run<B: Backend>(&self, eng: Engine<B>, inputs: &Inputs, out: &mut OutputSet, progress: &mut dyn FnMut(Progress)) -> Result<(Value, Engine<B>)> {
        let info = method_info(&self.method).ok_or_else(|| Error::InvalidArgument(format!("unknown method `{}`; known: {}", self.method, crate::viz::METHODS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "))))?;
        // the options, the layer: checked before any input is read
        let layer = attribution(&eng, &self.method, &self.options)?.layer_name();
        if self.tile < 16 {
            return Err(Error::InvalidArgument(format!("tiles of {} pixels are too small to read (at least 16)", self.tile)));
        }
        let model = eng.model_arc().clone();
        let pre = model.preprocess;
        let mut steps = cascade(&model, self.granularity);
        if steps.is_empty() {
            return Err(Error::InvalidArgument("the model has no convolution or linear layer to re-initialise".into()));
        }
        if let Some(upto) = &self.upto {
            let Some(last) = steps.iter().position(|s| &s.name == upto) else {
                let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
                return Err(Error::InvalidArgument(format!("--upto {upto}: not a step of the cascade; its steps, from the output: {}", names.join(", "))));
            };
            steps.truncate(last + 1);
        }
        let randomised: Vec<Vec<(ParamId, Arc<Tensor>)>> = steps.iter().map(|s| reinitialised(&model, s, self.seed)).collect::<Result<_>>()?;
        let originals: Vec<(ParamId, Arc<Tensor>)> = steps
            .iter()
            .flat_map(|s| &s.nodes)
            .flat_map(|&id| match model.graph.nodes[id].op {
                Op::Conv { weight, bias, .. } | Op::Linear { weight, bias } => std::iter::once(weight).chain(bias).collect::<Vec<_>>(),
                _ => vec![],
            })
            .map(|p| (p, model.params[p].clone()))
            .collect();
        let mut names = vec!["original".to_string()];
        names.extend(steps.iter().map(|s| s.name.clone()));
        let clip = (info.clip_percentile < 100.0).then_some(info.clip_percentile / 100.0);
        let mut eng = eng;
        let mut records = vec![];
        let mut all = vec![];
        progress(Progress::Start { total: inputs.files.len() * (steps.len() + 1), what: format!("sanity {}", info.name) });
        for batch in inputs.batches(&pre, self.batch_size) {
            let batch = batch?;
            let per_item: Vec<Option<Vec<Target>>> = batch.items.iter().map(|it| self.targets.for_item(&model, it)).collect::<Result<_>>()?;
            if per_item.iter().flatten().flatten().any(|t| t.class().is_none()) {
                return Err(Error::InvalidArgument("sanity compares maps of classes: give classes (--class, --class-file), not units or neurons".into()));
            }
            let [_, _, h, w] = batch.x.shape[..] else { unreachable!("batches are [n, 3, h, w]") };
            let pairs = target_pairs(&per_item);
            for chunk in pairs.chunks(self.batch_size.max(1)) {
                let m = chunk.len();
                let x = upload_pairs(&eng, &batch, chunk)?;
                // the maps upsampled to the input (host, raw) and their pictures
                let maps = |eng: &Engine<B>, targets: Option<&[Target]>| -> Result<(Tensor, Vec<RgbImage>, Vec<Target>)> {
                    let method = attribution(eng, &self.method, &self.options)?;
                    let (map, t) = method.attribute_on_device(&x, targets)?;
                    let be = &eng.be;
                    let up = if be.shape(&map)[2..] == [h, w] { map.clone() } else { be.resize(&map, h, w)? };
                    let shown = if info.signed { be.unary(&map, Unary::Abs)? } else { map };
                    let norm = render::normalized(be, &shown, [h, w], clip)?;
                    let pictures = (0..m).map(|k| colorize(norm.item(k), h, w, info.colormap)).collect();
                    Ok((eng.download(&up)?, pictures, t.resolve(eng)?))
                };
                let given: Option<Vec<Target>> = chunk.iter().map(|p| p.1).collect();
                let (orig, orig_pics, targets) = maps(&eng, given.as_deref())?;
                let orig_norm: Vec<Vec<f32>> = (0..m).map(|k| normalized_abs(orig.item(k))).collect();
                let mut sims: Vec<Similarity> = (0..m).map(|_| Similarity::default()).collect();
                let mut tiles: Vec<Vec<(RgbImage, String)>> = chunk.iter().zip(orig_pics).map(|(&(i, _), p)| vec![(batch.items[i].picture.clone(), "input".into()), (p, "original".into())]).collect();
                let compare = |k: usize, map: &[f32], sims: &mut Vec<Similarity>| -> Result<()> {
                    let abs: Vec<f32> = map.iter().map(|v| v.abs()).collect();
                    let oabs: Vec<f32> = orig.item(k).iter().map(|v| v.abs()).collect();
                    sims[k].spearman_abs.push(spearman(&oabs, &abs));
                    sims[k].spearman_raw.push(spearman(orig.item(k), map));
                    sims[k].ssim.push(Some(ssim(&orig_norm[k], &normalized_abs(map), h, w)?));
                    Ok(())
                };
                for k in 0..m {
                    compare(k, orig.item(k), &mut sims)?;
                }
                progress(Progress::Advance(m));
                for (s, change) in steps.iter().zip(&randomised) {
                    eng = eng.with_params(change)?;
                    let (maps_s, pics, _) = maps(&eng, Some(&targets))?;
                    for (k, pic) in pics.into_iter().enumerate() {
                        compare(k, maps_s.item(k), &mut sims)?;
                        tiles[k].push((pic, s.name.clone()));
                    }
                    progress(Progress::Advance(m));
                }
                // back to the original weights for the next chunk
                eng = eng.with_params(&originals)?;
                for (k, ((&(i, _), target), sim)) in chunk.iter().zip(&targets).zip(sims).enumerate() {
                    let it = &batch.items[i];
                    let class = target.class().expect("class targets");
                    let several = per_item[i].as_ref().is_some_and(|t| t.len() > 1);
                    let stem = if several { format!("{}{}", it.stem, target_suffix(&eng, target)) } else { it.stem.clone() };
                    let grid = tile_grid(&tiles[k], self.tile, 8);
                    let title = crate::viz::plot::fit(&format!("{}: {}, class {class}: cascading randomisation", it.stem, info.name), ((120 + 12 * names.len()).max(560) / 8 - 2).min(90));
                    let plot = similarity_plot(&title, &names, [&sim.spearman_abs, &sim.spearman_raw, &sim.ssim]);
                    let files = [
                        out.add(&format!("{stem}_{}_sanity.png", info.name), &png_bytes(&grid)?)?,
                        out.add(&format!("{stem}_{}_sanity_plot.png", info.name), &png_bytes(&plot)?)?,
                    ];
                    records.push(json!({
                        "image": it.source.display().to_string(),
                        "class": class,
                        "class_name": model.class_name(class),
                        "spearman_abs": sim.spearman_abs,
                        "spearman_raw": sim.spearman_raw,
                        "ssim": sim.ssim,
                        "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                    }));
                    all.push(sim);
                }
            }
        }
        progress(Progress::Finish);
        let mean = [means(&all.iter().map(|s| &s.spearman_abs).collect::<Vec<_>>()), means(&all.iter().map(|s| &s.spearman_raw).collect::<Vec<_>>()), means(&all.iter().map(|s| &s.ssim).collect::<Vec<_>>())];
        let plot = similarity_plot(&format!("{}: mean over {} maps", info.name, all.len()), &names, [&mean[0], &mean[1], &mean[2]]);
        out.add(&format!("sanity_{}_plot.png", info.name), &png_bytes(&plot)?)?;
        let result = json!({
            "method": info.name,
            "layer": layer,
            "granularity": match self.granularity { Granularity::Layer => "layer", Granularity::Block => "block" },
            "seed": self.seed,
            "reinitialisation": "weight and bias ~ N(0, sigma^2), sigma the original tensor's standard deviation; batch-norm statistics and affine parameters kept",
            "similarity": "on maps upsampled to the input: Spearman rank correlation of |map| and of map (average ranks), SSIM of |map| min-max normalised (Gaussian window 1.5, data range 1)",
            "steps": names,
            "mean": {"spearman_abs": mean[0], "spearman_raw": mean[1], "ssim": mean[2]},
            "maps": records,
        });
        out.add(&format!("sanity_{}.json", info.name), &serde_json::to_vec_pretty(&result).expect("JSON serialises"))?;
        Ok((result, eng))
    }
}
