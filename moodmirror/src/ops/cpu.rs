//! What the CPU can do, asked in one place (each kernel module picks its code from these), and
//! the helpers every CPU op shares: the f32 data of a tensor's storage, per-thread scratch.

use candle_core::Result;

/// AVX2 with FMA: every x86-64 CPU since Haswell and Zen 1.
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX-512 with VNNI (`vpdpbusd` on 16 lanes): Intel since Cascade Lake, AMD since Zen 4.
#[inline]
pub fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX-VNNI (`vpdpbusd` on 256-bit registers, with AVX2): Intel since Alder Lake.
#[inline]
pub fn has_avx_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2_fma() && std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX-512 with BF16 dot products (training's bf16 GEMMs): Intel since Cooper Lake, AMD since Zen 4.
#[inline]
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The f32 data of a contiguous tensor's storage, or an error naming the op.
pub(crate) fn contiguous_f32<'a>(storage: &'a candle_core::CpuStorage, layout: &candle_core::Layout, op: &str) -> Result<&'a [f32]> {
    use candle_core::backend::BackendStorage;
    match (storage, layout.contiguous_offsets()) {
        (candle_core::CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        (candle_core::CpuStorage::F32(_), None) => candle_core::bail!("{op}: input must be contiguous"),
        (other, _) => candle_core::bail!("{op}: only f32 is supported, got {:?}", other.dtype()),
    }
}

/// Runs `f` on this thread's scratch vector in `cell`, kept between calls (fresh multi-megabyte
/// buffers on every call cost page faults and zeroing); a vector of its own when re-entered on
/// the same thread (rayon work stealing inside an op).
pub(crate) fn with_scratch<T, R>(cell: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
    cell.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => f(&mut buffer),
        Err(_) => f(&mut Vec::new()),
    })
}
