//! `moodmirror calibrate`: fits a model's temperature on labelled validation images and writes
//! the model with it.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::calibration::TemperatureFit;
use crate::dataset::{Dataset, LabelSet};
use crate::evaluate::{check_finite, predict_ensemble, Tta};
use moodmirror::emotion::{read_metadata, EmotionClassifier, Precision, Temperature, EMBEDDED_WEIGHTS, NUM_CLASSES};

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
    /// Views averaged while fitting; the element classifies one (`none`).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = Tta::None))]
    pub tta: Tta,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 256))]
    pub batch: usize,
}

/// `moodmirror calibrate`: fits the temperature on `--data`, reports the fit and writes the model
/// with it.
pub fn run(args: &CalibrateArgs, command_line: &str) -> Result<()> {
    let input_bytes = match &args.model {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => EMBEDDED_WEIGHTS.to_vec(),
    };
    if let Some(model) = &args.model {
        let same = std::fs::canonicalize(model).ok().zip(std::fs::canonicalize(&args.out).ok()).is_some_and(|(a, b)| a == b);
        if same {
            bail!("--out {} is the model itself: write the calibrated copy to another file", args.out.display());
        }
    }
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
    let labels = match args.labels {
        Some(set) => set,
        None if classifier.metadata.get("val_labels").is_some_and(|l| l == LabelSet::Ferplus.name()) => LabelSet::Ferplus,
        None => LabelSet::Fer2013,
    };
    let data = Dataset::load(&args.data)?;
    let Some((indices, truth)) = data.scored(labels) else {
        bail!("--labels {}: {} has no such labels", labels.name(), args.data);
    };
    let view_scale = classifier.view_scale;
    let mut models = [classifier];
    let probabilities = predict_ensemble(&mut models, |c| args.tta.views(view_scale, c.preprocess), &data, &device, args.batch.max(1))?;
    check_finite(&probabilities).map_err(anyhow::Error::msg)?;
    let scored: Vec<[f32; NUM_CLASSES]> = indices.iter().map(|&i| probabilities[i]).collect();
    let fit = TemperatureFit::compute(&scored, &truth);
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

/// The safetensors file `bytes` with its metadata replaced by `meta` (tensors byte for byte).
fn with_metadata(bytes: &[u8], meta: HashMap<String, String>) -> Result<Vec<u8>> {
    let tensors = safetensors::SafeTensors::deserialize(bytes)?;
    let mut names = tensors.names();
    names.sort();
    let views =
        names.into_iter().map(|n| Ok((n.to_string(), tensors.tensor(n)?))).collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    crate::checkpoint::sorted_header(safetensors::serialize(views, Some(meta))?)
}
