//! `im2col` / `col2im` as candle custom ops, each the other's backward.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32;

/// Shape bookkeeping of one convolution over a CBHW tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeometry {
    pub channels: usize,
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Conv2dGeometry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        channels: usize,
        batch: usize,
        in_h: usize,
        in_w: usize,
        kernel_h: usize,
        kernel_w: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        if stride == 0 || kernel_h == 0 || kernel_w == 0 {
            candle_core::bail!("conv2d: stride and kernel must be positive");
        }
        if in_h + 2 * padding < kernel_h || in_w + 2 * padding < kernel_w {
            candle_core::bail!("conv2d: input {in_h}x{in_w} (padding {padding}) smaller than kernel {kernel_h}x{kernel_w}");
        }
        Ok(Self {
            channels,
            batch,
            in_h,
            in_w,
            kernel_h,
            kernel_w,
            stride,
            padding,
            out_h: (in_h + 2 * padding - kernel_h) / stride + 1,
            out_w: (in_w + 2 * padding - kernel_w) / stride + 1,
        })
    }

    pub(crate) fn rows(&self) -> usize {
        self.channels * self.kernel_h * self.kernel_w
    }

    pub(crate) fn cols(&self) -> usize {
        self.batch * self.out_h * self.out_w
    }

    /// Output positions `ox` whose input column `ox*stride + k - padding` lies inside the image.
    fn valid_range(&self, k: usize, out_len: usize, in_len: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = self.padding.saturating_sub(k).div_ceil(s);
        let hi = (in_len + self.padding).saturating_sub(k).div_ceil(s).min(out_len);
        (lo.min(hi), hi)
    }
}

struct Im2Col(Conv2dGeometry);
struct Col2Im(Conv2dGeometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "moodmirror-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = contiguous_f32(storage, layout, self.name())?;
        let mut out = vec![0f32; g.rows() * g.cols()];
        im2col_into(x, g, &mut out, false);
        Ok((CpuStorage::F32(out), Shape::from((g.rows(), g.cols()))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(col2im(grad_res, self.0)?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "moodmirror-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let cols = contiguous_f32(storage, layout, self.name())?;
        let mut out = vec![0f32; g.channels * g.batch * g.in_h * g.in_w];
        col2im_add(cols, g, &mut out);
        Ok((CpuStorage::F32(out), Shape::from((g.channels, g.batch, g.in_h, g.in_w))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(im2col(grad_res, self.0)?))
    }
}

/// Writes the `(C·kh·kw, B·H_out·W_out)` columns of the CBHW image `x` into `out`. With
/// `clear_padding` the positions that fall on the zero border are written too (for a reused,
/// dirty buffer); without, they are left as they are (a zeroed buffer).
pub(crate) fn im2col_into(x: &[f32], g: Conv2dGeometry, out: &mut [f32], clear_padding: bool) {
    let ncols = g.cols();
    let plane = g.in_h * g.in_w;
    let out_plane = g.out_h * g.out_w;
    out[..g.rows() * ncols].par_chunks_mut(ncols).enumerate().for_each(|(row, dst)| {
        let c = row / (g.kernel_h * g.kernel_w);
        let ki = (row / g.kernel_w) % g.kernel_h;
        let kj = row % g.kernel_w;
        let (ox0, ox1) = g.valid_range(kj, g.out_w, g.in_w);
        let (oy0, oy1) = g.valid_range(ki, g.out_h, g.in_h);
        for b in 0..g.batch {
            let src = &x[(c * g.batch + b) * plane..][..plane];
            let dst = &mut dst[b * out_plane..][..out_plane];
            if clear_padding {
                dst[..oy0 * g.out_w].fill(0.0);
                dst[oy1 * g.out_w..].fill(0.0);
            }
            for oy in oy0..oy1 {
                let iy = oy * g.stride + ki - g.padding;
                let src_row = &src[iy * g.in_w..][..g.in_w];
                let dst_row = &mut dst[oy * g.out_w..][..g.out_w];
                if clear_padding {
                    dst_row[..ox0].fill(0.0);
                    dst_row[ox1..].fill(0.0);
                }
                if g.stride == 1 {
                    let ix0 = ox0 + kj - g.padding;
                    dst_row[ox0..ox1].copy_from_slice(&src_row[ix0..ix0 + (ox1 - ox0)]);
                } else {
                    for ox in ox0..ox1 {
                        dst_row[ox] = src_row[ox * g.stride + kj - g.padding];
                    }
                }
            }
        }
    });
}

/// Adds the columns `cols` (`(C·kh·kw, B·H_out·W_out)`) back onto the CBHW image `out`,
/// summing overlaps: the adjoint of [`im2col_into`].
pub(crate) fn col2im_add(cols: &[f32], g: Conv2dGeometry, out: &mut [f32]) {
    let ncols = g.cols();
    let plane = g.in_h * g.in_w;
    let out_plane = g.out_h * g.out_w;
    // One channel per task: the k*k rows of a channel all add into that channel only.
    out.par_chunks_mut(g.batch * plane).enumerate().for_each(|(c, dst)| {
        for ki in 0..g.kernel_h {
            let (oy0, oy1) = g.valid_range(ki, g.out_h, g.in_h);
            for kj in 0..g.kernel_w {
                let (ox0, ox1) = g.valid_range(kj, g.out_w, g.in_w);
                let row = (c * g.kernel_h + ki) * g.kernel_w + kj;
                let src = &cols[row * ncols..][..ncols];
                for b in 0..g.batch {
                    let src = &src[b * out_plane..][..out_plane];
                    let dst = &mut dst[b * plane..][..plane];
                    for oy in oy0..oy1 {
                        let iy = oy * g.stride + ki - g.padding;
                        let src_row = &src[oy * g.out_w..][..g.out_w];
                        let dst_row = &mut dst[iy * g.in_w..][..g.in_w];
                        for ox in ox0..ox1 {
                            dst_row[ox * g.stride + kj - g.padding] += src_row[ox];
                        }
                    }
                }
            }
        }
    });
}

/// `(C, B, H, W)` → `(C·kh·kw, B·H_out·W_out)`, differentiable.
pub fn im2col(x: &Tensor, geometry: Conv2dGeometry) -> Result<Tensor> {
    let g = geometry;
    let expected = (g.channels, g.batch, g.in_h, g.in_w);
    if x.dims4()? != expected {
        candle_core::bail!("im2col: input shape {:?}, expected {expected:?}", x.shape());
    }
    x.contiguous()?.apply_op1(Im2Col(geometry))
}

/// Adjoint of [`im2col`]: `(C·kh·kw, B·H_out·W_out)` → `(C, B, H, W)`, summing overlaps.
pub fn col2im(cols: &Tensor, geometry: Conv2dGeometry) -> Result<Tensor> {
    let expected = (geometry.rows(), geometry.cols());
    if cols.dims2()? != expected {
        candle_core::bail!("col2im: input shape {:?}, expected {expected:?}", cols.shape());
    }
    cols.contiguous()?.apply_op1(Col2Im(geometry))
}
