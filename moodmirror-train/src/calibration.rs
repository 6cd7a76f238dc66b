//! Whether a model's probabilities mean what they say: the expected calibration error and its
//! reliability bins, and the fit of the temperature a model file records
//! ([`moodmirror::emotion::Temperature`]).

use serde::Serialize;

use moodmirror::emotion::{argmax, Temperature, NUM_CLASSES};

/// Bins of the reliability diagram and of the expected calibration error (the usual 15, equal
/// width over the top label's probability).
pub const RELIABILITY_BINS: usize = 15;

/// One bin of top-label confidence: how many images fell in it, their mean confidence and the
/// share of them whose top label was right.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub confidence: f64,
    pub accuracy: f64,
}

/// The [`RELIABILITY_BINS`] bins of `probabilities` against `labels` (top label's probability;
/// a probability of exactly 1 falls in the last bin).
pub fn reliability(probabilities: &[[f32; NUM_CLASSES]], labels: &[u8]) -> Vec<ReliabilityBin> {
    let mut sums = [(0usize, 0f64, 0usize); RELIABILITY_BINS];
    for (p, &y) in probabilities.iter().zip(labels) {
        let (top, confidence) = argmax(p);
        let bin = ((confidence as f64 * RELIABILITY_BINS as f64) as usize).min(RELIABILITY_BINS - 1);
        sums[bin].0 += 1;
        sums[bin].1 += confidence as f64;
        sums[bin].2 += (top == y as usize) as usize;
    }
    sums.iter()
        .enumerate()
        .map(|(i, &(count, confidence, correct))| ReliabilityBin {
            lower: i as f64 / RELIABILITY_BINS as f64,
            upper: (i + 1) as f64 / RELIABILITY_BINS as f64,
            count,
            confidence: if count > 0 { confidence / count as f64 } else { 0.0 },
            accuracy: if count > 0 { correct as f64 / count as f64 } else { 0.0 },
        })
        .collect()
}

/// The expected calibration error of `bins`: the gap between confidence and accuracy, averaged
/// over images.
pub fn expected_calibration_error(bins: &[ReliabilityBin]) -> f64 {
    let n: usize = bins.iter().map(|b| b.count).sum();
    if n == 0 {
        return 0.0;
    }
    bins.iter().map(|b| b.count as f64 * (b.accuracy - b.confidence).abs()).sum::<f64>() / n as f64
}

/// `probabilities` as the same model would give them with its logits divided by `t`
/// ([`Temperature::apply`], as the classifier does).
pub fn with_temperature(probabilities: &[[f32; NUM_CLASSES]], t: f32) -> Vec<[f32; NUM_CLASSES]> {
    probabilities.iter().map(|p| Temperature::apply(p, t)).collect()
}

/// Mean negative log-likelihood of `labels` under `probabilities` at temperature `t`.
fn nll_at(probabilities: &[[f32; NUM_CLASSES]], labels: &[u8], t: f64) -> f64 {
    let mut total = 0.0;
    for (p, &y) in probabilities.iter().zip(labels) {
        let z = p.map(|v| (v.max(f32::MIN_POSITIVE).ln() as f64) / t);
        let max = z.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v));
        let log_sum = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        total += log_sum - z[y as usize];
    }
    total / labels.len().max(1) as f64
}

/// The temperature in [`Temperature::RANGE`] that minimises the negative log-likelihood of
/// `labels` (golden-section search over ln t: the likelihood is unimodal in it).
pub fn fit_temperature(probabilities: &[[f32; NUM_CLASSES]], labels: &[u8]) -> f32 {
    let (mut lo, mut hi) = ((*Temperature::RANGE.start() as f64).ln(), (*Temperature::RANGE.end() as f64).ln());
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let f = |x: f64| nll_at(probabilities, labels, x.exp());
    let (mut a, mut b) = (hi - ratio * (hi - lo), lo + ratio * (hi - lo));
    let (mut fa, mut fb) = (f(a), f(b));
    while hi - lo > 1e-5 {
        if fa < fb {
            hi = b;
            (b, fb) = (a, fa);
            a = hi - ratio * (hi - lo);
            fa = f(a);
        } else {
            lo = a;
            (a, fa) = (b, fb);
            b = lo + ratio * (hi - lo);
            fb = f(b);
        }
    }
    ((lo + hi) / 2.0).exp() as f32
}

