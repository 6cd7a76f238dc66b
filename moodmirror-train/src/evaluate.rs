//! Evaluation of an emotion model: accuracy, loss, per-class precision/recall/F1, confusion
//! matrix, balanced accuracy, ROC curves and AUC (micro-average and one-vs-rest per class).

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::Serialize;

use crate::calibration::{expected_calibration_error, reliability, ReliabilityBin};
use crate::dataset::Dataset;
use moodmirror::emotion::{normalize_view_into, View};
use moodmirror::emotion::{EmotionClassifier, InputContract, Preprocess, CLASS_NAMES, NUM_CLASSES};

/// Test-time augmentation: which views of each image `evaluate` averages (each view also
/// mirrored, except for `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Tta {
    /// The model's own view only.
    None,
    /// The model's own view and its mirror image (2 views).
    Mirror,
    /// The usual FER2013 ten-crop: 44x44 crops (training's mean view) at the centre and the four
    /// corners, and their mirrors (10 views).
    TenCrop,
    /// A grid over the middle of training's augmentation: view scales 42, 44 and 46 of 48 px,
    /// shifted by -3, 0 and +3 px in x and y, and their mirrors (54 views).
    Grid,
}

impl Tta {
    /// Training's mean view: random 44-px crops of the 48-px frame ([`crate::dataset::Augment`]).
    const CROP_SIDE: f32 = 44.0;

    /// The views to average, around the model's own view scale `view_scale`.
    /// Every view is followed by the model's `preprocess`.
    pub fn views(self, view_scale: f32, preprocess: Preprocess) -> Vec<View> {
        let plain = |scale: f32, dx: f32, dy: f32| View { mirror: false, scale, dx, dy, preprocess };
        let unmirrored: Vec<View> = match self {
            Tta::None => return vec![View::centred(view_scale, false).preprocessed(preprocess)],
            Tta::Mirror => vec![View::centred(view_scale, false).preprocessed(preprocess)],
            Tta::TenCrop => {
                // A 44-px crop of 48 px can move 2 px either way.
                let size = InputContract::SIZE as f32;
                let d = (size - Self::CROP_SIDE) / 2.0;
                [(0.0, 0.0), (-d, -d), (d, -d), (-d, d), (d, d)].into_iter().map(|(dx, dy)| plain(Self::CROP_SIDE / size, dx, dy)).collect()
            }
            Tta::Grid => {
                let mut views = Vec::new();
                for side in [42.0, 44.0, 46.0] {
                    for dy in [-3.0, 0.0, 3.0] {
                        for dx in [-3.0, 0.0, 3.0] {
                            views.push(plain(side / InputContract::SIZE as f32, dx, dy));
                        }
                    }
                }
                views
            }
        };
        unmirrored.into_iter().flat_map(|v| [v, View { mirror: true, ..v }]).collect()
    }

    pub fn describe(self) -> &'static str {
        match self {
            Tta::None => "",
            Tta::Mirror => ", with TTA (mirror)",
            Tta::TenCrop => ", with TTA (ten-crop)",
            Tta::Grid => ", with TTA (grid of 54 views)",
        }
    }
}

/// Class probabilities for every image of `data` from `logits` (`(B, 1, 48, 48)` → `(B, 7)`),
/// averaged over `views` (one view: no test-time augmentation).
pub fn predict(
    logits: &mut dyn FnMut(&Tensor) -> candle_core::Result<Tensor>,
    data: &Dataset,
    device: &Device,
    batch: usize,
    views: &[View],
) -> candle_core::Result<Vec<[f32; NUM_CLASSES]>> {
    let s = InputContract::SIZE;
    let px = InputContract::PIXELS;
    let mut out = Vec::with_capacity(data.len());
    let mut input = vec![0f32; batch * px];
    for start in (0..data.len()).step_by(batch) {
        let n = batch.min(data.len() - start);
        let mut sum = vec![0f32; n * NUM_CLASSES];
        for &view in views {
            input[..n * px].par_chunks_mut(px).enumerate().for_each(|(i, dst)| normalize_view_into(data.image(start + i), dst, view));
            let x = Tensor::from_slice(&input[..n * px], (n, 1, s, s), device)?;
            add_probabilities(&mut sum, &logits(&x)?, views.len())?;
        }
        out.extend(probability_rows(&sum));
    }
    Ok(out)
}

