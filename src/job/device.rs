//! Choosing the engine a job runs on: the GPU when there is one, the CPU engine otherwise, or
//! what the user insists on; and the arithmetic of the GPU engine's convolutions
//! ([`Precision`]). Each backend is its own type, so a job is a [`WithBackend`] value run once
//! for whichever backend was chosen.
//!
//! Precision: unless told otherwise, a real GPU computes its convolutions with TF32 tensor-core
//! operands, as PyTorch does by default on Ampere and newer (`torch.backends.cudnn.allow_tf32`
//! is on; our kernels need sm_80, so every GPU that runs them is such a card) — except for the
//! methods whose map is a gradient at the pixels, which stay in fp32 because TF32 visibly
//! changes them ([`crate::viz::MethodInfo::gpu_precision`] says which, with the measurement).
//! The CPU engine is always fp32, and so is the emulated GPU unless a precision is asked for:
//! it exists to check the kernels against the CPU.

use crate::backend::cpu::Cpu;
use crate::backend::cuda::Gpu;
use crate::backend::{Backend, Precision};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// The device a job asks for (the CLI's `--device`, Python's `device=`).
pub enum DeviceChoice {
    /// the GPU when the CUDA driver sees one, else the CPU engine (with a note saying why)
    Auto,
    /// the CPU engine
    Cpu,
    /// the CUDA engine on GPU number N (as the driver counts them; `cuda` is `cuda:0`)
    Cuda(usize),
    /// the CUDA engine on the CPU emulation of the CUDA execution model (slow; for checking)
    Emu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    /// `auto`, `cpu`, `cuda`, `cuda:N`, `emu`.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => DeviceChoice::Auto,
            "cpu" => DeviceChoice::Cpu,
            "cuda" => DeviceChoice::Cuda(0),
            "emu" => DeviceChoice::Emu,
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => DeviceChoice::Cuda(n),
                _ => return Err(Error::InvalidArgument(format!("unknown device `{s}`; known: auto, cpu, cuda, cuda:N (N = 0, 1, ...), emu"))),
            },
        })
    }
}

/// A job generic over the backend it runs on.
pub trait WithBackend {
    /// What the job returns.
    type Output;
    /// Run the job on `be`.
    fn run<B: Backend>(self, be: B) -> Result<Self::Output>;
}

/// The arithmetic a job's convolutions use on a real GPU when none is asked for: an attribution
/// method's [`crate::viz::MethodInfo::gpu_precision`], TF32 for every other job (classify,
/// dream, the dataset commands: activations read at a layer). One place for the CLI and trace.
pub fn gpu_precision(job: &str) -> Precision {
    crate::viz::method_info(job).map_or(Precision::Tf32, |m| m.gpu_precision)
}

/// The CUDA engine on GPU number `ordinal`, or why not.
pub fn cuda_backend(ordinal: usize) -> Result<Gpu> {
    #[cfg(feature = "cuda")]
    {
        use crate::device::graph::Graphed;
        Ok(Gpu::new(std::sync::Arc::new(Graphed::new(crate::device::cuda::CudaDevice::new(ordinal)?))))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = ordinal;
        Err(crate::Error::Unsupported("this deepviz was built without the CUDA engine (feature `cuda`); use --device cpu".into()))
    }
}

/// The CUDA engine on the CPU emulation, or why not (a build without the `emu` feature).
pub fn emu_backend() -> Result<Gpu> {
    #[cfg(feature = "emu")]
    {
        Ok(Gpu::emulated())
    }
    #[cfg(not(feature = "emu"))]
    {
        Err(crate::Error::Unsupported(
            "this deepviz was built without the emulated GPU (feature `emu`, for checking kernels): rebuild with `--features emu`, or use --device cpu / cuda".into(),
        ))
    }
}

/// Run `job` on the backend `choice` names, its convolutions in `precision` (`None`:
/// `gpu_default` on a real GPU — the job's [`gpu_precision`] — and fp32 on the emulator; see
/// the module doc). `note` hears, once, why
/// `Auto` fell back to the CPU, or that the CPU engine computes in fp32 whatever was asked.
pub fn with_backend<J: WithBackend>(choice: DeviceChoice, precision: Option<Precision>, gpu_default: Precision, note: &mut dyn FnMut(String), job: J) -> Result<J::Output> {
    let on_cpu = |why: Option<String>, note: &mut dyn FnMut(String)| {
        let mut s = why.map(|e| format!("running on the CPU engine ({e})")).unwrap_or_default();
        if let Some(p @ (Precision::Tf32 | Precision::Bf16)) = precision {
            s += &format!("{}the CPU engine computes in fp32; --precision {p} applies to the GPU engine", if s.is_empty() { "" } else { "; " });
        }
        if !s.is_empty() {
            note(s);
        }
        Cpu
    };
    match choice {
        DeviceChoice::Cpu => job.run(on_cpu(None, note)),
        DeviceChoice::Emu => job.run(emu_backend()?.with_precision(precision.unwrap_or(Precision::F32))),
        DeviceChoice::Cuda(n) => job.run(cuda_backend(n)?.with_precision(precision.unwrap_or(gpu_default))),
        DeviceChoice::Auto => match cuda_backend(0) {
            Ok(g) => job.run(g.with_precision(precision.unwrap_or(gpu_default))),
            Err(e) => job.run(on_cpu(Some(e.to_string()), note)),
        },
    }
}
