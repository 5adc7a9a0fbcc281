//! `deepviz trace`: one job of the CUDA engine on the recording device
//! ([`crate::device::record`]), which runs nothing and counts what the job asks of a GPU, behind
//! the launch queue the real GPU has ([`crate::device::graph`]). The job runs three times on one
//! engine and the third run is reported: what a job costs once the engine is warm (weights
//! prepared, caches filled, the repeated launch runs captured as graphs). No GPU needed, so CI can hold the engine to its
//! overheads: allocations, host syncs, launches, bytes copied, and multiply-adds executed against
//! the useful ones.
//!
//! The jobs are the CLI's: an attribution method on a batch (upload, maps, the pictures'
//! upsampling and normalisation, the downloads), or one DeepDream step (`dream`).

use std::sync::Arc;

use crate::backend::cuda::Gpu;
use crate::backend::Precision;
use crate::device::graph::Graphed;
use crate::device::record::{RecordingDevice, Trace};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::tensor::Tensor;
use crate::viz::{attribution, method_info, pixel_range, render, DeepDream, MethodOptions, Objective};

/// Every job `trace` knows: the attribution methods and `dream` (one step).
pub fn trace_jobs() -> Vec<&'static str> {
    crate::viz::METHODS.iter().map(|m| m.name).chain(["dream"]).collect()
}

/// Trace `job` on `model` for a batch of `batch` images of `size` (h, w), its convolutions in
/// `precision`.
pub fn trace(model: Arc<Model>, job: &str, batch: usize, size: [usize; 2], precision: Precision) -> Result<Trace> {
    let dev = Arc::new(Graphed::new(RecordingDevice::new()));
    let eng = Engine::new(model, Gpu::new(dev.clone()).with_precision(precision))?;
    let x = Tensor::zeros(&[batch.max(1), 3, size[0], size[1]]);
    // run three times (the first sees each launch run, the second captures it); record the third
    let thrice = |run: &dyn Fn() -> Result<()>| -> Result<()> {
        run()?;
        run()?;
        dev.inner().start();
        run()?;
        dev.flush()
    };
    match job {
        "dream" => {
            let m = eng.model();
            let dream = DeepDream::new(Objective::layer(m.resolve(&m.graph.heads.dream_layer)?));
            let range = pixel_range(&eng.be, &m.preprocess, 3)?;
            thrice(&|| {
                let mut img = eng.upload(&x)?;
                dream.advance(&eng, &mut img, &range, &mut 0)?;
                eng.download(&img).map(|_| ())
            })?;
        }
        name => {
            let info = method_info(name).ok_or_else(|| Error::InvalidArgument(format!("unknown job `{name}`; known: {}", trace_jobs().join(", "))))?;
            let method = attribution(&eng, name, &MethodOptions::default())?;
            let clip = (info.clip_percentile < 100.0).then_some(info.clip_percentile / 100.0);
            thrice(&|| {
                let (maps, targets) = method.attribute_on_device(&eng.upload(&x)?, None)?;
                render::normalized(&eng.be, &maps, size, clip)?;
                targets.resolve(&eng).map(|_| ())
            })?;
        }
    }
    Ok(dev.inner().report())
}
