//! `deepviz._native`: the Python package's native module, a thin layer over the deepviz crate.
//! The pure-Python package (`python/deepviz/__init__.py`) gives it the captum and
//! pytorch-grad-cam shapes; everything computed here is the library code the CLI runs.
//!
//! - this file: [`PyModel`] (a loaded model), [`PyEngine`] (a model made ready on a device:
//!   attribution methods of the registry, DeepDream, classification), the method registry, and
//!   how library errors become Python exceptions ([`to_py`]).
//! - `dlpack.rs`: arrays in and out through DLPack, read in place and shared without copies.
//!
//! The GIL is released while an engine computes; no Rust panic reaches Python by design
//! (inputs are checked as the CLI checks them, by `job::inputs::check_input`), and pyo3 would
//! turn one into an exception rather than abort.

mod dlpack;

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyFileNotFoundError, PyMemoryError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::{Backend, Precision};
use deepviz::engine::Engine;
use deepviz::job::{self, DeviceChoice, DreamJob};
use deepviz::model::Model;
use deepviz::viz::segment::{self, GrabCut};
use deepviz::viz::{self, render, LayerUse, Maximize, MethodOptions, Target};
use deepviz::{Error, Tensor};

use dlpack::Array;

/// A library error as the Python exception a user expects: `ValueError` for bad input (shapes,
/// unknown layers or methods, model files), `FileNotFoundError` / `OSError` for files,
/// `MemoryError` when the device is full, `RuntimeError` for the GPU; the message is the library's.
pub(crate) fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
        Error::Io { .. } => PyOSError::new_err(msg),
        Error::OutOfMemory { .. } => PyMemoryError::new_err(msg),
        Error::Device(_) => PyRuntimeError::new_err(msg),
        Error::ModelFile { .. }
        | Error::Tensor { .. }
        | Error::UnknownArch { .. }
        | Error::UnknownLayer { .. }
        | Error::Image { .. }
        | Error::Shape { .. }
        | Error::Unsupported(_)
        | Error::InvalidArgument(_) => PyValueError::new_err(msg),
    }
}

trait OrPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> OrPy<T> for deepviz::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// A row of `Model.layers()`: module path, the node it yields, its op, its output shape.
type LayerRow = (String, String, String, Vec<usize>);
/// What `Engine.attribute` returns: maps, targets, per-item figures by name.
type Attributed = (Array, Vec<Py<PyAny>>, Vec<(String, Array)>);
/// A class of `Engine.classify`: class, name, logit, probability.
type Class = (usize, String, f32, f32);

/// A loaded, validated model (`.safetensors` with an architecture of the zoo, or ONNX).
#[pyclass(name = "Model", module = "deepviz._native", frozen)]
pub struct PyModel {
    inner: Arc<Model>,
}

#[pymethods]
impl PyModel {
    /// The model file `path` (`arch` overrides or supplies its architecture), or without a path
    /// the embedded default (EfficientNet-Lite0, ImageNet) — as the CLI's `--model` / `--arch`.
    #[new]
    #[pyo3(signature = (path=None, arch=None))]
    fn new(path: Option<PathBuf>, arch: Option<&str>) -> PyResult<Self> {
        let m = match path {
            Some(p) => {
                job::inputs::check_regular_file(&p).py_err()?;
                Model::load(&p, arch).py_err()?
            }
            None if arch.is_some() => return Err(PyValueError::new_err("arch names the architecture of a model file; give its path too")),
            None => Model::default_model().py_err()?,
        };
        Ok(PyModel { inner: Arc::new(m) })
    }

    /// A model file's bytes (safetensors or ONNX); `origin` names it in errors.
    #[staticmethod]
    #[pyo3(signature = (data, origin, arch=None))]
    fn from_bytes(data: &[u8], origin: &str, arch: Option<&str>) -> PyResult<Self> {
        Ok(PyModel { inner: Arc::new(Model::from_bytes(data, origin, arch).py_err()?) })
    }

    #[getter]
    fn arch(&self) -> String {
        self.inner.graph.arch.clone()
    }