/// The class probabilities of several models averaged image by image, each model over its own
/// `views_of(model)` (an ensemble, e.g. distillation teachers).
pub fn predict_ensemble(
    models: &mut [EmotionClassifier],
    views_of: impl Fn(&EmotionClassifier) -> Vec<View>,
    data: &Dataset,
    device: &Device,
    batch: usize,
) -> candle_core::Result<Vec<[f32; NUM_CLASSES]>> {
    let share = 1.0 / models.len().max(1) as f32;
    let mut mean = vec![[0f32; NUM_CLASSES]; data.len()];
    for model in models.iter_mut() {
        let views = views_of(model);
        let probs = predict(&mut |x| model.logits(x), data, device, batch, &views)?;
        for (acc, row) in mean.iter_mut().zip(&probs) {
            acc.iter_mut().zip(row).for_each(|(a, p)| *a += p * share);
        }
    }
    Ok(mean)
}

/// Adds `softmax(logits) / parts` to `sum` (flat `(N, NUM_CLASSES)`): one of `parts` equal shares
/// of an average over views or models.
pub fn add_probabilities(sum: &mut [f32], logits: &Tensor, parts: usize) -> candle_core::Result<()> {
    let p = candle_nn::ops::softmax_last_dim(logits)?;
    for (acc, v) in sum.iter_mut().zip(p.flatten_all()?.to_vec1::<f32>()?) {
        *acc += v / parts as f32;
    }
    Ok(())
}

