//! `moodmirror calibrate`: fits a model's temperature on labelled validation images and writes
//! the model with it; optionally sets how far its logit bias undoes training's class weights
//! (`--logit-bias-scale`), after a table of what each share does to plain and balanced accuracy.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::calibration::TemperatureFit;
use crate::dataset::{Dataset, LabelSet};
use crate::evaluate::{check_finite, predict_ensemble, Report, Tta};
use moodmirror::emotion::{
    read_metadata, EmotionClassifier, LogitBias, Precision, Temperature, CLASS_NAMES, EMBEDDED_WEIGHTS, NUM_CLASSES,
};

#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct CalibrateArgs {
    /// The model to calibrate (.safetensors); the embedded default when omitted.
    #[cfg_attr(feature = "clap", arg(long))]
    pub model: Option<PathBuf>,
    /// Labelled validation images (never the test split): class folders, fer2013.csv:PublicTest
    /// or the originals' labels.csv:val.
    #[cfg_attr(feature = "clap", arg(long))]
    pub data: String,
    /// The labels the probabilities should be right about when the data has several [default:
    /// the model's own `val_labels` metadata, else fer2013].
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub labels: Option<LabelSet>,
    /// Where to write the calibrated copy (the same tensors; metadata `temperature` added).
    #[cfg_attr(feature = "clap", arg(long))]
    pub out: PathBuf,
    /// Share of training's class weighting that the file's logit bias undoes (post-hoc logit
    /// adjustment), 0..=1: 1 picks labels for plain accuracy (the training prior), lower shares
    /// call rare classes (disgust, fear, sad) more often, raising balanced accuracy. The table
    /// printed first shows both on --data for several shares [default: the file's own].
    #[cfg_attr(feature = "clap", arg(long))]
    pub logit_bias_scale: Option<f32>,
    /// Views averaged while fitting; the element classifies one (`none`).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = Tta::None))]
    pub tta: Tta,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 256))]
    pub batch: usize,
}

/// `moodmirror calibrate`: fits the temperature on `--data`, reports the fit and writes the model
/// with it.
/// Fewest scored images a temperature is fitted on.
const MIN_IMAGES: usize = 30;

