//! Max-pooling over the two last dimensions with any kernel and stride (candle 0.11 has no
//! backward when they differ, e.g. the 3x3/2 pooling of ResNet/Xception stems).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32;

#[derive(Debug, Clone, Copy)]
struct Pool {
    kernel: usize,
    stride: usize,
    /// Implicit -inf border, as PyTorch's `padding`.
    padding: usize,
    /// PyTorch's `ceil_mode`: a last, partial window at the far edges.
    ceil: bool,
}

impl Pool {
    fn out_len(&self, len: usize) -> usize {
        let span = len + 2 * self.padding - self.kernel;
        if self.ceil {
            let n = span.div_ceil(self.stride) + 1;
            // PyTorch drops a last window that would start in the right padding.
            if (n - 1) * self.stride >= len + self.padding {
                n - 1
            } else {
                n
            }
        } else {
            span / self.stride + 1
        }
    }

    /// Input range of output index `o` along a dim of `len` (clipped to the image).
    fn span(&self, o: usize, len: usize) -> std::ops::Range<usize> {
        (o * self.stride).saturating_sub(self.padding)..(o * self.stride + self.kernel - self.padding).min(len)
    }

    /// Index in the input plane (h x w) of the maximum of window `(oy, ox)`.
    fn argmax(&self, plane: &[f32], h: usize, w: usize, oy: usize, ox: usize) -> usize {
        let y0 = (oy * self.stride).saturating_sub(self.padding);
        let y1 = (oy * self.stride + self.kernel - self.padding).min(h);
        let x0 = (ox * self.stride).saturating_sub(self.padding);
        let x1 = (ox * self.stride + self.kernel - self.padding).min(w);
        let mut best = y0 * w + x0;
        let mut best_value = plane[best];
        for y in y0..y1 {
            for x in x0..x1 {
                let v = plane[y * w + x];
                // `>` keeps the first maximum, as candle and PyTorch do; NaN propagates.
                if v > best_value || v.is_nan() {
                    best_value = v;
                    best = y * w + x;
                }
            }
        }
        best
    }
}

fn plane_dims(shape: &Shape) -> Result<(usize, usize, usize)> {
    let dims = shape.dims();
    if dims.len() < 2 {
        candle_core::bail!("max_pool2d: need at least 2 dims, got {shape:?}");
    }
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    Ok((shape.elem_count() / (h * w).max(1), h, w))
}

/// `max(a, b)` that propagates a NaN in `b` (and keeps one in `a`), as [`Pool::argmax`]'s `>`
/// with its NaN check; a select, so loops over it vectorise.
#[inline(always)]
fn fmax(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}

/// Maximum of a non-empty run (see [`fmax`]).
#[inline]
fn max_of(values: &[f32]) -> f32 {
    values[1..].iter().fold(values[0], |best, &v| fmax(best, v))
}

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        "moodmirror-max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let (planes, h, w) = plane_dims(layout.shape())?;
        let (oh, ow) = (self.out_len(h), self.out_len(w));
        let mut out = vec![0f32; planes * oh * ow];
        // Separable: for each output row the elementwise maximum of its input rows (vectorises),
        // then the maxima of that row's windows. The same values as window by window.
        out.par_chunks_mut(oh * ow).enumerate().for_each_init(Vec::new, |col, (p, dst)| {
            let plane = &x[p * h * w..][..h * w];
            for (oy, dst_row) in dst.chunks_mut(ow).enumerate() {
                let span = self.span(oy, h);
                col.clear();
                col.extend_from_slice(&plane[span.start * w..][..w]);
                for y in span.start + 1..span.end {
                    for (c, &v) in col.iter_mut().zip(&plane[y * w..][..w]) {
                        *c = fmax(*c, v);
                    }
                }
                let mut ox = 0;
                if self.kernel == 2 && self.stride == 2 && self.padding == 0 {
                    for (d, pair) in dst_row.iter_mut().zip(col.chunks_exact(2)) {
                        *d = fmax(pair[0], pair[1]);
                        ox += 1;
                    }
                }
                for (o, d) in dst_row.iter_mut().enumerate().skip(ox) {
                    *d = max_of(&col[self.span(o, w)]);
                }
            }
        });
        let mut dims = layout.shape().dims().to_vec();
        let n = dims.len();
        dims[n - 2] = oh;
        dims[n - 1] = ow;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = arg.apply_op2_no_bwd(&grad_res.contiguous()?, &PoolBackward(*self))?;
        Ok(Some(grad))
    }
}