    #[getter]
    fn origin(&self) -> String {
        self.inner.origin.clone()
    }

    /// (height, width) of the model's input
    #[getter]
    fn input_size(&self) -> (usize, usize) {
        let [h, w] = self.inner.preprocess.size;
        (h, w)
    }

    #[getter]
    fn mean(&self) -> (f32, f32, f32) {
        let m = self.inner.preprocess.mean;
        (m[0], m[1], m[2])
    }

    #[getter]
    fn std(&self) -> (f32, f32, f32) {
        let s = self.inner.preprocess.std;
        (s[0], s[1], s[2])
    }

    /// The class names (ImageNet's for 1000 classes, else empty).
    #[getter]
    fn classes(&self) -> Vec<String> {
        self.inner.classes.clone()
    }

    /// Every layer name (PyTorch module path) as `deepviz layers` lists it: (path, node it yields,
    /// op, output shape for one image).
    fn layers(&self) -> PyResult<Vec<LayerRow>> {
        Ok(self.inner.layer_table().py_err()?.into_iter().map(|r| (r.path, r.node, r.op.to_string(), r.shape)).collect())
    }

    /// Image files (or preprocessed `.npy` tensors, or folders of them) preprocessed as the CLI
    /// does (resize, centre crop, normalise), stacked `[n, 3, h, w]`.
    fn load_images(&self, paths: Vec<PathBuf>) -> PyResult<Array> {
        let inputs = job::Inputs::expand(&paths).py_err()?;
        let mut shape: Option<Vec<usize>> = None;
        let mut data = vec![];
        for batch in inputs.batches(&self.inner.preprocess, 16) {
            let x = batch.py_err()?.x;
            match &mut shape {
                None => shape = Some(x.shape.clone()),
                Some(s) if s[1..] == x.shape[1..] => s[0] += x.shape[0],
                Some(s) => {
                    return Err(PyValueError::new_err(format!(
                        "inputs of different sizes ({}x{} and {}x{}) cannot be stacked; load them separately",
                        s[2], s[3], x.shape[2], x.shape[3]
                    )))
                }
            }
            data.extend(x.data);
        }
        let shape = shape.ok_or_else(|| PyValueError::new_err("no inputs"))?;
        Ok(Array::new(Tensor::new(shape, data).py_err()?))
    }
}

/// An engine of each backend type.
enum Eng {
    Cpu(Engine<Cpu>),
    Gpu(Engine<Gpu>),
}

/// Run `$body` with `$e` bound to the engine, whichever backend it is on.
macro_rules! on_engine {
    ($eng:expr, $e:ident => $body:expr) => {
        match $eng {
            Eng::Cpu($e) => $body,
            Eng::Gpu($e) => $body,
        }
    };
}

/// A model made ready on one device: its weights prepared there once.
#[pyclass(name = "Engine", module = "deepviz._native", frozen)]
pub struct PyEngine {
    eng: Eng,
    device: String,
    note: Option<String>,
}

fn parse<T: std::str::FromStr<Err = Error>>(s: Option<&str>) -> PyResult<Option<T>> {
    s.map(str::parse).transpose().py_err()
}

/// The targets a user gave: class numbers or `unit:LAYER:C` / `neuron:LAYER:C:Y:X` strings, one
/// per item (or one for every item).
fn parse_targets(model: &Model, given: Option<Vec<Bound<'_, PyAny>>>, n: usize) -> PyResult<Option<Vec<Target>>> {
    let Some(given) = given else { return Ok(None) };
    let mut v = Vec::with_capacity(given.len());
    for t in given {
        v.push(if let Ok(c) = t.extract::<usize>() {
            Target::Class(c)
        } else if let Ok(s) = t.extract::<String>() {
            job::parse_target(&s).and_then(|t| t.resolve(model)).py_err()?
        } else {
            return Err(PyValueError::new_err(format!("a target is a class number or a string `unit:LAYER:C` / `neuron:LAYER:C:Y:X`, not {t}")));
        });
    }
    match v.len() {
        1 => Ok(Some(vec![v[0]; n])),
        k if k == n => Ok(Some(v)),
        k => Err(PyValueError::new_err(format!("{k} targets for a batch of {n} inputs (give one, or one per input)"))),
    }
}

