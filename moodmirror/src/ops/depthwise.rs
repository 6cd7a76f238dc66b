//! Depthwise 2-D convolution (one k×k filter per channel) on CBHW tensors, with backward.
//! candle runs `groups == channels` as one convolution per channel, far too slow to train with.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32;

use super::im2col::Conv2dGeometry;

/// Visits every (input index, output index, weight index) triple of one channel's convolution.
#[inline]
fn for_each_tap(g: &Conv2dGeometry, mut f: impl FnMut(usize, usize, usize)) {
    let in_plane = g.in_h * g.in_w;
    let out_plane = g.out_h * g.out_w;
    for b in 0..g.batch {
        for ki in 0..g.kernel_h {
            for oy in 0..g.out_h {
                let iy = (oy * g.stride + ki) as isize - g.padding as isize;
                if iy < 0 || iy >= g.in_h as isize {
                    continue;
                }
                for kj in 0..g.kernel_w {
                    let widx = ki * g.kernel_w + kj;
                    for ox in 0..g.out_w {
                        let ix = (ox * g.stride + kj) as isize - g.padding as isize;
                        if ix < 0 || ix >= g.in_w as isize {
                            continue;
                        }
                        f(b * in_plane + iy as usize * g.in_w + ix as usize, b * out_plane + oy * g.out_w + ox, widx);
                    }
                }
            }
        }
    }
}

/// Forward: (x, w) → y.
struct Depthwise(Conv2dGeometry);
/// (grad y, w) → grad x.
struct DepthwiseGradInput(Conv2dGeometry);
/// (x, grad y) → grad w.
struct DepthwiseGradWeight(Conv2dGeometry);

impl CustomOp2 for Depthwise {
    fn name(&self) -> &'static str {
        "moodmirror-depthwise-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let (in_len, out_len, k) = (g.batch * g.in_h * g.in_w, g.batch * g.out_h * g.out_w, g.kernel_h * g.kernel_w);
        let mut out = vec![0f32; g.channels * out_len];
        out.par_chunks_mut(out_len).enumerate().for_each(|(c, y)| {
            let x = &x[c * in_len..][..in_len];
            let w = &w[c * k..][..k];
            for_each_tap(&g, |i, o, wi| y[o] += x[i] * w[wi]);
        });
        Ok((CpuStorage::F32(out), Shape::from((g.channels, g.batch, g.out_h, g.out_w))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let gx = grad.apply_op2_no_bwd(w, &DepthwiseGradInput(self.0))?;
        let gw = x.apply_op2_no_bwd(&grad, &DepthwiseGradWeight(self.0))?;
        Ok((Some(gx), Some(gw)))
    }
}

impl CustomOp2 for DepthwiseGradInput {
    fn name(&self) -> &'static str {
        "moodmirror-depthwise-conv2d-grad-input"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let gy = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let (in_len, out_len, k) = (g.batch * g.in_h * g.in_w, g.batch * g.out_h * g.out_w, g.kernel_h * g.kernel_w);
        let mut out = vec![0f32; g.channels * in_len];
        out.par_chunks_mut(in_len).enumerate().for_each(|(c, gx)| {
            let gy = &gy[c * out_len..][..out_len];
            let w = &w[c * k..][..k];
            for_each_tap(&g, |i, o, wi| gx[i] += gy[o] * w[wi]);
        });
        Ok((CpuStorage::F32(out), Shape::from((g.channels, g.batch, g.in_h, g.in_w))))
    }
}

impl CustomOp2 for DepthwiseGradWeight {
    fn name(&self) -> &'static str {
        "moodmirror-depthwise-conv2d-grad-weight"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = contiguous_f32(s1, l1, self.name())?;
        let gy = contiguous_f32(s2, l2, self.name())?;
        let (in_len, out_len, k) = (g.batch * g.in_h * g.in_w, g.batch * g.out_h * g.out_w, g.kernel_h * g.kernel_w);
        let mut out = vec![0f32; g.channels * k];
        out.par_chunks_mut(k).enumerate().for_each(|(c, gw)| {
            let x = &x[c * in_len..][..in_len];
            let gy = &gy[c * out_len..][..out_len];
            for_each_tap(&g, |i, o, wi| gw[wi] += x[i] * gy[o]);
        });
        Ok((CpuStorage::F32(out), Shape::from((g.channels, 1, g.kernel_h, g.kernel_w))))
    }
}

/// Depthwise convolution of a CBHW tensor with weight `(C, 1, k, k)`.
pub fn depthwise_conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (c, b, h, w) = x.dims4()?;
    let (wc, one, kh, kw) = weight.dims4()?;
    if wc != c || one != 1 {
        candle_core::bail!("depthwise_conv2d: weight {:?} does not match {c} input channels", weight.shape());
    }
    let g = Conv2dGeometry::new(c, b, h, w, kh, kw, stride, padding)?;
    if !super::fast_path(x) {
        return x.transpose(0, 1)?.contiguous()?.conv2d(weight, padding, stride, 1, c)?.transpose(0, 1)?.contiguous();
    }
    x.contiguous()?.apply_op2(&weight.contiguous()?, Depthwise(g))
}

/// `relu?(depthwise3x3(x + input_bias) + bias)` of a CBHW tensor, stride 1, zero padding 1;
/// `weight` `(C, 1, 3, 3)`, biases `(C)`: YuNet's pointwise → depthwise units with candle's
/// ops (GPUs, and the reference of the CPU kernels in `dpunit`).
pub fn depthwise3x3_bias_act(x: &Tensor, weight: &Tensor, input_bias: &Tensor, bias: &Tensor, relu: bool) -> Result<Tensor> {
    let c = x.dim(0)?;
    if weight.dims() != [c, 1, 3, 3] {
        candle_core::bail!("depthwise3x3: weight {:?} does not match {c} input channels", weight.shape());
    }
    let shifted = x.broadcast_add(&input_bias.reshape((c, 1, 1, 1))?)?;
    let y = depthwise_conv2d(&shifted, weight, 1, 1)?.broadcast_add(&bias.reshape((c, 1, 1, 1))?)?;
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}
