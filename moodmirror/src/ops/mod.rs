//! moodmirror's CPU ops for candle: the inference kernels the element runs every frame (int8
//! convolutions, direct and depthwise convolutions, dense layers, pooling) and the paths both
//! inference and training take; with the `train` feature (on in moodmirror-train, off in the
//! plugin) also training's fused batch norm and bf16 GEMMs. What the CPU can do is asked in
//! [`cpu`].
//!
//! candle 0.11 computes the input gradient of `conv2d` through `conv_transpose2d`, which runs at
//! 1–2 GFLOP/s on our CPUs, and runs grouped convolutions one group at a time. These custom ops
//! turn every convolution into `im2col` + one large GEMM (candle's `matmul`, whose backward is
//! GEMM as well), so forward and backward both run at GEMM speed.
//!
//! Activations use the channel-major layout `(C, B, H, W)` ("CBHW"). With it the GEMM output of a
//! convolution, `(C_out, B·H·W)`, already is the next layer's input: no transposes anywhere in the
//! network, and a grayscale batch `(B, 1, H, W)` is the same memory as `(1, B, H, W)`.

#[cfg(feature = "train")]
mod batchnorm;
#[cfg(feature = "train")]
mod conv_bf16;
pub mod cpu;
pub mod dense;
mod depthwise;
mod direct_conv;
pub mod dpunit;
#[cfg(feature = "train")]
pub mod gemm_bf16;
mod im2col;
pub mod int8;
mod matmul;
mod maxpool;
mod prelu;

#[cfg(feature = "train")]
pub use batchnorm::batch_norm_relu_train;
pub use depthwise::{depthwise3x3_bias_act, depthwise_conv2d};
pub use direct_conv::{conv2d_bias_prelu, conv2d_bias_prelu_padded};
pub use im2col::{col2im, im2col, Conv2dGeometry};
pub use matmul::matmul;
pub use maxpool::{max_pool2d, max_pool2d_ceil};
pub use prelu::bias_prelu;

use candle_core::{Result, Tensor};

pub(crate) use cpu::{contiguous_f32, with_scratch};

thread_local! {
    static CPU_FAST_PATHS: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

#[cfg(feature = "train")]
thread_local! {
    static BF16_MATMUL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the convolutions' matrix products in bf16 (f32 accumulation,
/// [`gemm_bf16`]) on this thread, where the CPU has AVX-512 BF16: how `train` runs its steps.
/// Elsewhere (inference, other CPUs) they stay f32.
/// Without the `train` feature there are no bf16 kernels: `f` runs in f32.
pub fn with_bf16_matmul<T>(enabled: bool, f: impl FnOnce() -> T) -> T {
    #[cfg(feature = "train")]
    {
        with_flag(&BF16_MATMUL, enabled && gemm_bf16::available(), f)
    }
    #[cfg(not(feature = "train"))]
    {
        let _ = enabled;
        f()
    }
}

/// Runs `f` with this thread's `flag` set to `value`, restoring it afterwards.
fn with_flag<T>(flag: &'static std::thread::LocalKey<std::cell::Cell<bool>>, value: bool, f: impl FnOnce() -> T) -> T {
    let before = flag.with(|c| c.replace(value));
    let out = f();
    flag.with(|c| c.set(before));
    out
}

/// Whether a convolution whose GEMM reduces over `depth` values (`c_in·k·k`) runs in bf16:
/// inside [`with_bf16_matmul`] and at least [`BF16_MIN_DEPTH`] deep.
#[cfg(feature = "train")]
fn conv_uses_bf16(depth: usize) -> bool {
    BF16_MATMUL.with(|c| c.get()) && depth >= BF16_MIN_DEPTH
}

#[cfg(not(feature = "train"))]
fn conv_uses_bf16(_depth: usize) -> bool {
    false
}

/// The matrix product of the convolutions, `a` the `(C_out, depth)` weights: bf16 where
/// [`conv_uses_bf16`], else candle's.
fn conv_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "train")]
    if conv_uses_bf16(a.dim(1)?) {
        return gemm_bf16::matmul(a, b);
    }
    matmul(a, b)
}