/// A method's maps of `x` with the targets each explains and its per-item figures.
type Maps = (Tensor, Vec<Target>, Vec<(String, Vec<f32>)>);

fn attribute<B: Backend>(eng: &Engine<B>, method: &str, opts: &MethodOptions, x: &Tensor, targets: Option<&[Target]>, resize: bool) -> deepviz::Result<Maps> {
    let m = viz::attribution(eng, method, opts)?;
    let a = m.attribute_with_extras(&eng.upload(x)?, targets)?;
    let (n, hw) = (x.shape[0], [x.shape[2], x.shape[3]]);
    // resize: pytorch-grad-cam's output, the map upsampled to the input and scaled to [0, 1] (the
    // CLI's pictures before colouring); a combined CAM (several layers, aug_smooth) is that
    // output already, and aug_smooth's mean is not scaled again there
    let maps = if resize && !m.scaled() { render::normalized(&eng.be, &a.map, hw, None)? } else { eng.download(&a.map)? };
    let (h, w) = (maps.shape[2], maps.shape[3]);
    let extras = a.extras.iter().map(|(k, t)| Ok((k.to_string(), eng.download(t)?.data))).collect::<deepviz::Result<_>>()?;
    Ok((maps.reshape(&[n, h, w])?, a.targets.resolve(eng)?, extras))
}

/// Masks `[n, h, w]` (1 foreground, 0 background) of `x` by `method`'s maps seeding `grabcut`, and
/// the targets they explain: the CLI's `segment` on the picture `x` shows once de-normalised (the
/// crop the network saw, as the CLI takes it from a `.npy` input).
fn segment<B: Backend>(eng: &Engine<B>, method: &str, opts: &MethodOptions, x: &Tensor, targets: Option<&[Target]>, grabcut: &GrabCut, largest: bool) -> deepviz::Result<(Tensor, Vec<Target>)> {
    grabcut.check()?;
    let m = viz::attribution(eng, method, opts)?;
    let (n, h, w) = (x.shape[0], x.shape[2], x.shape[3]);
    let (maps, resolved) = m.attribute_on_device(&eng.upload(x)?, targets)?;
    let norm = segment::seed_maps(&eng.be, &maps, m.info().signed, [h, w])?;
    let pre = eng.model().preprocess;
    let mut masks = Vec::with_capacity(n * h * w);
    for k in 0..n {
        let picture = deepviz::imageio::to_rgb(x.item(k), h, w, &pre);
        let mut seg = grabcut.segment_map(&picture, norm.item(k))?;
        if largest {
            seg.mask = segment::largest_component(&seg.mask, h, w)?;
        }
        masks.extend(seg.mask.iter().map(|&f| if f { 1.0 } else { 0.0 }));
    }
    Ok((Tensor::new(vec![n, h, w], masks)?, resolved.resolve(eng)?))
}

/// A target as Python sees it: a class number, or `unit:LAYER:C` / `neuron:LAYER:C:Y:X`.
fn target_py(py: Python<'_>, model: &Model, t: &Target) -> PyResult<Py<PyAny>> {
    Ok(match *t {
        Target::Class(c) => c.into_pyobject(py)?.into_any().unbind(),
        Target::Channel { layer, channel } => format!("unit:{}:{channel}", model.name(layer)).into_pyobject(py)?.into_any().unbind(),
        Target::Neuron { layer, channel, y, x } => format!("neuron:{}:{channel}:{y}:{x}", model.name(layer)).into_pyobject(py)?.into_any().unbind(),
    })
}

