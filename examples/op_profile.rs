//! Where a job's time goes on the CPU engine, op by op: wraps `Cpu` in a backend that times
//! every call (process CPU time, all threads: steadier than wall time on a shared machine) and
//! prints the totals per op over ITERS calls after one warm-up.
//!
//!     cargo run --release --example op_profile -- MODEL.safetensors saliency|gradcam BATCH [ITERS]
mod common;
use common::cpu_s;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use deepviz::backend::cpu::{Cpu, CpuWeight};
use deepviz::backend::*;
use deepviz::engine::Engine;
use deepviz::model::Model;
use deepviz::viz::{attribution, MethodOptions};
use deepviz::{Result, Tensor};

struct Timed {
    be: Cpu,
    t: Mutex<BTreeMap<String, (f64, usize)>>,
}

thread_local!(static DEPTH: RefCell<usize> = const { RefCell::new(0) });

impl Timed {
    fn time<R>(&self, name: impl FnOnce() -> String, f: impl FnOnce() -> R) -> R {
        let t = cpu_s();
        let r = f();
        let e = cpu_s() - t;
        let mut m = self.t.lock().unwrap();
        let s = m.entry(name()).or_insert((0.0, 0));
        s.0 += e;
        s.1 += 1;
        r
    }
}

fn cs(g: &Conv2dGeom, w: &CpuWeight, x: &[usize]) -> String {
    let s = &w.tensor().shape;
    let kind = if s[1] == 1 { "dw" } else if s[2] == 1 { "1x1" } else { "kxk" };
    let _ = x;
    format!("{kind} k{} s{}", s[2], g.stride[0])
}

