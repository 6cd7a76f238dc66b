//! Training-mode batch norm fused with ReLU on CBHW tensors: one pass for the statistics and
//! one for the output, and two for the backward, instead of the ~30 element-wise passes that
//! the same computation takes as separate candle ops. Every channel is one contiguous slice.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32;

/// Per-channel mean and (biased) variance of the last forward, for the running statistics.
pub type BatchStats = Arc<Mutex<Vec<f32>>>;

struct BnRelu {
    eps: f32,
    /// `[mean; C]` then `[var; C]`, written by the forward.
    stats: BatchStats,
}

fn channel_slices(len: usize, layout: &Layout) -> Result<(usize, usize)> {
    let c = layout.dims().first().copied().unwrap_or(0);
    if c == 0 || !len.is_multiple_of(c) {
        candle_core::bail!("batch_norm_relu: bad shape {:?}", layout.shape());
    }
    Ok((c, len / c))
}

impl CustomOp3 for BnRelu {
    fn name(&self) -> &'static str {
        "moodmirror-batch-norm-relu"
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
        let gamma = contiguous_f32(s2, l2, self.name())?;
        let beta = contiguous_f32(s3, l3, self.name())?;
        let (c, n) = channel_slices(x.len(), l1)?;
        if gamma.len() != c || beta.len() != c {
            candle_core::bail!("batch_norm_relu: {c} channels, {} scales, {} shifts", gamma.len(), beta.len());
        }
        let mut out = vec![0f32; x.len()];
        let stats: Vec<(f32, f32)> = out
            .par_chunks_mut(n)
            .enumerate()
            .map(|(ch, y)| {
                let xs = &x[ch * n..][..n];
                let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
                let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
                let inv_std = 1.0 / (var as f32 + self.eps).sqrt();
                let scale = gamma[ch] * inv_std;
                let shift = beta[ch] - mean as f32 * scale;
                for (o, &v) in y.iter_mut().zip(xs) {
                    *o = (v * scale + shift).max(0.0);
                }
                (mean as f32, var as f32)
            })
            .collect();
        let mut saved = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        saved.clear();
        saved.extend(stats.iter().map(|s| s.0));
        saved.extend(stats.iter().map(|s| s.1));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = gamma.elem_count();
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut params = gamma.to_vec1::<f32>()?;
        params.extend(beta.to_vec1::<f32>()?);
        params.extend_from_slice(&stats[..c]);
        params.extend(stats[c..].iter().map(|v| 1.0 / (v + self.eps).sqrt()));
        let params = Tensor::from_vec(params, 4 * c, x.device())?;
        let grad = grad.contiguous()?;
        let dgb = x.apply_op3_no_bwd(&grad, &params, &GradParams)?;
        let all = Tensor::cat(&[&params, &dgb.flatten_all()?], 0)?;
        let dx = x.apply_op3_no_bwd(&grad, &all, &GradInput)?;
        let dgamma = dgb.narrow(0, 0, 1)?.flatten_all()?;
        let dbeta = dgb.narrow(0, 1, 1)?.flatten_all()?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// (x, grad y, [gamma, beta, mean, inv_std]) → (2, C): [d gamma; d beta].
struct GradParams;
/// (x, grad y, [gamma, beta, mean, inv_std, d gamma, d beta]) → d x.
struct GradInput;

/// The upstream gradient where the ReLU was open, with the normalised input.
#[inline]
fn open_grad(v: f32, g: f32, mean: f32, inv_std: f32, gamma: f32, beta: f32) -> (f32, f32) {
    let xhat = (v - mean) * inv_std;
    let g = if xhat * gamma + beta > 0.0 { g } else { 0.0 };
    (g, xhat)
}

impl CustomOp3 for GradParams {
    fn name(&self) -> &'static str {
        "moodmirror-batch-norm-relu-grad-params"
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
        let gy = contiguous_f32(s2, l2, self.name())?;
        let p = contiguous_f32(s3, l3, self.name())?;
        let (c, n) = channel_slices(x.len(), l1)?;
        let sums: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (gamma, beta, mean, inv_std) = (p[ch], p[c + ch], p[2 * c + ch], p[3 * c + ch]);
                let (mut dgamma, mut dbeta) = (0f64, 0f64);
                for (&v, &g) in x[ch * n..][..n].iter().zip(&gy[ch * n..][..n]) {
                    let (g, xhat) = open_grad(v, g, mean, inv_std, gamma, beta);
                    dgamma += (g * xhat) as f64;
                    dbeta += g as f64;
                }
                (dgamma as f32, dbeta as f32)
            })
            .collect();
        let mut out: Vec<f32> = sums.iter().map(|s| s.0).collect();
        out.extend(sums.iter().map(|s| s.1));
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

impl CustomOp3 for GradInput {
    fn name(&self) -> &'static str {
        "moodmirror-batch-norm-relu-grad-input"
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
        let gy = contiguous_f32(s2, l2, self.name())?;
        let p = contiguous_f32(s3, l3, self.name())?;
        let (c, n) = channel_slices(x.len(), l1)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n).enumerate().for_each(|(ch, dx)| {
            let (gamma, beta, mean, inv_std) = (p[ch], p[c + ch], p[2 * c + ch], p[3 * c + ch]);
            let (dgamma, dbeta) = (p[4 * c + ch], p[5 * c + ch]);
            // dx = gamma * inv_std * (g - dbeta/N - xhat * dgamma/N)
            let k = gamma * inv_std;
            let (mb, mg) = (dbeta / n as f32, dgamma / n as f32);
            for ((o, &v), &g) in dx.iter_mut().zip(&x[ch * n..][..n]).zip(&gy[ch * n..][..n]) {
                let (g, xhat) = open_grad(v, g, mean, inv_std, gamma, beta);
                *o = k * (g - mb - xhat * mg);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Training-mode `relu(batch_norm(x))` over dim 0 of a CBHW tensor, differentiable in `x`,
/// `gamma` and `beta`. Returns the output and the batch's per-channel (mean, biased variance).
pub fn batch_norm_relu_train(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
    let stats: BatchStats = Arc::new(Mutex::new(Vec::new()));
    let op = BnRelu { eps: eps as f32, stats: stats.clone() };
    let y = x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let saved = stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let c = saved.len() / 2;
    Ok((y, saved[..c].to_vec(), saved[c..].to_vec()))
}