#[pymethods]
impl PyEngine {
    /// `model` on `device` (`auto`, `cpu`, `cuda`, `cuda:N`, `emu`: the CLI's `--device`), its
    /// convolutions on a GPU in `precision` (`fp32`, `tf32`, `bf16`; default fp32; the CPU engine
    /// is always fp32).
    #[new]
    #[pyo3(signature = (model, device="auto", precision=None))]
    fn new(py: Python<'_>, model: &PyModel, device: &str, precision: Option<&str>) -> PyResult<Self> {
        let choice: DeviceChoice = device.parse().py_err()?;
        let p: Precision = parse(precision)?.unwrap_or(Precision::F32);
        let model = model.inner.clone();
        py.detach(move || {
            let gpu = |g: Gpu, name: String| Ok::<_, Error>(PyEngine { eng: Eng::Gpu(Engine::new(model.clone(), g.with_precision(p))?), device: name, note: None });
            let cpu = |note: Option<String>| Ok::<_, Error>(PyEngine { eng: Eng::Cpu(Engine::new(model.clone(), Cpu)?), device: "cpu".into(), note });
            match choice {
                DeviceChoice::Cpu => cpu(None),
                DeviceChoice::Emu => gpu(job::emu_backend()?, "emu".into()),
                DeviceChoice::Cuda(n) => gpu(job::cuda_backend(n)?, format!("cuda:{n}")),
                DeviceChoice::Auto => match job::cuda_backend(0) {
                    Ok(g) => gpu(g, "cuda:0".into()),
                    Err(e) => cpu(Some(format!("running on the CPU engine ({e})"))),
                },
            }
        })
        .py_err()
    }

    /// The device it runs on: `cpu`, `cuda:N` or `emu`.
    #[getter]
    fn device(&self) -> String {
        self.device.clone()
    }

    /// Why `auto` chose the CPU, if it did.
    #[getter]
    fn note(&self) -> Option<String> {
        self.note.clone()
    }

    /// The maps of the registry's method `method` (a CLI subcommand name) for the batch `x`
    /// (float32 `[n, 3, h, w]` or `[3, h, w]`, preprocessed, through DLPack): `(maps [n, h, w],
    /// targets, extras)`. `resize`: upsampled to the input and scaled to [0, 1] per map instead
    /// of raw at the map's own resolution. `layer`: a module path, or a list of them (the CAM
    /// methods: maps combined as pytorch-grad-cam's `target_layers`).
    #[pyo3(signature = (method, x, targets=None, layer=None, samples=None, noise=None, smooth=None, base=None, baseline=None, seed=None, masks=None, resize=false, eigen_smooth=false, aug_smooth=false))]
    #[allow(clippy::too_many_arguments)]
    fn attribute(
        &self,
        py: Python<'_>,
        method: &str,
        x: &Bound<'_, PyAny>,
        targets: Option<Vec<Bound<'_, PyAny>>>,
        layer: Option<Bound<'_, PyAny>>,
        samples: Option<usize>,
        noise: Option<f32>,
        smooth: Option<&str>,
        base: Option<String>,
        baseline: Option<&str>,
        seed: Option<u64>,
        masks: Option<usize>,
        resize: bool,
        eigen_smooth: bool,
        aug_smooth: bool,
    ) -> PyResult<Attributed> {
        let x = job::inputs::check_input("input", dlpack::read_f32(x)?).py_err()?;
        let model = on_engine!(&self.eng, e => e.model_arc().clone());
        let targets = parse_targets(&model, targets, x.shape[0])?;
        let layers = match layer {
            None => vec![],
            Some(l) => match l.extract::<String>() {
                Ok(one) => vec![one],
                Err(_) => l.extract::<Vec<String>>().map_err(|_| PyValueError::new_err("layer: a module path (str) or a list of them"))?,
            },
        };
        let opts = MethodOptions { layers, samples, noise, smooth: parse(smooth)?, base, baseline: parse(baseline)?, seed, masks, eigen_smooth, aug_smooth };
        let (maps, resolved, extras) = py.detach(|| on_engine!(&self.eng, e => attribute(e, method, &opts, &x, targets.as_deref(), resize))).py_err()?;
        let n = maps.shape[0];
        let extras = extras.into_iter().map(|(k, v)| Ok((k, Array::new(Tensor::new(vec![n], v).py_err()?)))).collect::<PyResult<_>>()?;
        let resolved = resolved.iter().map(|t| target_py(py, &model, t)).collect::<PyResult<_>>()?;
        Ok((Array::new(maps), resolved, extras))
    }