impl Backend for Timed {
    type T = Tensor;
    type W = CpuWeight;
    type Idx = Vec<u32>;
    fn name(&self) -> &'static str { "cpu" }
    fn memory_budget(&self) -> Option<usize> { Backend::memory_budget(&self.be) }
    fn shape<'a>(&self, t: &'a Tensor) -> &'a [usize] { &t.shape }
    fn upload(&self, t: &Tensor) -> Result<Tensor> { Backend::upload(&self.be, t) }
    fn download(&self, t: &Tensor) -> Result<Tensor> { Backend::download(&self.be, t) }
    fn weight(&self, t: &Arc<Tensor>, r: Role) -> Result<CpuWeight> { Backend::weight(&self.be, t, r) }
    fn conv2d(&self, x: &Tensor, w: &CpuWeight, b: Option<&CpuWeight>, g: &Conv2dGeom) -> Result<Tensor> {
        self.time(|| format!("conv fwd {}", cs(g, w, &x.shape)), || Backend::conv2d(&self.be, x, w, b, g))
    }
    fn conv2d_backward_data(&self, gy: &Tensor, w: &CpuWeight, xs: &[usize], g: &Conv2dGeom) -> Result<Tensor> {
        self.time(|| format!("conv bwd {}", cs(g, w, xs)), || Backend::conv2d_backward_data(&self.be, gy, w, xs, g))
    }
    fn linear(&self, x: &Tensor, w: &CpuWeight, b: Option<&CpuWeight>) -> Result<Tensor> { self.time(|| "linear".into(), || Backend::linear(&self.be, x, w, b)) }
    fn linear_backward_data(&self, gy: &Tensor, w: &CpuWeight) -> Result<Tensor> { self.time(|| "linear bwd".into(), || Backend::linear_backward_data(&self.be, gy, w)) }
    fn max_pool2d(&self, x: &Tensor, g: &Pool2dGeom) -> Result<(Tensor, Vec<u32>)> { self.time(|| "maxpool".into(), || Backend::max_pool2d(&self.be, x, g)) }
    fn max_pool2d_backward(&self, gy: &Tensor, a: &Vec<u32>, xs: &[usize]) -> Result<Tensor> { self.time(|| "maxpool bwd".into(), || Backend::max_pool2d_backward(&self.be, gy, a, xs)) }
    fn avg_pool2d(&self, x: &Tensor, g: &Pool2dGeom) -> Result<Tensor> { self.time(|| "avgpool".into(), || Backend::avg_pool2d(&self.be, x, g)) }
    fn avg_pool2d_backward(&self, gy: &Tensor, xs: &[usize], g: &Pool2dGeom) -> Result<Tensor> { self.time(|| "avgpool bwd".into(), || Backend::avg_pool2d_backward(&self.be, gy, xs, g)) }
    fn adaptive_avg_pool2d(&self, x: &Tensor, o: [usize; 2]) -> Result<Tensor> { self.time(|| "adaptive".into(), || Backend::adaptive_avg_pool2d(&self.be, x, o)) }
    fn adaptive_avg_pool2d_backward(&self, gy: &Tensor, xs: &[usize]) -> Result<Tensor> { self.time(|| "adaptive bwd".into(), || Backend::adaptive_avg_pool2d_backward(&self.be, gy, xs)) }
    fn act(&self, x: &Tensor, a: Act) -> Result<Tensor> { self.time(|| format!("act {a:?}"), || Backend::act(&self.be, x, a)) }
    fn act_backward(&self, x: &Tensor, gy: &Tensor, a: Act) -> Result<Tensor> { self.time(|| format!("act bwd {a:?}"), || Backend::act_backward(&self.be, x, gy, a)) }
    fn channel_scale(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> { self.time(|| "chscale".into(), || Backend::channel_scale(&self.be, x, s)) }
    fn channel_scale_backward(&self, x: &Tensor, s: &Tensor, gy: &Tensor) -> Result<(Tensor, Tensor)> { self.time(|| "chscale bwd".into(), || Backend::channel_scale_backward(&self.be, x, s, gy)) }
    fn affine(&self, x: &Tensor, s: &CpuWeight, t: &CpuWeight) -> Result<Tensor> { self.time(|| "affine".into(), || Backend::affine(&self.be, x, s, t)) }
    fn affine_backward(&self, gy: &Tensor, s: &CpuWeight) -> Result<Tensor> { self.time(|| "affine bwd".into(), || Backend::affine_backward(&self.be, gy, s)) }
    fn lrn(&self, x: &Tensor, g: &LrnGeom) -> Result<Tensor> { Backend::lrn(&self.be, x, g) }
    fn lrn_backward(&self, x: &Tensor, gy: &Tensor, g: &LrnGeom) -> Result<Tensor> { Backend::lrn_backward(&self.be, x, gy, g) }
    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> { self.time(|| "add".into(), || Backend::add(&self.be, a, b)) }
    fn add_assign(&self, a: &mut Tensor, b: &Tensor) -> Result<()> { self.time(|| "add_assign".into(), || Backend::add_assign(&self.be, a, b)) }
    fn concat(&self, xs: &[&Tensor]) -> Result<Tensor> { Backend::concat(&self.be, xs) }
    fn split(&self, x: &Tensor, c: &[usize]) -> Result<Vec<Tensor>> { Backend::split(&self.be, x, c) }
    fn reshape(&self, x: Tensor, s: &[usize]) -> Result<Tensor> { Backend::reshape(&self.be, x, s) }
    fn unary(&self, x: &Tensor, op: Unary) -> Result<Tensor> { self.time(|| "unary".into(), || Backend::unary(&self.be, x, op)) }
    fn binary(&self, a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> { self.time(|| "binary".into(), || Backend::binary(&self.be, a, b, op)) }
    fn reduce(&self, x: &Tensor, op: Reduce, axes: &[usize]) -> Result<Tensor> { self.time(|| "reduce".into(), || Backend::reduce(&self.be, x, op, axes)) }
    fn iota(&self, n: usize) -> Result<Tensor> { Backend::iota(&self.be, n) }
    fn full(&self, s: &[usize], v: f32) -> Result<Tensor> { self.time(|| "full".into(), || Backend::full(&self.be, s, v)) }
    fn roll(&self, x: &Tensor, dy: isize, dx: isize) -> Result<Tensor> { Backend::roll(&self.be, x, dy, dx) }
    fn flip(&self, x: &Tensor, v: bool, h: bool) -> Result<Tensor> { Backend::flip(&self.be, x, v, h) }
    fn crop(&self, x: &Tensor, y0: usize, x0: usize, h: usize, w: usize) -> Result<Tensor> { Backend::crop(&self.be, x, y0, x0, h, w) }
    fn paste(&self, dst: &mut Tensor, src: &Tensor, y0: usize, x0: usize) -> Result<()> { Backend::paste(&self.be, dst, src, y0, x0) }
    fn resize(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> { self.time(|| "resize".into(), || Backend::resize(&self.be, x, h, w)) }
    fn warp(&self, x: &Tensor, theta: &Tensor) -> Result<Tensor> { self.time(|| "warp".into(), || Backend::warp(&self.be, x, theta)) }
    fn warp_backward(&self, gy: &Tensor, theta: &Tensor) -> Result<Tensor> { self.time(|| "warp_backward".into(), || Backend::warp_backward(&self.be, gy, theta)) }
    fn random(&self, s: &[usize], seed: u64, dist: deepviz::backend::Random) -> Result<Tensor> { self.time(|| "random".into(), || Backend::random(&self.be, s, seed, dist)) }
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let model = Arc::new(Model::load(a[0].as_ref(), None)?);
    let (job, batch) = (a[1].as_str(), a[2].parse::<usize>().expect("BATCH"));
    let iters: usize = a.get(3).map_or(3, |s| s.parse().expect("ITERS"));
    let [h, w] = model.preprocess.size;
    let x = Tensor::new(vec![batch, 3, h, w], (0..batch * 3 * h * w).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect())?;
    let eng = Engine::new(model.clone(), Timed { be: Cpu, t: Mutex::new(BTreeMap::new()) })?;
    let method = attribution(&eng, job, &MethodOptions::default())?;
    method.attribute(&x, None)?;
    eng.be.t.lock().unwrap().clear();
    let (t, w) = (cpu_s(), Instant::now());
    for _ in 0..iters {
        method.attribute(&x, None)?;
    }
    let total = (cpu_s() - t) / iters as f64;
    println!("wall per call {:.2} ms", w.elapsed().as_secs_f64() / iters as f64 * 1e3);
    let m = eng.be.t.lock().unwrap();
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let mut sum = 0.0;
    for (k, (s, n)) in v {
        sum += s / iters as f64;
        println!("{k:24} {:8.2} ms {:5.1}%  ({} calls)", s / iters as f64 * 1e3, s / iters as f64 / total * 100.0, n / iters);
    }
    println!("{:24} {:8.2} ms CPU (ops {:.2} ms)", "total per call", total * 1e3, sum * 1e3);
    let _ = DEPTH.with(|d| *d.borrow());
    Ok(())
}

