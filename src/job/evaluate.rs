//! `deepviz evaluate`: an attribution method judged by RISE's deletion and insertion curves
//! ([`crate::viz::evaluate`]) over files: per map a plot (its overlay beside both curves, the
//! areas in the legend), the curves in the run's JSON and CSV, and the mean areas over the run.

use image::RgbImage;
use serde_json::{json, Value};

use super::{png_bytes, target_pairs, target_suffix, upload_pairs, Inputs, Progress, TargetSpec};
use crate::backend::{Backend, Unary};
use crate::dataset::dissect::csv_field;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::output::OutputSet;
use crate::tensor::Tensor;
use crate::viz::evaluate::{random_maps, Curves, DeletionInsertion};
use crate::viz::plot::{beside, LinePlot, Series, PALETTE};
use crate::viz::render::{self, Style};
use crate::viz::{attribution, Attribution, MethodOptions, Target};

/// The name that stands for the random map (a uniform-noise ranking) in place of a method.
pub const RANDOM: &str = "random";

/// Deletion and insertion curves of a method's maps over files.
#[derive(Clone, Debug)]
pub struct EvaluateJob {
    /// a method of [`crate::viz::METHODS`], or `random` (the baseline of random maps)
    pub method: String,
    /// the method's options, as for its own subcommand
    pub options: MethodOptions,
    /// class targets only (the curves are class probabilities)
    pub targets: TargetSpec,
    /// the deletion / insertion curves' settings
    pub curves: DeletionInsertion,
    /// also draw each image's curves for a random map (the baseline a map should beat)
    pub compare_random: bool,
    /// the random maps' seed (image i of the run uses `seed + i`)
    pub seed: u64,
    /// images per batch for the maps (the curves batch by [`DeletionInsertion::batch_size`])
    pub batch_size: usize,
}

fn curve_json(c: &Curves) -> Value {
    json!({"deletion": c.deletion, "insertion": c.insertion, "deletion_auc": c.deletion_auc, "insertion_auc": c.insertion_auc})
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The plot of one map's curves (and the random map's, dashed), `title` on top.
fn curves_plot(title: &str, class_label: &str, c: &Curves, random: Option<&Curves>) -> RgbImage {
    let pts = |ys: &[f64]| c.fractions.iter().copied().zip(ys.iter().copied()).collect::<Vec<_>>();
    let mut series = vec![
        Series { label: format!("deletion  AUC {:.3}", c.deletion_auc), color: PALETTE[1], dashed: false, points: pts(&c.deletion) },
        Series { label: format!("insertion AUC {:.3}", c.insertion_auc), color: PALETTE[0], dashed: false, points: pts(&c.insertion) },
    ];
    if let Some(r) = random {
        let rp = |ys: &[f64]| r.fractions.iter().copied().zip(ys.iter().copied()).collect::<Vec<_>>();
        series.push(Series { label: format!("random del. AUC {:.3}", r.deletion_auc), color: PALETTE[3], dashed: true, points: rp(&r.deletion) });
        series.push(Series { label: format!("random ins. AUC {:.3}", r.insertion_auc), color: PALETTE[2], dashed: true, points: rp(&r.insertion) });
    }
    LinePlot {
        title: title.to_string(),
        x_label: "fraction of pixels deleted / inserted (top-ranked first)".into(),
        y_label: format!("p({class_label})"),
        x_range: (0.0, 1.0),
        y_range: (0.0, 1.0),
        x_ticks: None,
        x_ticks_vertical: false,
        series,
    }
    .render(560, 300)
}

