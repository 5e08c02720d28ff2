//! Devices. The CPU is always there; `Cuda(n)` is the n-th GPU, served by the CUDA backend.

/// Where a tensor's storage lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory; kernels run on rayon's thread pool.
    #[default]
    Cpu,
    /// The GPU with this ordinal.
    Cuda(usize),
}

impl Device {
    /// Whether this is the CPU.
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }
    /// Whether this is a CUDA device.
    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }
    /// `Cuda(0)` when it can be used (a GPU with its driver and NVRTC, or the emulator switched
    /// on by [`crate::cuda::use_emulator`]), else `Cpu`. Probes the driver once; never panics.
    pub fn cuda_if_available() -> Device {
        if crate::cuda::is_available(0) {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}