pub fn run(args: &CalibrateArgs, command_line: &str) -> Result<()> {
    let input_bytes = match &args.model {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => EMBEDDED_WEIGHTS.to_vec(),
    };
    crate::paths::check_not_an_input(&args.out, "--out", args.model.as_deref())?;
    if args.out.extension().is_none_or(|e| e != "safetensors") {
        bail!("--out {}: expected a .safetensors file name", args.out.display());
    }
    let folder = args.out.parent().unwrap_or(std::path::Path::new(""));
    crate::paths::check_folder_writable(folder, "--out", &args.out)?;
    let origin = args.model.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<embedded>".into());
    let device = candle_core::Device::Cpu;
    let mut classifier = EmotionClassifier::from_bytes(&input_bytes, &origin, &device)?;
    classifier.set_precision(Precision::Auto)?;
    // Fitted from the uncalibrated model: a file calibrated before is calibrated afresh.
    classifier.set_temperature_enabled(false);
    // The network's own probabilities; the bias is added below, at the chosen scale (with
    // --tta, to the views' average rather than to each view: a small difference).
    classifier.set_logit_bias_enabled(false);
    let undo = LogitBias::undo_from_metadata(&classifier.metadata)?;
    let scale = match (args.logit_bias_scale, &undo) {
        (Some(_), None) => bail!("{origin} has no logit_bias (trained without class weights): there is nothing to scale"),
        (Some(s), Some(_)) if !LogitBias::SCALE_RANGE.contains(&s) => {
            bail!("--logit-bias-scale {s}: expected a share in {}..={}", LogitBias::SCALE_RANGE.start(), LogitBias::SCALE_RANGE.end())
        }
        (Some(s), Some(_)) => s,
        (None, _) => current_scale(&classifier.metadata, undo.as_ref())?,
    };
    let labels = match args.labels {
        Some(set) => set,
        None if classifier.metadata.get("val_labels").is_some_and(|l| l == LabelSet::Ferplus.name()) => LabelSet::Ferplus,
        None => LabelSet::Fer2013,
    };
    let data = Dataset::load(&args.data)?;
    let Some((indices, truth)) = data.scored(labels) else {
        bail!("--labels {}: {} has no such labels", labels.name(), args.data);
    };
    // A temperature fitted on a handful of faces runs to the edge of its range (one image: the
    // smallest, every probability made near-certain) and would ship in the model.
    if truth.len() < MIN_IMAGES {
        bail!(
            "{}: {} scored with {} labels: too few to fit a temperature (at least {MIN_IMAGES} images; a validation split such as labels.csv:val has 3,372)",
            args.data,
            if truth.len() == 1 { "1 image".to_owned() } else { format!("{} images", truth.len()) },
            labels.name()
        );
    }
    let view_scale = classifier.view_scale;
    let mut models = [classifier];
    let probabilities = predict_ensemble(&mut models, |c| args.tta.views(view_scale, c.preprocess), &data, &device, args.batch.max(1))?;
    check_finite(&probabilities).map_err(anyhow::Error::msg)?;
    let raw: Vec<[f32; NUM_CLASSES]> = indices.iter().map(|&i| probabilities[i]).collect();
    let bias = undo.map(|u| LogitBias::scaled(&u, scale));
    if let Some(undo) = &undo {
        print_scale_table(undo, &raw, &truth, scale);
    }
    let scored: Vec<[f32; NUM_CLASSES]> = match &bias {
        Some(bias) => raw.iter().map(|p| LogitBias::apply(p, bias)).collect(),
        None => raw,
    };
    let fit = TemperatureFit::compute(&scored, &truth);
    let (t_min, t_max) = (*Temperature::RANGE.start(), *Temperature::RANGE.end());
    if fit.temperature < t_min * 1.01 || fit.temperature > t_max * 0.99 {
        eprintln!(
            "warning: temperature {:.4} is at the edge of its range ({t_min}..={t_max}): the fit did not settle; the images may be too few or unlike the model's",
            fit.temperature
        );
    }
    if undo.is_some() {
        println!("logit bias scale {scale:.3} (of the bias that undoes the class weights)");
    }
    println!(
        "{origin} on {} ({} images, {} labels, {}{}): temperature {:.4}\n  NLL {:.4} -> {:.4}   ECE (15 bins) {:.4} -> {:.4}   ECE cross-fitted on halves {:.4}",
        args.data,
        fit.n,
        labels.name(),
        models[0].arithmetic(),
        args.tta.describe(),
        fit.temperature,
        fit.nll_before,
        fit.nll_after,
        fit.ece_before,
        fit.ece_after,
        fit.ece_cross_fitted
    );
    let mut meta: HashMap<String, String> = read_metadata(&input_bytes)?;
    meta.insert(Temperature::KEY.into(), Temperature::format(fit.temperature));
    if let (Some(undo), Some(bias)) = (&undo, &bias) {
        meta.insert(LogitBias::KEY.into(), LogitBias::format(bias));
        meta.insert(LogitBias::UNDO_KEY.into(), LogitBias::format(undo));
        meta.insert(LogitBias::SCALE_KEY.into(), format!("{scale:.3}"));
    }
    meta.insert(
        "temperature_fit".into(),
        format!(
            "{} images of {} ({} labels, {}): NLL {:.4} -> {:.4}, ECE {:.4} -> {:.4}, cross-fitted ECE {:.4}; {command_line}",
            fit.n,
            args.data,
            labels.name(),
            models[0].arithmetic(),
            fit.nll_before,
            fit.nll_after,
            fit.ece_before,
            fit.ece_after,
            fit.ece_cross_fitted
        ),
    );
    let written = with_metadata(&input_bytes, meta)?;
    // What is written loads as a model: checked before it replaces anything.
    EmotionClassifier::from_bytes(&written, &args.out.display().to_string(), &device)?;
    let partial = args.out.with_extension("safetensors.partial");
    std::fs::write(&partial, &written).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// The share of the undo that the file's bias holds: its `logit_bias_scale`, 1 for a file as
/// training wrote it; an error for a scale outside the range or a bias that is not that share.
fn current_scale(meta: &HashMap<String, String>, undo: Option<&[f32; NUM_CLASSES]>) -> Result<f32> {
    let Some(text) = meta.get(LogitBias::SCALE_KEY) else {
        return Ok(1.0);
    };
    let scale = text.trim().parse::<f32>().ok().filter(|s| LogitBias::SCALE_RANGE.contains(s));
    let Some(scale) = scale else {
        bail!("metadata {}='{text}' is not a share in 0..=1", LogitBias::SCALE_KEY);
    };
    let bias = LogitBias::from_metadata(meta)?;
    let consistent = match (bias, undo) {
        (Some(b), Some(u)) => b.iter().zip(u).all(|(b, u)| (b - u * scale).abs() < 1e-4),
        _ => false,
    };
    if !consistent {
        bail!("metadata {} is not {} x {}: give --logit-bias-scale to set it again", LogitBias::KEY, scale, LogitBias::UNDO_KEY);
    }
    Ok(scale)
}

/// What each share of the logit bias does on the calibration data (the label, not the
/// probabilities: the temperature does not change it).
fn print_scale_table(undo: &[f32; NUM_CLASSES], raw: &[[f32; NUM_CLASSES]], labels: &[u8], chosen: f32) {
    println!("logit bias scale: plain and balanced accuracy, recall per class (angry disgust fear happy sad surprise neutral)");
    let mut scales = vec![1.0, 0.8, 0.6, 0.5, 0.4, 0.2, 0.0, chosen];
    scales.sort_by(|a, b| b.total_cmp(a));
    scales.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
    for s in scales {
        let bias = LogitBias::scaled(undo, s);
        let adjusted: Vec<[f32; NUM_CLASSES]> = raw.iter().map(|p| LogitBias::apply(p, &bias)).collect();
        let report = Report::compute(&adjusted, labels);
        let recall: Vec<String> =
            CLASS_NAMES.iter().map(|c| report.per_class.get(*c).map_or("-".into(), |m| format!("{:.3}", m.recall))).collect();
        let mark = if (s - chosen).abs() < 1e-6 { "  <- written" } else { "" };
        println!("  {s:5.2}  plain {:.4}  balanced {:.4}  recall {}{mark}", report.accuracy, report.balanced_accuracy, recall.join(" "));
    }
}

/// The safetensors file `bytes` with its metadata replaced by `meta` (tensors byte for byte).
fn with_metadata(bytes: &[u8], meta: HashMap<String, String>) -> Result<Vec<u8>> {
    let tensors = safetensors::SafeTensors::deserialize(bytes)?;
    let mut names = tensors.names();
    names.sort();
    let views =
        names.into_iter().map(|n| Ok((n.to_string(), tensors.tensor(n)?))).collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    crate::checkpoint::sorted_header(safetensors::serialize(views, Some(meta))?)
}
