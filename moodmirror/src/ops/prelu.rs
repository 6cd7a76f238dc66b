//! `prelu(x + bias)` per channel in one pass: MTCNN's convolution → PReLU and dense → PReLU.
//! Composed of candle ops this takes an add, two relus, a negation, a multiplication and a
//! subtraction, each a full pass over the activation and a fresh allocation.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32;

struct BiasPRelu;

/// Where the channel index of element `i` comes from.
enum ChannelLayout {
    /// CBHW: channel-major planes of `plane` elements.
    Planes { plane: usize },
    /// (N, C): channel = last index.
    Rows { channels: usize },
}

fn channel_layout(shape: &Shape, channels: usize) -> Result<ChannelLayout> {
    let dims = shape.dims();
    match dims.len() {
        4 if dims[0] == channels => Ok(ChannelLayout::Planes { plane: shape.elem_count() / channels.max(1) }),
        2 if dims[1] == channels => Ok(ChannelLayout::Rows { channels }),
        _ => candle_core::bail!("bias_prelu: {shape:?} has no channel dim of {channels}"),
    }
}

#[inline]
fn prelu(v: f32, a: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        a * v
    }
}

impl CustomOp3 for BiasPRelu {
    fn name(&self) -> &'static str {
        "moodmirror-bias-prelu"
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
        let bias = contiguous_f32(s2, l2, self.name())?;
        let alpha = contiguous_f32(s3, l3, self.name())?;
        if bias.len() != alpha.len() {
            candle_core::bail!("bias_prelu: {} biases for {} slopes", bias.len(), alpha.len());
        }
        let mut out = vec![0f32; x.len()];
        match channel_layout(l1.shape(), alpha.len())? {
            ChannelLayout::Planes { plane } if plane > 0 => {
                out.par_chunks_mut(plane).zip(x.par_chunks(plane)).enumerate().for_each(|(c, (dst, src))| {
                    let (b, a) = (bias[c], alpha[c]);
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = prelu(v + b, a);
                    }
                });
            }
            ChannelLayout::Planes { .. } => {}
            ChannelLayout::Rows { channels } => {
                for (dst, src) in out.chunks_mut(channels).zip(x.chunks(channels)) {
                    for c in 0..channels {
                        dst[c] = prelu(src[c] + bias[c], alpha[c]);
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `prelu(x + bias)` with per-channel `bias` and slope `alpha`: channel dim 0 of a CBHW tensor
/// or the last dim of an (N, C) one. Inference only (no gradient).
pub fn bias_prelu(x: &Tensor, bias: Option<&Tensor>, alpha: &Tensor) -> Result<Tensor> {
    let c = alpha.dim(0)?;
    let zeros;
    let bias = match bias {
        Some(b) => b,
        None => {
            zeros = alpha.zeros_like()?;
            &zeros
        }
    };
    if !super::fast_path(x) {
        let shape: Vec<usize> = if x.rank() == 4 { vec![c, 1, 1, 1] } else { vec![1, c] };
        let x = x.broadcast_add(&bias.reshape(shape.as_slice())?)?;
        let a = alpha.reshape(shape.as_slice())?;
        // max(0, x) + a * min(0, x)
        return x.relu()? - x.neg()?.relu()?.broadcast_mul(&a)?;
    }
    x.contiguous()?.apply_op3_no_bwd(&bias.contiguous()?, &alpha.contiguous()?, &BiasPRelu)
}
