//! Direct convolution fused with bias and PReLU (ReLU with zero slopes), for inference: MTCNN's
//! layers and the emotion CNN's conv + folded batch norm + ReLU.
//!
//! With few input channels, `im2col` + GEMM spends more time copying the `im2col` matrix than
//! multiplying. Here each task keeps a 4-channel x 16-pixel block of outputs in eight AVX
//! registers and reads the input rows in place: two loads and eight fused multiply-adds per
//! kernel tap, with bias and activation applied on the way out. Rows narrower than 16 pixels go
//! to `im2col` + GEMM, which measured faster there.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32;

/// Output channels per register block.
const CO: usize = 4;
/// Output pixels per register block (one AVX vector).
const LANES: usize = 8;

struct ConvBiasPRelu;

/// Geometry of a stride-1, unpadded convolution of a CBHW tensor.
#[derive(Clone, Copy)]
struct Geometry {
    c_in: usize,
    batch: usize,
    h: usize,
    w: usize,
    k: usize,
    oh: usize,
    ow: usize,
}

/// Writes `prelu(acc + bias)` of lanes `lanes` of a register block to the output planes.
#[inline(always)]
fn store(
    acc: &[[f32; LANES]; CO],
    bias: &[f32],
    alpha: &[f32],
    plane_out: usize,
    at: usize,
    lanes: std::ops::Range<usize>,
    dst: &mut [f32],
) {
    for c in 0..bias.len() {
        for l in lanes.clone() {
            let v = acc[c][l] + bias[c];
            dst[c * plane_out + at + l] = if v > 0.0 { v } else { alpha[c] * v };
        }
    }
}

/// Offset of each kernel tap (`[ci][ky][kx]`) from the top-left input pixel of an output.
fn tap_offsets(g: Geometry) -> Vec<usize> {
    let mut offsets = Vec::with_capacity(g.c_in * g.k * g.k);
    for ci in 0..g.c_in {
        for ky in 0..g.k {
            for kx in 0..g.k {
                offsets.push((ci * g.batch * g.h + ky) * g.w + kx);
            }
        }
    }
    offsets
}

/// Portable version: one block of up to `CO` output channels over every image and row.
/// `wt` holds the block's weights tap-major (`[tap][c]`).
fn block_portable(x: &[f32], wt: &[f32], bias: &[f32], alpha: &[f32], g: Geometry, taps: &[usize], dst: &mut [f32]) {
    let plane_out = g.batch * g.oh * g.ow;
    let width = LANES.min(g.ow);
    for b in 0..g.batch {
        for oy in 0..g.oh {
            let row_out = (b * g.oh + oy) * g.ow;
            let row_in = (b * g.h + oy) * g.w;
            let mut x0 = 0;
            while x0 < g.ow {
                let start = if g.ow >= LANES { x0.min(g.ow - LANES) } else { 0 };
                let mut acc = [[0f32; LANES]; CO];
                for (tap, &off) in taps.iter().enumerate() {
                    let src = &x[row_in + off + start..][..width];
                    for c in 0..CO {
                        let wv = wt[tap * CO + c];
                        for (a, &v) in acc[c].iter_mut().zip(src) {
                            *a += wv * v;
                        }
                    }
                }
                store(&acc, bias, alpha, plane_out, row_out + start, x0 - start..width, dst);
                x0 = start + width;
            }
        }
    }
}

/// AVX2 + FMA version of [`block_portable`] for rows of at least 8 pixels: 4-channel x
/// 16-pixel blocks in eight registers (enough independent chains to keep both FMA units busy),
/// 8-pixel blocks where fewer than 16 pixels remain.
///
/// # Safety
///
/// The CPU has AVX2 and FMA; the buffers are as [`block_portable`] reads and writes them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(x: &[f32], wt: &[f32], bias: &[f32], alpha: &[f32], g: Geometry, taps: &[usize], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    const WIDE: usize = 2 * LANES;
    let plane_out = g.batch * g.oh * g.ow;
    for b in 0..g.batch {
        for oy in 0..g.oh {
            let row_out = (b * g.oh + oy) * g.ow;
            let row_in = (b * g.h + oy) * g.w;
            let mut x0 = 0;
            while x0 < g.ow {
                if g.ow - x0 < WIDE {
                    // 8 pixels (the last one overlapping its neighbour): one register per channel.
                    let start = x0.min(g.ow - LANES);
                    let mut acc = [_mm256_setzero_ps(); CO];
                    for (tap, &off) in taps.iter().enumerate() {
                        let src = &x[row_in + off + start..][..LANES];
                        let w = &wt[tap * CO..][..CO];
                        // SAFETY: `src` holds 8 floats (sliced above); unaligned load.
                        let v = unsafe { _mm256_loadu_ps(src.as_ptr()) };
                        for c in 0..CO {
                            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(w[c]), v, acc[c]);
                        }
                    }
                    let zero = _mm256_setzero_ps();
                    for c in 0..bias.len() {
                        let v = _mm256_add_ps(acc[c], _mm256_set1_ps(bias[c]));
                        let y = _mm256_fmadd_ps(_mm256_set1_ps(alpha[c]), _mm256_min_ps(v, zero), _mm256_max_ps(v, zero));
                        let out = &mut dst[c * plane_out + row_out + start..][..LANES];
                        // SAFETY: `out` holds 8 floats; unaligned store.
                        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), y) };
                    }
                    x0 = start + LANES;
                    continue;
                }
                let start = x0.min(g.ow - WIDE);
                let mut lo = [_mm256_setzero_ps(); CO];
                let mut hi = [_mm256_setzero_ps(); CO];
                for (tap, &off) in taps.iter().enumerate() {
                    let src = &x[row_in + off + start..][..WIDE];
                    let w = &wt[tap * CO..][..CO];
                    // SAFETY: `src` holds 16 floats (sliced above); unaligned loads.
                    let (v0, v1) = unsafe { (_mm256_loadu_ps(src.as_ptr()), _mm256_loadu_ps(src.as_ptr().add(LANES))) };
                    for c in 0..CO {
                        let wc = _mm256_set1_ps(w[c]);
                        lo[c] = _mm256_fmadd_ps(wc, v0, lo[c]);
                        hi[c] = _mm256_fmadd_ps(wc, v1, hi[c]);
                    }
                }
                // prelu(acc + bias) = max(v, 0) + alpha * min(v, 0), stored straight into the
                // output planes (an overlapping last block rewrites equal values).
                let zero = _mm256_setzero_ps();
                for c in 0..bias.len() {
                    let (bc, ac) = (_mm256_set1_ps(bias[c]), _mm256_set1_ps(alpha[c]));
                    let out = &mut dst[c * plane_out + row_out + start..][..WIDE];
                    for (half, acc) in [lo[c], hi[c]].into_iter().enumerate() {
                        let v = _mm256_add_ps(acc, bc);
                        let y = _mm256_fmadd_ps(ac, _mm256_min_ps(v, zero), _mm256_max_ps(v, zero));
                        // SAFETY: `out` holds 16 floats; unaligned store of 8 at 0 or 8.
                        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(half * LANES), y) };
                    }
                }
                x0 = start + WIDE;
            }
        }
    }
}