    /// Weakly supervised segmentation (the CLI's `segment`, Simonyan et al. 2014 §3.1): each
    /// item's map by `method` (default saliency; `layer` for the CAMs) seeds a GrabCut of the
    /// picture `x` shows: `(masks [n, h, w] of 1.0 foreground / 0.0 background, targets)`, the
    /// CLI's `--raw` `_segment_mask.npy`. Unset settings are the CLI's defaults.
    #[pyo3(signature = (x, method="saliency", targets=None, layer=None, fg_quantile=None, bg_quantile=None, iterations=None, largest_component=false))]
    #[allow(clippy::too_many_arguments)]
    fn segment(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        method: &str,
        targets: Option<Vec<Bound<'_, PyAny>>>,
        layer: Option<String>,
        fg_quantile: Option<f64>,
        bg_quantile: Option<f64>,
        iterations: Option<usize>,
        largest_component: bool,
    ) -> PyResult<(Array, Vec<Py<PyAny>>)> {
        let x = job::inputs::check_input("input", dlpack::read_f32(x)?).py_err()?;
        let model = on_engine!(&self.eng, e => e.model_arc().clone());
        let targets = parse_targets(&model, targets, x.shape[0])?;
        let opts = MethodOptions { layers: layer.into_iter().collect(), ..MethodOptions::default() };
        let d = GrabCut::default();
        let grabcut = GrabCut { fg_quantile: fg_quantile.unwrap_or(d.fg_quantile), bg_quantile: bg_quantile.unwrap_or(d.bg_quantile), iterations: iterations.unwrap_or(d.iterations), ..d };
        let (masks, resolved) = py.detach(|| on_engine!(&self.eng, e => segment(e, method, &opts, &x, targets.as_deref(), &grabcut, largest_component))).py_err()?;
        let resolved = resolved.iter().map(|t| target_py(py, &model, t)).collect::<PyResult<_>>()?;
        Ok((Array::new(masks), resolved))
    }

