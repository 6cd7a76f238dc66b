//! What a model's file may say about its logits beyond the network: a prior correction
//! ([`LogitBias`]) and a calibration temperature ([`Temperature`]), both applied by every path
//! that turns logits into probabilities (the element, the CLI, `evaluate`).

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::NUM_CLASSES;

/// The prior correction a model's file may carry: a bias added to its logits at inference.
///
/// Training weights rare classes up (weights `w` ∝ frequency^-power), which teaches the network
/// `w_k · p(k | x)` instead of `p(k | x)`: it over-calls rare classes. Adding `-ln w_k` to the
/// logits undoes that (post-hoc logit adjustment), so the argmax follows the training prior
/// again while the rare classes still got their larger share of the gradient.
pub struct LogitBias;

impl LogitBias {
    pub const KEY: &'static str = "logit_bias";

    /// The bias that undoes training with per-class loss `weights`.
    pub fn undoing_class_weights(weights: &[f32; NUM_CLASSES]) -> [f32; NUM_CLASSES] {
        weights.map(|w| -w.max(f32::MIN_POSITIVE).ln())
    }

    /// The bias as a `(1, 7)` tensor that [`LogitBias::add`] broadcasts over a batch.
    pub fn tensor(bias: &[f32; NUM_CLASSES], device: &Device) -> candle_core::Result<Tensor> {
        Tensor::new(&[*bias], device)
    }

    /// `(B, 7)` logits plus the bias, if any.
    pub fn add(logits: Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
        match bias {
            Some(bias) => logits.broadcast_add(bias),
            None => Ok(logits),
        }
    }

    /// The metadata value: seven numbers in [`CLASS_NAMES`] order, comma-separated.
    pub fn format(bias: &[f32; NUM_CLASSES]) -> String {
        bias.iter().map(|b| format!("{b:.6}")).collect::<Vec<_>>().join(",")
    }

    /// Metadata: the bias that wholly undoes training's class weights, kept when `logit_bias`
    /// holds a scaled copy of it (`moodmirror calibrate --logit-bias-scale`).
    pub const UNDO_KEY: &'static str = "logit_bias_undo";
    /// Metadata: the share of [`Self::UNDO_KEY`] that `logit_bias` holds.
    pub const SCALE_KEY: &'static str = "logit_bias_scale";
    /// The shares a scale can take: 1 undoes the class weights wholly (labels for plain
    /// accuracy, the training prior), 0 keeps the network as trained (rare classes favoured).
    pub const SCALE_RANGE: std::ops::RangeInclusive<f32> = 0.0..=1.0;

    /// The bias recorded in a model's metadata (none for files without the key); an error for
    /// a value that is not seven finite numbers.
    pub fn from_metadata(metadata: &HashMap<String, String>) -> crate::Result<Option<[f32; NUM_CLASSES]>> {
        Self::parse(metadata, Self::KEY)
    }

    /// The bias that wholly undoes the class weights: `logit_bias_undo` when the file has a scaled
    /// bias, else `logit_bias` (as training wrote it).
    pub fn undo_from_metadata(metadata: &HashMap<String, String>) -> crate::Result<Option<[f32; NUM_CLASSES]>> {
        match Self::parse(metadata, Self::UNDO_KEY)? {
            Some(undo) => Ok(Some(undo)),
            None => Self::parse(metadata, Self::KEY),
        }
    }

    /// `undo` scaled by `scale` (logit adjustment of strength `scale`).
    pub fn scaled(undo: &[f32; NUM_CLASSES], scale: f32) -> [f32; NUM_CLASSES] {
        undo.map(|b| b * scale)
    }

    /// Probabilities `p` of the network without a bias, with `bias` added to their logits:
    /// the softmax of `ln p + bias`.
    pub fn apply(p: &[f32; NUM_CLASSES], bias: &[f32; NUM_CLASSES]) -> [f32; NUM_CLASSES] {
        super::softmax(std::array::from_fn(|i| p[i].max(f32::MIN_POSITIVE).ln() + bias[i]))
    }

    fn parse(metadata: &HashMap<String, String>, key: &str) -> crate::Result<Option<[f32; NUM_CLASSES]>> {
        let Some(text) = metadata.get(key) else {
            return Ok(None);
        };
        let invalid = || crate::Error::ModelFile(format!("metadata {key}='{text}' is not {NUM_CLASSES} comma-separated finite numbers"));
        let values = text
            .split(',')
            .map(|v| v.trim().parse::<f32>().ok().filter(|v| v.is_finite()))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(invalid)?;
        let bias: [f32; NUM_CLASSES] = values.try_into().map_err(|_| invalid())?;
        Ok(Some(bias))
    }
}

/// The calibration temperature a model's file may carry: probabilities are
/// `softmax((logits + bias) / T)`. Fitted on validation data by `moodmirror calibrate` (the
/// negative log-likelihood's minimum), so that "87 %" is right about 87 % of the time. Dividing
/// every logit by one positive number leaves the ranking, so the label never changes.
pub struct Temperature;

