//! A convolution for training as one custom op: im2col + bf16 GEMM forward, and a backward
//! that computes the weight and input gradients itself.
//!
//! Composed of `im2col` and `matmul` ops, the column matrix (`C·k·k x B·H·W`, up to 42 MB per
//! layer at batch 64) is a node of candle's graph: kept alive until the backward pass, and its
//! gradient is materialised, zero-initialised and summed by candle's backprop (a memset and an
//! add over every column gradient: a sixth of a bf16 training step). Here the columns live in a
//! reused scratch buffer and are rebuilt for the weight gradient; only the convolution's
//! output gradient goes through the graph.

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::contiguous_f32;
use super::gemm_bf16::{matmul_into, matmul_new, MatrixView};
use super::im2col::{col2im_add, im2col_into, Conv2dGeometry};

thread_local! {
    /// Column matrices of the forward and backward passes, reused (the first steps grow them).
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer of `len` values (contents undefined: `f` overwrites them).
fn with_columns<T>(len: usize, f: impl FnOnce(&mut [f32]) -> T) -> T {
    super::with_scratch(&COLUMNS, |buffer| {
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        f(&mut buffer[..len])
    })
}

fn row_major(data: &[f32], rows: usize, cols: usize) -> MatrixView<'_> {
    MatrixView { data, rows, cols, row_stride: cols, col_stride: 1 }
}

/// `(C_in, B, H, W)` ⊛ `(C_out, C_in·k·k)` → `(C_out, B·H_out·W_out)`.
struct Conv2dBf16(Conv2dGeometry);
/// `(x, grad_out)` → the weight gradient `(C_out, C_in·k·k)`.
struct WeightGradient(Conv2dGeometry);
/// `(weight, grad_out)` → the input gradient `(C_in, B, H, W)`.
struct InputGradient(Conv2dGeometry);

impl CustomOp2 for Conv2dBf16 {
    fn name(&self) -> &'static str {
        "moodmirror-conv2d-bf16"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = contiguous_f32(xs, xl, self.name())?;
        let w = contiguous_f32(ws, wl, self.name())?;
        let c_out = wl.shape().dims2()?.0;
        let out = with_columns(g.rows() * g.cols(), |cols| {
            im2col_into(x, g, cols, true);
            matmul_new(&row_major(w, c_out, g.rows()), &row_major(cols, g.rows(), g.cols()))
        })?;
        Ok((CpuStorage::F32(out), Shape::from((c_out, g.cols()))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dw = x.apply_op2_no_bwd(&grad, &WeightGradient(self.0))?;
        let dx = w.apply_op2_no_bwd(&grad, &InputGradient(self.0))?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp2 for WeightGradient {
    fn name(&self) -> &'static str {
        "moodmirror-conv2d-bf16-weight-grad"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = contiguous_f32(xs, xl, self.name())?;
        let grad = contiguous_f32(gs, gl, self.name())?;
        let c_out = gl.shape().dims2()?.0;
        let dw = with_columns(g.rows() * g.cols(), |cols| {
            // The columns again (cheaper than keeping every layer's until the backward pass).
            im2col_into(x, g, cols, true);
            let columns_t = MatrixView { data: cols, rows: g.cols(), cols: g.rows(), row_stride: 1, col_stride: g.cols() };
            matmul_new(&row_major(grad, c_out, g.cols()), &columns_t)
        })?;
        Ok((CpuStorage::F32(dw), Shape::from((c_out, g.rows()))))
    }
}

impl CustomOp2 for InputGradient {
    fn name(&self) -> &'static str {
        "moodmirror-conv2d-bf16-input-grad"
    }

    fn cpu_fwd(&self, ws: &CpuStorage, wl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let w = contiguous_f32(ws, wl, self.name())?;
        let grad = contiguous_f32(gs, gl, self.name())?;
        let c_out = gl.shape().dims2()?.0;
        let mut dx = vec![0f32; g.channels * g.batch * g.in_h * g.in_w];
        with_columns(g.rows() * g.cols(), |cols| -> Result<()> {
            let w_t = MatrixView { data: w, rows: g.rows(), cols: c_out, row_stride: 1, col_stride: g.rows() };
            matmul_into(&w_t, &row_major(grad, c_out, g.cols()), cols)?;
            col2im_add(cols, g, &mut dx);
            Ok(())
        })?;
        Ok((CpuStorage::F32(dx), Shape::from((g.channels, g.batch, g.in_h, g.in_w))))
    }
}

/// Convolution of the CBHW `x` with `weight` reshaped to `(C_out, C_in·k·k)`, as
/// `(C_out, B·H_out·W_out)`, in bf16 GEMMs (needs [`super::gemm_bf16::available`]).
pub fn conv2d_bf16(x: &Tensor, weight: &Tensor, geometry: Conv2dGeometry) -> Result<Tensor> {
    let (c_out, k) = weight.dims2()?;
    let g = geometry;
    if x.dims4()? != (g.channels, g.batch, g.in_h, g.in_w) || k != g.rows() {
        candle_core::bail!("conv2d-bf16: input {:?} and weight ({c_out}, {k}) do not fit {g:?}", x.shape());
    }
    x.contiguous()?.apply_op2(&weight.contiguous()?, Conv2dBf16(geometry))
}