/// Runs `f` with the GPU code paths (candle's own kernels) on the CPU, on this thread: how
/// tests check, without a GPU, the code that a GPU runs.
pub fn with_gpu_paths<T>(f: impl FnOnce() -> T) -> T {
    with_flag(&CPU_FAST_PATHS, false, f)
}

/// Whether this thread runs moodmirror's CPU code paths (see [`with_gpu_paths`]).
pub(crate) fn cpu_fast_paths_enabled() -> bool {
    CPU_FAST_PATHS.with(|c| c.get())
}

/// These ops are written for the CPU; on a GPU candle's own kernels run instead.
pub(crate) fn fast_path(x: &Tensor) -> bool {
    x.device().is_cpu() && CPU_FAST_PATHS.with(|c| c.get())
}

/// Shallowest reduction (input values per output: `c_in·k·k`) that runs its GEMMs in bf16. The
/// first layer (one channel, 9 values) stays f32, as mixed-precision training keeps it: its GEMMs
/// are memory-bound, so bf16 saves nothing there, and its weight gradient sums 147 k products
/// per weight for a 64-image batch, where bf16 rounding of a gradient small against its terms
/// shows most (on the shipped distilled model its bf16 rounding reached 36 % of the batch-to-batch
/// difference; 15 % with this layer in f32: `tests/training.rs`).
#[cfg(feature = "train")]
const BF16_MIN_DEPTH: usize = 32;

/// 2-D convolution on a CBHW tensor. `weight` is `(C_out, C_in, k, k)`; returns
/// `(C_out, B, H_out, W_out)`.
pub fn conv2d_cbhw(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    let (c_out, c_in, kh, kw) = weight.dims4()?;
    let (xc, b, h, w) = x.dims4()?;
    if xc != c_in {
        candle_core::bail!("conv2d: input has {xc} channels, weight expects {c_in}");
    }
    let geometry = Conv2dGeometry::new(c_in, b, h, w, kh, kw, stride, padding)?;
    let out = if fast_path(x) && kh == 1 && kw == 1 && stride == 1 && padding == 0 {
        // A 1x1 convolution of a CBHW tensor is one matrix product, no im2col copy.
        conv_matmul(&weight.reshape((c_out, c_in))?, &x.contiguous()?.reshape((c_in, b * h * w))?)?.reshape((c_out, b, h, w))?
    } else if fast_path(x) && conv_uses_bf16(c_in * kh * kw) {
        bf16_conv(x, weight, geometry)?
    } else if fast_path(x) {
        let cols = im2col(x, geometry)?;
        let w2 = weight.reshape((c_out, c_in * kh * kw))?;
        let out = if c_out < 32 {
            // Few output channels make a GEMM with a tiny M; computing the transpose
            // (positions x channels) keeps gemm's kernels busy, one transpose copy costs less.
            matmul(&cols.t()?, &w2.t()?)?.t()?.contiguous()?
        } else {
            matmul(&w2, &cols)?
        };
        out.reshape((c_out, b, geometry.out_h, geometry.out_w))?
    } else {
        // GPU: candle's own kernels, with layout changes around them.
        x.transpose(0, 1)?.contiguous()?.conv2d(weight, padding, stride, 1, 1)?.transpose(0, 1)?.contiguous()?
    };
    match bias {
        Some(bias) => out.broadcast_add(&bias.reshape((c_out, 1, 1, 1))?),
        None => Ok(out),
    }
}

/// A convolution whose GEMM runs in bf16 (training only).
#[cfg(feature = "train")]
fn bf16_conv(x: &Tensor, weight: &Tensor, geometry: Conv2dGeometry) -> Result<Tensor> {
    let (c_out, c_in, kh, kw) = weight.dims4()?;
    let b = x.dim(1)?;
    let w2 = weight.reshape((c_out, c_in * kh * kw))?;
    conv_bf16::conv2d_bf16(x, &w2, geometry)?.reshape((c_out, b, geometry.out_h, geometry.out_w))
}

#[cfg(not(feature = "train"))]
fn bf16_conv(_x: &Tensor, _weight: &Tensor, _geometry: Conv2dGeometry) -> Result<Tensor> {
    candle_core::bail!("bf16 convolutions need moodmirror's `train` feature")
}

#[cfg(test)]
mod tests;
