//! Training's losses: class weights, label-smoothed weighted cross-entropy, and the
//! distillation loss against soft targets.

use candle_core::{Tensor, D};

use crate::augment::BatchMix;
use moodmirror::emotion::NUM_CLASSES;

/// Per-class loss weights, normalised so the average sample weight is 1.
pub fn class_weights(counts: &[usize; NUM_CLASSES], power: f64) -> [f32; NUM_CLASSES] {
    let total: usize = counts.iter().sum();
    let mut w = [1f32; NUM_CLASSES];
    for (wi, &c) in w.iter_mut().zip(counts) {
        *wi = ((total as f64 / (NUM_CLASSES as f64 * c.max(1) as f64)).powf(power)) as f32;
    }
    let mean: f32 = counts.iter().zip(&w).map(|(&c, &wi)| c as f32 * wi).sum::<f32>() / total.max(1) as f32;
    w.map(|wi| wi / mean)
}

/// Weighted cross-entropy with label smoothing: mean over the batch of
/// `w[y] * -(Σ_c q_c log p_c)`, q = (1-ε)·onehot(y) + ε/K.
pub fn smoothed_weighted_ce(logits: &Tensor, labels: &[u8], weights: &[f32; NUM_CLASSES], eps: f64) -> candle_core::Result<Tensor> {
    distilled_weighted_ce(logits, &one_hot_rows(labels), weights, eps, None, None)
}

/// One-hot target rows of hard labels.
pub fn one_hot_rows(labels: &[u8]) -> Vec<[f32; NUM_CLASSES]> {
    labels.iter().map(|&l| crate::dataset::one_hot(l)).collect()
}

/// [`smoothed_weighted_ce`] for target distributions (one-hot labels, FER+ votes), with
/// knowledge distillation and mixup. A target row `q` counts with weight `W_q = Σ_c w_c·q_c`
/// (`w[y]` for a one-hot label) and aims at `(1-ε)·(w ⊙ q)/W_q + ε/K`. With
/// `soft = Some((teacher, α))` each sample adds the cross-entropy against its teacher
/// probabilities `teacher[i]` with weight α, beside its label term with weight `(1-α)·W_q`;
/// the loss is the weighted mean of both. With `mix`, sample i's label term is `λ_i` of its
/// own row's and `1-λ_i` of its partner's (each with its class weights); `teacher[i]` is
/// taken as already mixed.
pub fn distilled_weighted_ce(
    logits: &Tensor,
    label_rows: &[[f32; NUM_CLASSES]],
    weights: &[f32; NUM_CLASSES],
    eps: f64,
    mix: Option<&BatchMix>,
    soft: Option<(&[[f32; NUM_CLASSES]], f32)>,
) -> candle_core::Result<Tensor> {
    let b = label_rows.len();
    let k = NUM_CLASSES;
    let alpha = soft.map_or(0.0, |(_, a)| a);
    if let Some((teacher, _)) = soft {
        if teacher.len() != b {
            candle_core::bail!("{} teacher targets for a batch of {b}", teacher.len());
        }
    }
    if let Some(m) = mix {
        if m.lambda.len() != b || m.partner.len() != b || m.partner.iter().any(|&j| j >= b) {
            candle_core::bail!("mixup pairing of {} samples for a batch of {b}", m.lambda.len());
        }
    }
    // One combined target per sample: label part(s) and teacher part, each with its weight.
    let mut target = vec![0f32; b * k];
    let mut total_weight = 0f64;
    for i in 0..b {
        let row = &mut target[i * k..(i + 1) * k];
        let shares = match mix {
            Some(m) => [(i, m.lambda[i]), (m.partner[i], 1.0 - m.lambda[i])],
            None => [(i, 1.0), (i, 0.0)],
        };
        for (j, share) in shares {
            let q = &label_rows[j];
            let row_weight: f32 = q.iter().zip(weights).map(|(q, w)| q * w).sum();
            let scale = (1.0 - alpha) * share;
            for (c, t) in row.iter_mut().enumerate() {
                *t += scale * ((1.0 - eps) as f32 * weights[c] * q[c] + (eps / k as f64) as f32 * row_weight);
            }
            total_weight += (scale * row_weight) as f64;
        }
        if let Some((teacher, _)) = soft {
            for (t, p) in row.iter_mut().zip(&teacher[i]) {
                *t += alpha * p;
            }
        }
        total_weight += alpha as f64;
    }
    let target = Tensor::from_vec(target, (b, k), logits.device())?;
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    (target * log_p)?.sum_all()?.neg()? / total_weight.max(f64::MIN_POSITIVE)
}