/// Rows of `NUM_CLASSES` values from a flat `(N, NUM_CLASSES)` buffer.
pub fn probability_rows(flat: &[f32]) -> impl Iterator<Item = [f32; NUM_CLASSES]> + '_ {
    flat.chunks_exact(NUM_CLASSES).map(|r| {
        let mut a = [0f32; NUM_CLASSES];
        a.copy_from_slice(r);
        a
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
    pub roc_auc: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Averages {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub n: usize,
    pub accuracy: f64,
    /// Mean cross-entropy (natural log) of the true class.
    pub loss: f64,
    pub macro_f1: f64,
    pub weighted_f1: f64,
    pub balanced_accuracy: f64,
    pub roc_auc_micro: f64,
    pub roc_auc_macro: f64,
    pub class_names: Vec<String>,
    pub per_class: std::collections::BTreeMap<String, ClassMetrics>,
    pub macro_avg: Averages,
    pub weighted_avg: Averages,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    /// Expected calibration error of the top label (15 equal bins of confidence).
    pub ece: f64,
    /// The bins of `ece`: the reliability diagram.
    pub reliability: Vec<ReliabilityBin>,
    #[serde(skip)]
    pub roc_micro: Vec<(f64, f64)>,
    #[serde(skip)]
    pub roc_per_class: Vec<Vec<(f64, f64)>>,
}

fn safe_div(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

/// ROC curve points (false-positive rate, true-positive rate) and the area under it
/// (trapezoids; tied scores form one step, as scikit-learn's `roc_curve`).
pub fn roc_curve(scores: &[(f32, bool)]) -> (Vec<(f64, f64)>, f64) {
    let positives = scores.iter().filter(|s| s.1).count() as f64;
    let negatives = scores.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return (vec![(0.0, 0.0), (1.0, 1.0)], f64::NAN);
    }
    let mut sorted = scores.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut auc = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let score = sorted[i].0;
        // total_cmp: a NaN score groups with other NaNs instead of never matching (no endless loop).
        while i < sorted.len() && sorted[i].0.total_cmp(&score).is_eq() {
            if sorted[i].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        let (x0, y0) = *points.last().unwrap_or(&(0.0, 0.0));
        let (x1, y1) = (fp / negatives, tp / positives);
        auc += (x1 - x0) * (y0 + y1) / 2.0;
        points.push((x1, y1));
    }
    (points, auc)
}

/// An error naming the first image whose probabilities are not finite numbers (a diverged or
/// corrupt model): metrics of such outputs would be meaningless.
pub fn check_finite(probabilities: &[[f32; NUM_CLASSES]]) -> Result<(), String> {
    match probabilities.iter().position(|p| p.iter().any(|v| !v.is_finite())) {
        None => Ok(()),
        Some(i) => {
            Err(format!("the model's output for image {i} is not finite ({:?}): the weights are diverged or corrupt", probabilities[i]))
        }
    }
}

/// An AUC as the report prints it: "n/a" where it is undefined (a class with no image, or
/// every image of it).
fn auc_text(auc: f64) -> String {
    if auc.is_finite() {
        format!("{auc:.4}")
    } else {
        "n/a".to_owned()
    }
}

impl Report {
    /// The report of `probabilities` for the images `indices` of a data set scored with `labels`
    /// (one per index).
    pub fn compute_subset(probabilities: &[[f32; NUM_CLASSES]], indices: &[usize], labels: &[u8]) -> Report {
        let rows: Vec<[f32; NUM_CLASSES]> = indices.iter().map(|&i| probabilities[i]).collect();
        Report::compute(&rows, labels)
    }

    pub fn compute(probabilities: &[[f32; NUM_CLASSES]], labels: &[u8]) -> Report {
        let n = labels.len();
        let mut confusion = vec![vec![0usize; NUM_CLASSES]; NUM_CLASSES];
        let mut loss = 0.0;
        for (p, &y) in probabilities.iter().zip(labels) {
            let (pred, _) = moodmirror::emotion::argmax(p);
            confusion[y as usize][pred] += 1;
            loss -= (p[y as usize].max(1e-12) as f64).ln();
        }
        let correct: usize = (0..NUM_CLASSES).map(|c| confusion[c][c]).sum();
        let mut per_class = std::collections::BTreeMap::new();
        let mut roc_per_class = Vec::new();
        let mut metrics = Vec::new();
        for c in 0..NUM_CLASSES {
            let tp = confusion[c][c] as f64;
            let support: usize = confusion[c].iter().sum();
            let predicted: usize = (0..NUM_CLASSES).map(|r| confusion[r][c]).sum();
            let precision = safe_div(tp, predicted as f64);
            let recall = safe_div(tp, support as f64);
            let f1 = safe_div(2.0 * precision * recall, precision + recall);
            let scores: Vec<(f32, bool)> = probabilities.iter().zip(labels).map(|(p, &y)| (p[c], y as usize == c)).collect();
            let (curve, roc_auc) = roc_curve(&scores);
            roc_per_class.push(curve);
            let m = ClassMetrics { precision, recall, f1, support, roc_auc };
            metrics.push(m.clone());
            per_class.insert(CLASS_NAMES[c].to_string(), m);
        }
        let micro_scores: Vec<(f32, bool)> =
            probabilities.iter().zip(labels).flat_map(|(p, &y)| (0..NUM_CLASSES).map(move |c| (p[c], y as usize == c))).collect();
        let (roc_micro, roc_auc_micro) = roc_curve(&micro_scores);
        let present: Vec<&ClassMetrics> = metrics.iter().filter(|m| m.support > 0).collect();
        let k = present.len().max(1) as f64;
        let macro_avg = Averages {
            precision: present.iter().map(|m| m.precision).sum::<f64>() / k,
            recall: present.iter().map(|m| m.recall).sum::<f64>() / k,
            f1: present.iter().map(|m| m.f1).sum::<f64>() / k,
        };
        let total = n.max(1) as f64;
        let weighted = |f: fn(&ClassMetrics) -> f64| metrics.iter().map(|m| f(m) * m.support as f64).sum::<f64>() / total;
        let weighted_avg = Averages { precision: weighted(|m| m.precision), recall: weighted(|m| m.recall), f1: weighted(|m| m.f1) };
        let aucs: Vec<f64> = metrics.iter().map(|m| m.roc_auc).filter(|a| a.is_finite()).collect();
        let reliability = reliability(probabilities, labels);
        Report {
            ece: expected_calibration_error(&reliability),
            reliability,
            n,
            accuracy: correct as f64 / total,
            loss: loss / total,
            macro_f1: macro_avg.f1,
            weighted_f1: weighted_avg.f1,
            balanced_accuracy: macro_avg.recall,
            roc_auc_micro,
            // Undefined (NaN, `null` in report.json) when no class has both positives and negatives.
            roc_auc_macro: if aucs.is_empty() { f64::NAN } else { aucs.iter().sum::<f64>() / aucs.len() as f64 },
            class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
            per_class,
            macro_avg,
            weighted_avg,
            confusion,
            roc_micro,
            roc_per_class,
        }
    }

    /// The classes with no image in the data.
    pub fn absent_classes(&self) -> Vec<String> {
        self.class_names.iter().filter(|c| self.per_class.get(*c).is_some_and(|m| m.support == 0)).cloned().collect()
    }

    /// The classification report, confusion matrix and AUCs as text (scikit-learn's layout).
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "n = {}   accuracy = {:.4}   loss = {:.4}", self.n, self.accuracy, self.loss);
        let absent = self.absent_classes();
        if !absent.is_empty() {
            let _ = writeln!(
                s,
                "classes absent from the data: {} (macro figures are over the {} present)",
                absent.join(", "),
                NUM_CLASSES - absent.len()
            );
        }
        let _ = writeln!(
            s,
            "macro F1 = {:.4}   balanced accuracy = {:.4}   ROC AUC micro = {}   macro = {}",
            self.macro_f1,
            self.balanced_accuracy,
            auc_text(self.roc_auc_micro),
            auc_text(self.roc_auc_macro)
        );
        let _ = writeln!(s, "expected calibration error (15 bins, top label) = {:.4}\n", self.ece);
        let _ = writeln!(s, "{:>14} {:>9} {:>9} {:>9} {:>9} {:>9}", "", "precision", "recall", "f1-score", "support", "roc-auc");
        for name in &self.class_names {
            let m = &self.per_class[name];
            let _ =
                writeln!(s, "{name:>14} {:>9.4} {:>9.4} {:>9.4} {:>9} {:>9}", m.precision, m.recall, m.f1, m.support, auc_text(m.roc_auc));
        }
        let _ = writeln!(s);
        for (label, a) in [("macro avg", &self.macro_avg), ("weighted avg", &self.weighted_avg)] {
            let _ = writeln!(s, "{label:>14} {:>9.4} {:>9.4} {:>9.4} {:>9}", a.precision, a.recall, a.f1, self.n);
        }
        let _ = writeln!(s, "\nconfusion matrix (rows: true, columns: predicted)");
        let _ = write!(s, "{:>10}", "");
        for name in &self.class_names {
            let _ = write!(s, "{:>9}", &name[..name.len().min(8)]);
        }
        let _ = writeln!(s);
        for (name, row) in self.class_names.iter().zip(&self.confusion) {
            let _ = write!(s, "{name:>10}");
            for v in row {
                let _ = write!(s, "{v:>9}");
            }
            let _ = writeln!(s);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tta_views_come_in_mirror_pairs_and_ten_crop_reaches_the_corners() {
        assert_eq!(Tta::None.views(0.9, Preprocess::None), vec![View::centred(0.9, false)]);
        assert_eq!(Tta::Mirror.views(1.0, Preprocess::None), vec![View::centred(1.0, false), View::centred(1.0, true)]);
        for (tta, n) in [(Tta::Mirror, 2), (Tta::TenCrop, 10), (Tta::Grid, 54)] {
            let views = tta.views(1.0, Preprocess::None);
            assert_eq!(views.len(), n, "{tta:?}");
            for pair in views.chunks_exact(2) {
                assert_eq!(pair[1], View { mirror: true, ..pair[0] });
            }
        }
        let ten = Tta::TenCrop.views(1.0, Preprocess::None);
        assert!(ten.iter().all(|v| (v.scale - 44.0 / 48.0).abs() < 1e-6));
        // The corner crops touch the frame's edges: 44 px placed 2 px off centre each way.
        let mut offsets: Vec<(i32, i32)> = ten.iter().map(|v| (v.dx as i32, v.dy as i32)).collect();
        offsets.dedup();
        assert_eq!(offsets, vec![(0, 0), (-2, -2), (2, -2), (-2, 2), (2, 2)]);
    }

    #[test]
    fn nan_scores_end_the_roc_curve_and_are_refused_before_a_report() {
        let scores = [(f32::NAN, true), (0.5, false), (f32::NAN, false), (0.2, true)];
        let (points, _) = roc_curve(&scores);
        assert!(points.len() <= scores.len() + 1);
        let probs = [[f32::NAN; NUM_CLASSES]];
        assert!(check_finite(&probs).unwrap_err().contains("image 0"));
        assert!(check_finite(&[[1.0 / 7.0; NUM_CLASSES]]).is_ok());
    }

    #[test]
    fn roc_auc_matches_hand_computation() {
        // Positives 0.9, 0.4; negatives 0.6, 0.1: 3 of 4 pairs ranked right -> 0.75.
        let scores = [(0.9, true), (0.6, false), (0.4, true), (0.1, false)];
        let (_, auc) = roc_curve(&scores);
        assert!((auc - 0.75).abs() < 1e-12);
        // A tie between a positive and a negative counts one half.
        let (_, auc) = roc_curve(&[(0.5, true), (0.5, false)]);
        assert!((auc - 0.5).abs() < 1e-12);
    }

    #[test]
    fn report_matches_hand_computation() {
        let one_hot = |c: usize, p: f32| {
            let mut a = [(1.0 - p) / 6.0; NUM_CLASSES];
            a[c] = p;
            a
        };
        // Truth: angry, angry, happy, happy, sad. Predictions: angry, happy, happy, happy, angry.
        let probs = [one_hot(0, 0.8), one_hot(3, 0.6), one_hot(3, 0.9), one_hot(3, 0.7), one_hot(0, 0.5)];
        let labels = [0u8, 0, 3, 3, 4];
        let r = Report::compute(&probs, &labels);
        assert_eq!(r.n, 5);
        assert!((r.accuracy - 0.6).abs() < 1e-12);
        assert_eq!(r.confusion[0][0], 1);
        assert_eq!(r.confusion[0][3], 1);
        assert_eq!(r.confusion[4][0], 1);
        let angry = &r.per_class["angry"];
        assert!((angry.precision - 0.5).abs() < 1e-12);
        assert!((angry.recall - 0.5).abs() < 1e-12);
        let happy = &r.per_class["happy"];
        assert!((happy.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((happy.recall - 1.0).abs() < 1e-12);
        assert!((happy.f1 - 0.8).abs() < 1e-12);
        assert_eq!(r.per_class["sad"].support, 1);
        // Macro over the 3 classes present: F1 (0.5 + 0.8 + 0) / 3.
        assert!((r.macro_f1 - 1.3 / 3.0).abs() < 1e-12);
        assert!((r.balanced_accuracy - 0.5).abs() < 1e-12);
        // Loss: mean of -ln p(true).
        let expected = -(0.8f64.ln() + (0.4f64 / 6.0).ln() + 0.9f64.ln() + 0.7f64.ln() + (0.5f64 / 6.0).ln()) / 5.0;
        assert!((r.loss - expected).abs() < 1e-5, "{} vs {expected}", r.loss);
    }

    #[test]
    fn aucs_of_one_class_data_are_undefined_and_said_so() {
        // Every image happy: no class has both positives and negatives.
        let mut p = [0.05f32; NUM_CLASSES];
        p[3] = 0.7;
        let r = Report::compute(&[p, p], &[3u8, 3]);
        assert!(r.roc_auc_macro.is_nan() && r.per_class["happy"].roc_auc.is_nan());
        let text = r.to_text();
        assert!(text.contains("macro = n/a") && !text.contains("NaN") && !text.contains("-0.0000"), "{text}");
    }
}
