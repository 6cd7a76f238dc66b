//! Dense layers for inference on small batches (the per-frame faces).
//!
//! candle's product, through `gemm`, repacks the whole weight matrix on every call: 2.4 MB for
//! the emotion net's first dense layer, 0.4 ms of the streaming thread per frame on a crowded
//! clip. Here each weight row is read once per batch, straight from its (c_out, c_in) layout,
//! and every output sums in one fixed order: an image's outputs do not depend on the rest of
//! its batch, nor on how the rows are split among threads. The weights are stored as i8 with
//! one scale per row (the inputs stay f32): a few faces per frame make the layer a stream of
//! its weights from memory (evicted by the decoder's frames in between), and a quarter of the
//! bytes took its time from 0.43 to 0.16 ms per frame (perf, crowded clip).

use candle_core::{Result, Tensor};
use rayon::prelude::*;

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 32;

/// Batches of at least this many multiply-adds run their rows on rayon's threads; below it
/// (the emotion net's first dense layer on up to six faces: about 0.1 ms), handing the work to the
/// pool and waiting for it costs about as much as the work.
const PARALLEL_MULTIPLY_ADDS: usize = 1 << 22;

/// A dense layer's weights as plain f32 rows.
#[derive(Debug, Clone)]
pub struct DenseRows {
    c_in: usize,
    c_out: usize,
    /// `(c_out, c_in)`, row-major, each row quantised to ±127.
    weight: Vec<i8>,
    /// Per row: quantised weight × scale = weight.
    scale: Vec<f32>,
    bias: Vec<f32>,
    fma: bool,
}

impl DenseRows {
    /// From a dense layer's `(c_out, c_in)` weight and its bias.
    pub fn new(weight: &Tensor, bias: &Tensor) -> Result<Self> {
        let (c_out, c_in) = weight.dims2()?;
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (plain, bias) = (flat(weight)?, flat(bias)?);
        if bias.len() != c_out || plain.len() != c_out * c_in {
            candle_core::bail!("dense layer ({c_out}, {c_in}) with {} weights and {} biases", plain.len(), bias.len());
        }
        let mut weight = Vec::with_capacity(plain.len());
        let mut scale = Vec::with_capacity(c_out);
        for row in plain.chunks_exact(c_in.max(1)) {
            let largest = row.iter().fold(0f32, |m, w| m.max(w.abs()));
            let s = if largest > 0.0 { largest / 127.0 } else { 1.0 };
            weight.extend(row.iter().map(|w| (w / s).round().clamp(-127.0, 127.0) as i8));
            scale.push(s);
        }
        Ok(Self { c_in, c_out, weight, scale, bias, fma: fma_here() })
    }

    pub fn c_in(&self) -> usize {
        self.c_in
    }

    pub fn c_out(&self) -> usize {
        self.c_out
    }

    /// `n` inputs of `c_in` back to back → `out` (`n·c_out`, row-major); `relu` clamps at 0.
    /// `by_row` is working memory.
    pub fn forward(&self, x: &[f32], n: usize, relu: bool, by_row: &mut Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        if x.len() < n * self.c_in {
            candle_core::bail!("dense layer: {} inputs for {n} rows of {}", x.len(), self.c_in);
        }
        out.clear();
        out.resize(n * self.c_out, 0.0);
        if n == 0 {
            return Ok(());
        }
        // `(c_out, n)` while computing, so that each task owns whole blocks of rows.
        by_row.clear();
        by_row.resize(n * self.c_out, 0.0);
        let x = &x[..n * self.c_in];
        let task = |(block, dst): (usize, &mut [f32])| {
            for (r, dst) in dst.chunks_exact_mut(n).enumerate() {
                let o = block * ROWS_PER_TASK + r;
                let row = &self.weight[o * self.c_in..(o + 1) * self.c_in];
                self.row_times_inputs(row, x, dst);
                for d in dst.iter_mut() {
                    *d = *d * self.scale[o] + self.bias[o];
                    if relu {
                        *d = d.max(0.0);
                    }
                }
            }
        };
        if n * self.weight.len() >= PARALLEL_MULTIPLY_ADDS {
            by_row.par_chunks_mut(ROWS_PER_TASK * n).enumerate().for_each(task);
        } else {
            by_row.chunks_mut(ROWS_PER_TASK * n).enumerate().for_each(task);
        }
        for (o, row) in by_row.chunks_exact(n).enumerate() {
            for (b, v) in row.iter().enumerate() {
                out[b * self.c_out + o] = *v;
            }
        }
        Ok(())
    }

    /// `dst[b] = row · x[b]` for every input `b`.
    fn row_times_inputs(&self, row: &[i8], x: &[f32], dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.fma {
            // SAFETY: `fma` is set only where the CPU has AVX2 and FMA (`fma_here`); the
            // function reads `row.len()` values of each input, which `forward` checked.
            unsafe { avx2::row_times_inputs(row, x, dst) };
            return;
        }
        for (d, input) in dst.iter_mut().zip(x.chunks_exact(row.len())) {
            *d = dot(row, input);
        }
    }
}

