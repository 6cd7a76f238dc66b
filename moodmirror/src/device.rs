//! Where the models run: the CPU, or CUDA GPU 0 in a build with the `cuda` feature.

use candle_core::Device;

/// Where the models run: the element's `device` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DeviceKind {
    /// Auto: CUDA GPU when built with it and present, else CPU.
    Auto = 0,
    /// CPU.
    Cpu = 1,
    /// CUDA GPU 0 (needs a build with the `cuda` feature).
    Cuda = 2,
}

/// Picks the candle device; the second value is a warning for a fallback to the CPU.
pub fn select_device(kind: DeviceKind) -> crate::Result<(Device, Option<String>)> {
    match kind {
        DeviceKind::Cpu => Ok((Device::Cpu, None)),
        DeviceKind::Cuda if !cfg!(feature = "cuda") => Err(crate::Error::Device(
            "device=cuda, but this build of moodmirror has no CUDA support: rebuild with `cargo build --release --features cuda` or use device=cpu".into(),
        )),
        DeviceKind::Cuda => Device::new_cuda(0).map(|d| (d, None)).map_err(|e| crate::Error::Device(format!("device=cuda: no usable CUDA GPU: {e}"))),
        DeviceKind::Auto if cfg!(feature = "cuda") => match Device::new_cuda(0) {
            Ok(d) => Ok((d, None)),
            Err(e) => Ok((Device::Cpu, Some(format!("device=auto: no usable CUDA GPU ({e}), running on the CPU")))),
        },
        DeviceKind::Auto => Ok((Device::Cpu, None)),
    }
}