/// What a temperature fit found on one data set.
#[derive(Debug, Clone, Serialize)]
pub struct TemperatureFit {
    pub temperature: f32,
    pub n: usize,
    pub nll_before: f64,
    pub nll_after: f64,
    pub ece_before: f64,
    pub ece_after: f64,
    /// ECE on images the temperature was not fitted on: each half of the data scored with the
    /// temperature fitted on the other half (interleaved halves), images pooled.
    pub ece_cross_fitted: f64,
}

impl TemperatureFit {
    pub fn compute(probabilities: &[[f32; NUM_CLASSES]], labels: &[u8]) -> Self {
        let temperature = fit_temperature(probabilities, labels);
        let after = with_temperature(probabilities, temperature);
        let half = |parity: usize| -> (Vec<[f32; NUM_CLASSES]>, Vec<u8>) {
            probabilities.iter().zip(labels).enumerate().filter(|(i, _)| i % 2 == parity).map(|(_, (p, l))| (*p, *l)).unzip()
        };
        let mut cross = (Vec::new(), Vec::new());
        for parity in [0, 1] {
            let (fit_p, fit_l) = half(parity);
            let (test_p, test_l) = half(1 - parity);
            let t = fit_temperature(&fit_p, &fit_l);
            cross.0.extend(with_temperature(&test_p, t));
            cross.1.extend(test_l);
        }
        TemperatureFit {
            temperature,
            n: labels.len(),
            nll_before: nll_at(probabilities, labels, 1.0),
            nll_after: nll_at(probabilities, labels, temperature as f64),
            ece_before: expected_calibration_error(&reliability(probabilities, labels)),
            ece_after: expected_calibration_error(&reliability(&after, labels)),
            ece_cross_fitted: expected_calibration_error(&reliability(&cross.0, &cross.1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peaked(c: usize, p: f32) -> [f32; NUM_CLASSES] {
        let mut a = [(1.0 - p) / 6.0; NUM_CLASSES];
        a[c] = p;
        a
    }

    #[test]
    fn ece_matches_hand_computation() {
        // Two images at 0.95 (one right), two at 0.55 (both right): bins 14 and 8.
        let probs = [peaked(0, 0.95), peaked(1, 0.95), peaked(3, 0.55), peaked(3, 0.55)];
        let labels = [0u8, 0, 3, 3];
        let bins = reliability(&probs, &labels);
        assert_eq!(bins.len(), RELIABILITY_BINS);
        assert_eq!((bins[14].count, bins[8].count), (2, 2));
        assert!((bins[14].accuracy - 0.5).abs() < 1e-12 && (bins[8].accuracy - 1.0).abs() < 1e-12);
        let expected = (2.0 * (0.95f64 - 0.5).abs() + 2.0 * (1.0 - 0.55f64).abs()) / 4.0;
        assert!((expected_calibration_error(&bins) - expected).abs() < 1e-6);
        // Certainty of 1.0 lands in the last bin, not past it.
        assert_eq!(reliability(&[peaked(2, 1.0)], &[2])[14].count, 1);
    }

    #[test]
    fn fitted_temperature_undoes_an_overconfident_model() {
        // A model right 70 % of the time whose true logits give 0.7 to its choice; shown
        // sharpened three times (logits x3), the fit finds ~3 and the ECE falls to ~0.
        let calibrated: Vec<[f32; NUM_CLASSES]> = (0..1000).map(|_| peaked(0, 0.7)).collect();
        // Right 70 % of the time in each interleaved half too.
        let labels: Vec<u8> = (0..1000).map(|i| if (i / 2) % 10 < 7 { 0 } else { 1 + (i % 6) as u8 }).collect();
        let sharpened = with_temperature(&calibrated, 1.0 / 3.0);
        assert!(sharpened[0][0] > 0.99);
        let fit = TemperatureFit::compute(&sharpened, &labels);
        assert!((fit.temperature - 3.0).abs() < 0.02, "{}", fit.temperature);
        assert!(fit.ece_before > 0.25 && fit.ece_after < 0.01 && fit.ece_cross_fitted < 0.02, "{fit:?}");
        assert!(fit.nll_after < fit.nll_before);
        // The label never changes.
        let back = with_temperature(&sharpened, fit.temperature);
        assert!(back.iter().zip(&sharpened).all(|(a, b)| argmax(a).0 == argmax(b).0));
    }
}