impl Temperature {
    pub const KEY: &'static str = "temperature";
    /// The range a fitted temperature can take: outside it the model's outputs are degenerate.
    pub const RANGE: std::ops::RangeInclusive<f32> = 0.05..=20.0;

    /// The temperature recorded in a model's metadata (none for files without the key); an error
    /// for a value that is not a number in [`Temperature::RANGE`].
    pub fn from_metadata(metadata: &HashMap<String, String>) -> crate::Result<Option<f32>> {
        let Some(text) = metadata.get(Self::KEY) else {
            return Ok(None);
        };
        match text.trim().parse::<f32>() {
            Ok(t) if Self::RANGE.contains(&t) => Ok(Some(t)),
            _ => Err(crate::Error::ModelFile(format!(
                "metadata {}='{text}' is not a number in {}..={}",
                Self::KEY,
                Self::RANGE.start(),
                Self::RANGE.end()
            ))),
        }
    }

    /// The metadata value.
    pub fn format(t: f32) -> String {
        format!("{t:.6}")
    }

    /// Probabilities `p` at temperature `t`, from probabilities at temperature 1: `p^(1/t)`,
    /// renormalised (the softmax of `ln p / t`).
    pub fn apply(p: &[f32; NUM_CLASSES], t: f32) -> [f32; NUM_CLASSES] {
        Self::power(p, 1.0 / t)
    }

    /// The inverse of [`Temperature::apply`]: the probabilities at temperature 1.
    pub fn undo(p: &[f32; NUM_CLASSES], t: f32) -> [f32; NUM_CLASSES] {
        Self::power(p, t)
    }

    fn power(p: &[f32; NUM_CLASSES], exponent: f32) -> [f32; NUM_CLASSES] {
        let powered = p.map(|v| v.max(0.0).powf(exponent));
        let sum: f32 = powered.iter().sum();
        if sum > 0.0 && sum.is_finite() {
            powered.map(|v| v / sum)
        } else {
            *p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_bias_keeps_the_undo_and_applies_like_the_logits() {
        let mut meta = HashMap::new();
        assert_eq!(LogitBias::undo_from_metadata(&meta).unwrap(), None);
        let undo = [-0.3, -1.5, -0.9, 0.2, -0.1, -0.2, 0.3];
        meta.insert(LogitBias::KEY.to_string(), LogitBias::format(&undo));
        assert_eq!(LogitBias::undo_from_metadata(&meta).unwrap(), Some(undo));
        // Once scaled, the file's bias is the scaled copy and the undo is read from its own key.
        let half = LogitBias::scaled(&undo, 0.5);
        meta.insert(LogitBias::KEY.to_string(), LogitBias::format(&half));
        meta.insert(LogitBias::UNDO_KEY.to_string(), LogitBias::format(&undo));
        assert_eq!(LogitBias::from_metadata(&meta).unwrap(), Some(half));
        assert_eq!(LogitBias::undo_from_metadata(&meta).unwrap(), Some(undo));
        meta.insert(LogitBias::UNDO_KEY.to_string(), "1,2".into());
        let err = LogitBias::undo_from_metadata(&meta).unwrap_err().to_string();
        assert!(err.contains("logit_bias_undo='1,2'"), "{err}");
        // softmax(ln p + b) equals softmax(logits + b) for p = softmax(logits).
        let logits = [1.0f32, -0.5, 0.2, 2.0, 0.0, -1.0, 1.5];
        let softmax = |z: [f32; NUM_CLASSES]| {
            let e = z.map(f32::exp);
            let s: f32 = e.iter().sum();
            e.map(|v| v / s)
        };
        let mut shifted = logits;
        shifted.iter_mut().zip(&undo).for_each(|(z, b)| *z += b);
        let got = LogitBias::apply(&softmax(logits), &undo);
        assert!(got.iter().zip(softmax(shifted)).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?}");
    }

    #[test]
    fn temperature_is_read_and_bad_values_are_named() {
        let mut meta = HashMap::new();
        assert_eq!(Temperature::from_metadata(&meta).unwrap(), None);
        meta.insert(Temperature::KEY.to_string(), Temperature::format(1.37));
        assert!((Temperature::from_metadata(&meta).unwrap().unwrap() - 1.37).abs() < 1e-6);
        for bad in ["0", "-1", "hot", "NaN", "inf", "100"] {
            meta.insert(Temperature::KEY.to_string(), bad.to_string());
            let err = Temperature::from_metadata(&meta).unwrap_err().to_string();
            assert!(err.contains("temperature") && err.contains(bad), "{err}");
        }
        let p = [0.5, 0.0, 0.1, 0.2, 0.1, 0.05, 0.05];
        let sharp = Temperature::apply(&p, 0.5);
        assert!((sharp[0] - 0.25 / 0.315).abs() < 1e-5 && sharp[1] == 0.0);
        let back = Temperature::undo(&sharp, 0.5);
        assert!(back.iter().zip(&p).all(|(a, b)| (a - b).abs() < 1e-5), "{back:?}");
    }
}