impl EvaluateJob {
    /// Run on `eng` over `inputs`, writing per map `{stem}_{method}_evaluate.png` and for the run
    /// `evaluate_{method}.json` and `.csv` into `out`; returns the JSON (per map its curves and
    /// areas; the summary: the mean areas).
    pub fn run<B: Backend>(&self, eng: &Engine<B>, inputs: &Inputs, out: &mut OutputSet, progress: &mut dyn FnMut(Progress)) -> Result<Value> {
        let random_only = self.method == RANDOM;
        let method: Option<Box<dyn Attribution<B> + '_>> = if random_only {
            if self.options != MethodOptions::default() {
                return Err(Error::InvalidArgument("the random map takes no method options (--layer, --samples, …)".into()));
            }
            None
        } else {
            Some(attribution(eng, &self.method, &self.options)?)
        };
        let info = method.as_ref().map(|m| m.info());
        let name = info.map_or(RANDOM, |i| i.name);
        let style = Style { colormap: info.map_or(crate::imageio::Colormap::Turbo, |i| i.colormap), clip: info.and_then(|i| (i.clip_percentile < 100.0).then_some(i.clip_percentile / 100.0)), alpha: 0.5 };
        // checked before any input is read
        self.curves.check()?;
        let model = eng.model();
        let pre = model.preprocess;
        let be = &eng.be;
        let mut records = vec![];
        let mut csv = String::from("image,class,fraction,deletion,insertion");
        if self.compare_random {
            csv += ",random_deletion,random_insertion";
        }
        csv += "\n";
        let (mut del, mut ins, mut rdel, mut rins) = (vec![], vec![], vec![], vec![]);
        let mut index = 0u64;
        progress(Progress::Start { total: inputs.files.len(), what: format!("evaluate {name}") });
        for batch in inputs.batches(&pre, self.batch_size) {
            let batch = batch?;
            let per_item: Vec<Option<Vec<Target>>> = batch.items.iter().map(|it| self.targets.for_item(model, it)).collect::<Result<_>>()?;
            if per_item.iter().flatten().flatten().any(|t| t.class().is_none()) {
                return Err(Error::InvalidArgument("evaluate measures class probabilities: give classes (--class, --class-file), not units or neurons".into()));
            }
            let [_, _, h, w] = batch.x.shape[..] else { unreachable!("batches are [n, 3, h, w]") };
            let first = index;
            index += batch.items.len() as u64;
            let pairs = target_pairs(&per_item);
            for chunk in pairs.chunks(self.batch_size.max(1)) {
                let x = upload_pairs(eng, &batch, chunk)?;
                let m = chunk.len();
                let random_of = |k: usize| random_maps(be, 1, h, w, self.seed.wrapping_add(first + chunk[k].0 as u64));
                // each pair's map `[1, 1, h, w]`, as the pictures show it (|map| for a signed
                // method), and its target
                let (maps, targets): (Vec<B::T>, Vec<Target>) = match &method {
                    Some(method) => {
                        let (maps, targets) = method.attribute_on_device(&x, chunk.iter().map(|p| p.1).collect::<Option<Vec<_>>>().as_deref())?;
                        let maps = if method.info().signed { be.unary(&maps, Unary::Abs)? } else { maps };
                        let ms = be.shape(&maps).to_vec();
                        // the batch as channels, split into items
                        (be.split(&be.reshape(maps, &[1, m, ms[2], ms[3]])?, &vec![1; m])?, targets.resolve(eng)?)
                    }
                    None => {
                        let top = crate::viz::classify(eng, &eng.download(&x)?, 1)?;
                        ((0..m).map(random_of).collect::<Result<_>>()?, chunk.iter().zip(&top).map(|(p, t)| p.1.unwrap_or(Target::Class(t[0].class))).collect())
                    }
                };
                for (k, ((&(i, _), target), map)) in chunk.iter().zip(&targets).zip(maps).enumerate() {
                    let it = &batch.items[i];
                    let Target::Class(class) = *target else { unreachable!("class targets only") };
                    let xi = eng.upload(&Tensor::new(vec![1, 3, h, w], batch.x.item(i).to_vec())?)?;
                    let c = self.curves.curves(eng, &xi, &map, class, &pre)?;
                    let r = if self.compare_random && !random_only { Some(self.curves.curves(eng, &xi, &random_of(k)?, class, &pre)?) } else { None };
                    let several = per_item[i].as_ref().is_some_and(|t| t.len() > 1);
                    let stem = if several { format!("{}{}", it.stem, target_suffix(eng, target)) } else { it.stem.clone() };
                    let class_name = model.class_name(class);
                    let title = format!("{}: {name}, class {class} ({class_name})", it.stem);
                    let plot = curves_plot(&crate::viz::plot::fit(&title, 68), &format!("class {class}"), &c, r.as_ref());
                    let ms = be.shape(&map).to_vec();
                    let (_, overlay) = render::pictures(be, &map, std::slice::from_ref(&it.picture), &style)?.remove(0);
                    let file = out.add(&format!("{stem}_{name}_evaluate.png"), &png_bytes(&beside(&overlay, &plot))?)?;
                    for (j, f) in c.fractions.iter().enumerate() {
                        csv += &format!("{},{class},{f},{},{}", csv_field(&it.source.display().to_string()), c.deletion[j], c.insertion[j]);
                        if self.compare_random {
                            let rc = r.as_ref().unwrap_or(&c);
                            csv += &format!(",{},{}", rc.deletion[j], rc.insertion[j]);
                        }
                        csv += "\n";
                    }
                    del.push(c.deletion_auc);
                    ins.push(c.insertion_auc);
                    let mut rec = json!({
                        "image": it.source.display().to_string(),
                        "class": class,
                        "class_name": class_name,
                        "map_shape": [ms[2], ms[3]],
                        "fractions": c.fractions,
                        "file": file.display().to_string(),
                    });
                    rec[name] = curve_json(&c);
                    if self.compare_random {
                        let rc = r.as_ref().unwrap_or(&c);
                        rdel.push(rc.deletion_auc);
                        rins.push(rc.insertion_auc);
                        rec[RANDOM] = curve_json(rc);
                    }
                    records.push(rec);
                }
            }
            progress(Progress::Advance(batch.items.len()));
        }
        progress(Progress::Finish);
        let mut summary = json!({"maps": records.len(), "mean_deletion_auc": mean(&del), "mean_insertion_auc": mean(&ins)});
        if self.compare_random {
            summary["random_mean_deletion_auc"] = json!(mean(&rdel));
            summary["random_mean_insertion_auc"] = json!(mean(&rins));
        }
        let mut result = json!({
            "method": name,
            "layer": method.as_ref().and_then(|m| m.layer_name()),
            "steps": self.curves.steps,
            "deletion_fill": self.curves.fill.name(),
            "insertion_blur_sigma": self.curves.blur_sigma,
            "ranking": "the map upsampled bilinearly to the input (|map| for signed methods), largest first, ties to the lower pixel index",
            "curve": "softmax probability of the class; area by the trapezoid rule over the fraction of pixels changed",
            "summary": summary,
            "maps": records,
        });
        let csv_name = format!("evaluate_{name}.csv");
        out.add(&csv_name, csv.as_bytes())?;
        result["csv"] = json!(out.path_of(&csv_name).display().to_string());
        out.add(&format!("evaluate_{name}.json"), &serde_json::to_vec_pretty(&result).expect("JSON serialises"))?;
        Ok(result)
    }
}