fn run_block(x: &[f32], wt: &[f32], bias: &[f32], alpha: &[f32], g: Geometry, taps: &[usize], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if g.ow >= LANES && super::cpu::has_avx2_fma() {
        // SAFETY: the CPU has the features `block_avx2` is compiled for.
        return unsafe { block_avx2(x, wt, bias, alpha, g, taps, dst) };
    }
    block_portable(x, wt, bias, alpha, g, taps, dst)
}

impl CustomOp3 for ConvBiasPRelu {
    fn name(&self) -> &'static str {
        "moodmirror-conv-bias-prelu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let params = contiguous_f32(s3, l3, self.name())?;
        let (c_in, batch, h, wd) = l1.shape().dims4()?;
        let (c_out, wc_in, k, k2) = l2.shape().dims4()?;
        if wc_in != c_in || k != k2 || k == 0 || h < k || wd < k || params.len() != 2 * c_out {
            candle_core::bail!("{}: input {:?}, weight {:?}, params {:?} do not fit", self.name(), l1.shape(), l2.shape(), l3.shape());
        }
        let g = Geometry { c_in, batch, h, w: wd, k, oh: h - k + 1, ow: wd - k + 1 };
        let plane_out = batch * g.oh * g.ow;
        let taps = c_in * k * k;
        let (bias, alpha) = params.split_at(c_out);
        let tap_offsets = tap_offsets(g);
        let mut out = vec![0f32; c_out * plane_out];
        out.par_chunks_mut(CO * plane_out).enumerate().for_each(|(blk, dst)| {
            let co0 = blk * CO;
            let n_co = dst.len() / plane_out;
            // Tap-major weights of this block, zero for the channels past c_out.
            let mut wt = vec![0f32; taps * CO];
            for c in 0..n_co {
                for tap in 0..taps {
                    wt[tap * CO + c] = w[(co0 + c) * taps + tap];
                }
            }
            run_block(x, &wt, &bias[co0..co0 + n_co], &alpha[co0..co0 + n_co], g, &tap_offsets, dst);
        });
        Ok((CpuStorage::F32(out), Shape::from((c_out, batch, g.oh, g.ow))))
    }
}

/// `prelu(conv2d(x, weight) + bias)` for a CBHW `x`, stride 1, no padding: MTCNN's layers.
/// Inference only; on a GPU candle's kernels run instead.
pub fn conv2d_bias_prelu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, alpha: &Tensor) -> Result<Tensor> {
    if !super::fast_path(x) {
        return super::bias_prelu(&super::conv2d_cbhw(x, weight, None, 1, 0)?, bias, alpha);
    }
    let bias = match bias {
        Some(b) => b.clone(),
        None => alpha.zeros_like()?,
    };
    let params = Tensor::cat(&[&bias, alpha], 0)?;
    x.contiguous()?.apply_op3_no_bwd(&weight.contiguous()?, &params, &ConvBiasPRelu)
}

/// `prelu(conv2d(x, weight) + bias)` with any stride and zero padding, for inference: the direct
/// convolution where it applies (stride 1, output rows of 16+ pixels; the padding as a copy of
/// the input with a zero border), `im2col` + GEMM and a fused bias+PReLU otherwise.
pub fn conv2d_bias_prelu_padded(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    alpha: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let k = weight.dim(3)?;
    let (_, _, h, w) = x.dims4()?;
    let out_w = (w + 2 * padding).saturating_sub(k) / stride.max(1) + 1;
    if stride == 1 && out_w >= 2 * LANES && super::fast_path(x) && h + 2 * padding >= k {
        let x = if padding > 0 { x.pad_with_zeros(2, padding, padding)?.pad_with_zeros(3, padding, padding)? } else { x.clone() };
        return conv2d_bias_prelu(&x, weight, bias, alpha);
    }
    super::bias_prelu(&super::conv2d_cbhw(x, weight, None, stride, padding)?, bias, alpha)
}