fn fma_here() -> bool {
    super::cpu::has_avx2_fma()
}

/// `a · b` with eight partial sums (a fixed order the compiler can vectorise).
fn dot(a: &[i8], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| *x as f32 * y).sum();
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            lanes[l] += x[l] as f32 * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Inputs per pass over a row: each 8-float piece of the row, loaded once, meets four
    /// inputs, two accumulators each (eight FMA chains in flight).
    const INPUTS: usize = 4;

    /// Eight i8 weights at `at`, as f32.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2; eight bytes are readable at `at`.
    #[inline(always)]
    unsafe fn widen(at: *const i8) -> __m256 {
        // SAFETY: the caller upholds this function's contract (its `# Safety` section).
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(at as *const __m128i))) }
    }

    /// `dst[b] = row · x[b]`; every input sums in the same order, alone or with others.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA; `x` holds `dst.len()` inputs of `row.len()` values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_times_inputs(row: &[i8], x: &[f32], dst: &mut [f32]) {
        let k = row.len();
        let pairs = k / 16;
        for (group, dst) in dst.chunks_mut(INPUTS).enumerate() {
            let n = dst.len();
            let mut acc = [[_mm256_setzero_ps(); 2]; INPUTS];
            // SAFETY: chunk i reads row[16i..16i+16] and the same span of each of the `n`
            // inputs of this group, all within `x` (the caller's contract).
            unsafe {
                let inputs: [*const f32; INPUTS] = std::array::from_fn(|b| x.as_ptr().add((group * INPUTS + b.min(n - 1)) * k));
                for i in 0..pairs {
                    let (r0, r1) = (widen(row.as_ptr().add(16 * i)), widen(row.as_ptr().add(16 * i + 8)));
                    for b in 0..n {
                        acc[b][0] = _mm256_fmadd_ps(r0, _mm256_loadu_ps(inputs[b].add(16 * i)), acc[b][0]);
                        acc[b][1] = _mm256_fmadd_ps(r1, _mm256_loadu_ps(inputs[b].add(16 * i + 8)), acc[b][1]);
                    }
                }
                for b in 0..n {
                    let mut lanes = [0f32; 8];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc[b][0], acc[b][1]));
                    let tail: f32 = (pairs * 16..k).map(|j| row[j] as f32 * *inputs[b].add(j)).sum();
                    dst[b] = lanes.iter().sum::<f32>() + tail;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn equals_the_f32_product_and_an_input_alone_its_result_in_a_batch() {
        // 100 inputs: a tail after the 16-weight pieces; 40 outputs: a partial block of rows.
        let weight = Tensor::rand(-0.1f32, 0.1, (40, 100), &Device::Cpu).unwrap();
        let bias = Tensor::rand(-0.5f32, 0.5, 40, &Device::Cpu).unwrap();
        let n = 6;
        let x: Vec<f32> = (0..n * 100).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let xt = Tensor::from_slice(&x, (n, 100), &Device::Cpu).unwrap();
        let f32_out = xt.matmul(&weight.t().unwrap()).unwrap().broadcast_add(&bias).unwrap().to_vec2::<f32>().unwrap();
        let rows = DenseRows::new(&weight, &bias).unwrap();
        // The quantised weights' exact products, and the f32 layer's within their rounding.
        let bias = bias.to_vec1::<f32>().unwrap();
        let exact = |b: usize, o: usize| {
            let row = &rows.weight[o * 100..(o + 1) * 100];
            let sum: f64 = row.iter().zip(&x[b * 100..(b + 1) * 100]).map(|(w, v)| *w as f64 * *v as f64).sum();
            sum * rows.scale[o] as f64 + bias[o] as f64
        };
        let (mut scratch, mut out, mut alone) = (Vec::new(), Vec::new(), Vec::new());
        // The vector path where this CPU has one, and the portable one.
        for rows in [rows.clone(), DenseRows { fma: false, ..rows.clone() }] {
            rows.forward(&x, n, false, &mut scratch, &mut out).unwrap();
            for (b, want) in f32_out.iter().enumerate() {
                for (o, w) in want.iter().enumerate() {
                    let got = out[b * 40 + o];
                    assert!((got as f64 - exact(b, o)).abs() < 1e-5, "input {b} output {o}: {got} vs {}", exact(b, o));
                    assert!((got - w).abs() < 0.01, "input {b} output {o}: {got} vs f32 {w}");
                }
                rows.forward(&x[b * 100..(b + 1) * 100], 1, false, &mut scratch, &mut alone).unwrap();
                assert_eq!(alone[..], out[b * 40..(b + 1) * 40], "input {b} alone (fma path: {})", rows.fma);
            }
        }
        rows.forward(&x, n, true, &mut scratch, &mut out).unwrap();
        assert!(out.iter().all(|v| *v >= 0.0));
        assert!(rows.forward(&x[..99], 1, false, &mut scratch, &mut out).is_err());
        rows.forward(&[], 0, false, &mut scratch, &mut out).unwrap();
        assert!(out.is_empty());
    }
}