/// (input, grad of output) → grad of input: each output gradient goes to its window's argmax.
struct PoolBackward(Pool);

impl CustomOp2 for PoolBackward {
    fn name(&self) -> &'static str {
        "moodmirror-max-pool2d-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let grad = contiguous_f32(s2, l2, self.name())?;
        let (planes, h, w) = plane_dims(l1.shape())?;
        let (oh, ow) = (self.0.out_len(h), self.0.out_len(w));
        let mut out = vec![0f32; planes * h * w];
        out.par_chunks_mut(h * w).enumerate().for_each(|(p, dst)| {
            let plane = &x[p * h * w..][..h * w];
            let g = &grad[p * oh * ow..][..oh * ow];
            for oy in 0..oh {
                for ox in 0..ow {
                    dst[self.0.argmax(plane, h, w, oy, ox)] += g[oy * ow + ox];
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Max-pooling of the two last dims (floor mode, `padding` < `kernel`), differentiable.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    pool(x, kernel, stride, padding, false)
}

/// PyTorch's `MaxPool2d(kernel, stride, ceil_mode=True)` (MTCNN's pooling).
pub fn max_pool2d_ceil(x: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    pool(x, kernel, stride, 0, true)
}

fn pool(x: &Tensor, kernel: usize, stride: usize, padding: usize, ceil: bool) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() < 2 || kernel == 0 || stride == 0 || padding >= kernel {
        candle_core::bail!("max_pool2d: bad arguments for shape {:?}", x.shape());
    }
    if dims[dims.len() - 2] + 2 * padding < kernel || dims[dims.len() - 1] + 2 * padding < kernel {
        candle_core::bail!("max_pool2d: input {:?} smaller than kernel {kernel}", x.shape());
    }
    if !super::fast_path(x) && padding == 0 && !ceil && kernel == stride {
        let (planes, h, w) = plane_dims(x.shape())?;
        if h % kernel == 0 && w % kernel == 0 {
            // GPU, non-overlapping windows: max over reshaped axes, whose gradient is right
            // (candle 0.11's max-pool gradient is k² too small, see the tests).
            let mut out_dims = x.dims().to_vec();
            let n = out_dims.len();
            out_dims[n - 2] = h / kernel;
            out_dims[n - 1] = w / kernel;
            return x.contiguous()?.reshape((planes, h / kernel, kernel, w / kernel, kernel))?.max(4)?.max(2)?.reshape(out_dims);
        }
    }
    if !super::fast_path(x) && padding == 0 {
        // GPU: candle's pooling (its backward needs kernel == stride, fine for inference).
        // Ceil mode: replicate the far edges, which never changes a window's maximum.
        let shape = x.shape().clone();
        let (planes, h, w) = plane_dims(&shape)?;
        let mut planar = x.reshape((planes, 1, h, w))?;
        if ceil {
            let probe = Pool { kernel, stride, padding, ceil };
            let pad = |n: usize, out: usize| ((out - 1) * stride + kernel).saturating_sub(n);
            planar = planar.pad_with_same(2, 0, pad(h, probe.out_len(h)))?.pad_with_same(3, 0, pad(w, probe.out_len(w)))?;
        }
        let pooled = planar.max_pool2d_with_stride(kernel, stride)?;
        let (_, _, oh, ow) = pooled.dims4()?;
        let mut out_dims = shape.dims().to_vec();
        let n = out_dims.len();
        out_dims[n - 2] = oh;
        out_dims[n - 1] = ow;
        return pooled.reshape(out_dims);
    }
    x.contiguous()?.apply_op1(Pool { kernel, stride, padding, ceil })
}