    /// DeepDream of the batch `x` at `layer` (default: the architecture's), the CLI's schedule
    /// unless told otherwise: the dreamed batch `[n, 3, h, w]`, normalised like `x`; `guide`: a
    /// preprocessed guide image `[1, 3, h, w]` to dream towards (the notebook's objective_guide).
    #[pyo3(signature = (x, layer=None, octaves=None, octave_scale=None, steps=None, lr=None, jitter=None, seed=None, guide=None))]
    #[allow(clippy::too_many_arguments)]
    fn dream(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        layer: Option<String>,
        octaves: Option<usize>,
        octave_scale: Option<f32>,
        steps: Option<usize>,
        lr: Option<f32>,
        jitter: Option<usize>,
        seed: Option<u64>,
        guide: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Array> {
        let x = job::inputs::check_input("input", dlpack::read_f32(x)?).py_err()?;
        let guide = guide.map(|g| dlpack::read_f32(&g).map(job::Guide::Tensor)).transpose()?;
        let mut job = DreamJob { layer, guide, ..DreamJob::default() };
        let d = &mut job.dream;
        d.octaves = octaves.unwrap_or(d.octaves);
        d.octave_scale = octave_scale.unwrap_or(d.octave_scale);
        d.steps = steps.unwrap_or(d.steps);
        d.lr = lr.unwrap_or(d.lr);
        d.jitter = jitter.unwrap_or(d.jitter);
        d.seed = seed.unwrap_or(d.seed);
        let y = py.detach(|| on_engine!(&self.eng, e => job.dream_tensor(e, &x, &mut |_| {}))).py_err()?;
        Ok(Array::new(y))
    }

    /// Activation maximisation (`deepviz maximize`): one picture `[n, 3, size, size]` (default:
    /// the model's input size) per target (a class number or `unit:LAYER:C` /
    /// `neuron:LAYER:C:Y:X`), normalised as the model's input. `param`: `pixels`, or `fourier`
    /// (lucid's decorrelated Fourier spectrum, with `decay_power`, `sd`, `decorrelate`); `None`
    /// options take the CLI's defaults for that parameterisation.
    #[pyo3(signature = (targets, size=None, steps=None, lr=None, l2=None, jitter=None, seed=None, param="pixels", decay_power=None, sd=None, decorrelate=true))]
    #[allow(clippy::too_many_arguments)]
    fn maximize(
        &self,
        py: Python<'_>,
        targets: Vec<Bound<'_, PyAny>>,
        size: Option<usize>,
        steps: Option<usize>,
        lr: Option<f32>,
        l2: Option<f32>,
        jitter: Option<usize>,
        seed: Option<u64>,
        param: &str,
        decay_power: Option<f32>,
        sd: Option<f32>,
        decorrelate: bool,
    ) -> PyResult<Array> {
        let model = on_engine!(&self.eng, e => e.model_arc().clone());
        let n = targets.len();
        let targets = parse_targets(&model, Some(targets), n)?.unwrap_or_default();
        let d = Maximize::named(param, decay_power, sd, decorrelate).py_err()?;
        let x = Maximize { steps: steps.unwrap_or(d.steps), lr: lr.unwrap_or(d.lr), l2: l2.unwrap_or(d.l2), jitter: jitter.unwrap_or(d.jitter), seed: seed.unwrap_or(d.seed), ..d };
        let size = size.map_or(model.preprocess.size, |s| [s, s]);
        let y = py.detach(|| on_engine!(&self.eng, e => x.run(e, &targets, size, &model.preprocess, &mut || {}))).py_err()?;
        Ok(Array::new(y))
    }

    /// The top `k` classes of each item of `x`: lists of (class, name, logit, probability).
    #[pyo3(signature = (x, k=5))]
    fn classify(&self, py: Python<'_>, x: &Bound<'_, PyAny>, k: usize) -> PyResult<Vec<Vec<Class>>> {
        let x = job::inputs::check_input("input", dlpack::read_f32(x)?).py_err()?;
        let p = py.detach(|| on_engine!(&self.eng, e => viz::classify(e, &x, k.max(1)))).py_err()?;
        Ok(p.into_iter().map(|v| v.into_iter().map(|q| (q.class, q.name, q.logit, q.prob)).collect()).collect())
    }
}

/// The attribution methods of the registry: dicts of name, title, paper, about, whether it takes
/// a layer, whether its maps are signed, its options, and its default GPU precision.
#[pyfunction]
fn methods(py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
    viz::METHODS
        .iter()
        .map(|m| {
            let d = pyo3::types::PyDict::new(py);
            d.set_item("name", m.name)?;
            d.set_item("title", m.title)?;
            d.set_item("paper", m.paper)?;
            d.set_item("about", m.about)?;
            d.set_item("layer", m.layer == LayerUse::One)?;
            d.set_item("signed", m.signed)?;
            d.set_item("options", m.options.iter().map(|o| o.flag()).collect::<Vec<_>>())?;
            d.set_item("gpu_precision", m.gpu_precision.name())?;
            Ok(d.into_any().unbind())
        })
        .collect()
}

/// Where `obj`'s DLPack data lies: (address, (device type, device id), shape). Takes the
/// capsule like any consumer; for checking that arrays are read in place.
#[pyfunction]
fn dlpack_describe(obj: &Bound<'_, PyAny>) -> PyResult<(usize, (i32, i32), Vec<i64>)> {
    dlpack::describe(obj)
}

/// `x` (anything speaking DLPack, float32 on the CPU) read as the engines read their inputs,
/// returned as a result array: for testing the DLPack consumer and producer.
#[pyfunction]
fn dlpack_roundtrip(x: &Bound<'_, PyAny>) -> PyResult<Array> {
    Ok(Array::new(dlpack::read_f32(x)?))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyModel>()?;
    m.add_class::<PyEngine>()?;
    m.add_class::<Array>()?;
    m.add_function(wrap_pyfunction!(methods, m)?)?;
    m.add_function(wrap_pyfunction!(dlpack_describe, m)?)?;
    m.add_function(wrap_pyfunction!(dlpack_roundtrip, m)?)?;
    Ok(())
}
