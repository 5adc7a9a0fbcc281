//! Choosing the engine a job runs on: the GPU when there is one, the CPU engine otherwise, or
//! what the user insists on. Each backend is its own type, so a job is a [`WithBackend`] value
//! run once for whichever backend was chosen.

use crate::backend::cpu::Cpu;
use crate::backend::cuda::Gpu;
use crate::backend::Backend;
use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// the GPU when the CUDA driver sees one, else the CPU engine (with a note saying why)
    Auto,
    /// the CPU engine
    Cpu,
    /// the CUDA engine on the first GPU
    Cuda,
    /// the CUDA engine on the CPU emulation of the CUDA execution model (slow; for checking)
    Emu,
}

/// A job generic over the backend it runs on.
pub trait WithBackend {
    type Output;
    fn run<B: Backend>(self, be: B) -> Result<Self::Output>;
}

/// The CUDA engine on the first GPU, or why not.
pub fn cuda_backend() -> Result<Gpu> {
    #[cfg(feature = "cuda")]
    {
        Ok(Gpu::new(std::sync::Arc::new(crate::device::cuda::CudaDevice::new(0)?)))
    }
    #[cfg(not(feature = "cuda"))]
    Err(crate::Error::Unsupported("this deepviz was built without the CUDA engine (feature `cuda`); use --device cpu".into()))
}

/// Run `job` on the backend `choice` names. `note` hears why `Auto` fell back to the CPU.
pub fn with_backend<J: WithBackend>(choice: DeviceChoice, note: &mut dyn FnMut(String), job: J) -> Result<J::Output> {
    match choice {
        DeviceChoice::Cpu => job.run(Cpu),
        DeviceChoice::Emu => job.run(Gpu::emulated()),
        DeviceChoice::Cuda => job.run(cuda_backend()?),
        DeviceChoice::Auto => match cuda_backend() {
            Ok(g) => job.run(g),
            Err(e) => {
                note(format!("running on the CPU engine ({e})"));
                job.run(Cpu)
            }
        },
    }
}
