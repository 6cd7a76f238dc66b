//! The matrix product of the CPU paths, with its thread count taken from rayon's pool.
//!
//! candle's `matmul` asks `candle_core::utils::get_num_threads()` on every call, which reads
//! `RAYON_NUM_THREADS` or else parses /proc/cpuinfo (a third of MTCNN's time, measured). The
//! plugin may not set that variable in a process it shares with others, so the products of the
//! per-frame networks call `gemm` (the crate candle itself uses) directly with rayon's count.
//! The backward pass is candle's, as before.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

struct MatMul;

/// `(rows, cols)`, row stride, column stride and start of a 2-D f32 operand.
fn operand<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<(&'a [f32], usize, usize, isize, isize)> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("matmul: {what} must be f32");
    };
    let (rows, cols) = layout.shape().dims2()?;
    let stride = layout.stride();
    let data = &data[layout.start_offset()..];
    // The furthest element read must be inside the storage.
    let last = (rows.saturating_sub(1)) * stride[0] + cols.saturating_sub(1) * stride[1];
    if rows > 0 && cols > 0 && last >= data.len() {
        candle_core::bail!("matmul: {what} layout reaches past its storage");
    }
    Ok((data, rows, cols, stride[0] as isize, stride[1] as isize))
}

impl CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        "moodmirror-matmul"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, m, k, a_rs, a_cs) = operand(s1, l1, "lhs")?;
        let (b, k2, n, b_rs, b_cs) = operand(s2, l2, "rhs")?;
        if k != k2 {
            candle_core::bail!("matmul: ({m}, {k}) x ({k2}, {n})");
        }
        let mut out = vec![0f32; m * n];
        let threads = rayon::current_num_threads();
        let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        if m > 0 && n > 0 {
            // SAFETY: the operands' strides and extents were checked against their storage
            // above, and `out` is a dense (m, n) row-major matrix.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    a_cs,
                    a_rs,
                    b.as_ptr(),
                    b_cs,
                    b_rs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                )
            };
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(&b.t()?)?), Some(a.t()?.matmul(grad)?)))
    }
}

/// `a · b` for 2-D tensors: `MatMul` on the CPU's fast paths, candle's elsewhere (GPUs, other
/// dtypes).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if super::fast_path(a) && a.dtype() == candle_core::DType::F32 && b.dtype() == candle_core::DType::F32 && a.rank() == 2 && b.rank() == 2
    {
        a.apply_op2(b, MatMul)
    } else {
        a.matmul(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn equals_candles_product_on_plain_and_transposed_operands() {
        let a = Tensor::arange(0f32, 35.0, &Device::Cpu).unwrap().reshape((5, 7)).unwrap();
        let b = Tensor::arange(0f32, 21.0, &Device::Cpu).unwrap().reshape((7, 3)).unwrap().affine(0.5, -1.0).unwrap();
        let expected = a.matmul(&b).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(matmul(&a, &b).unwrap().to_vec2::<f32>().unwrap(), expected);
        let bt = b.t().unwrap().contiguous().unwrap();
        assert_eq!(matmul(&a, &bt.t().unwrap()).unwrap().to_vec2::<f32>().unwrap(), expected);
        let at = a.t().unwrap().contiguous().unwrap();
        assert_eq!(matmul(&at.t().unwrap(), &b).unwrap().to_vec2::<f32>().unwrap(), expected);
        assert!(matmul(&a, &a).is_err());
        // Gradients flow as through candle's product.
        let va = candle_core::Var::from_tensor(&a).unwrap();
        let grads = matmul(va.as_tensor(), &b).unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads.get(va.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        let row_sums: Vec<f32> = b.sum(1).unwrap().to_vec1().unwrap();
        assert!(g.iter().all(|r| r == &row_sums));
    }
}
