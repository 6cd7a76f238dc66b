//! `moodmirror evaluate`: an emotion model (or an ensemble) scored on labelled images, or the
//! element's pipeline scored on a labelled video.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::{annotate, image_cmd, outputs, video_eval};
use moodmirror::emotion;
use moodmirror_train::{dataset, dataset::Dataset, evaluate, plots};

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// Directory with one folder per class, fer2013.csv:PublicTest (:Training, :PrivateTest), or
    /// the originals' labels.csv:val (scored on FER2013's labels and on FER+'s majority).
    #[arg(long, required_unless_present = "video", conflicts_with = "video")]
    data: Option<String>,
    /// A labelled video instead: the element's own pipeline runs on it and is scored per frame
    /// against --segments (present, fresh, frame and settled accuracy, frames to the right label).
    #[arg(long, requires = "segments")]
    video: Option<PathBuf>,
    /// The video's truth: CSV with first_frame,last_frame,x,y,size,label per labelled region
    /// (the format of make_face_clip.py).
    #[arg(long, requires = "video")]
    segments: Option<PathBuf>,
    /// Labelled regions move this many pixels per frame to the right (make_face_clip.py --drift).
    #[arg(long, default_value_t = 0, requires = "video")]
    drift: i64,
    /// Face detector for --video.
    #[arg(long, value_enum, default_value = "yunet")]
    detector: image_cmd::DetectorArg,
    /// Smallest face side in pixels for --video [default: the element's].
    #[arg(long)]
    min_face_size: Option<u32>,
    #[command(flatten)]
    video_settings: annotate::VideoSettings,
    /// The label set of the main report when the data has several [default: fer2013]; the
    /// others follow it, and report.json holds all under `by_labels`.
    #[arg(long, value_enum)]
    labels: Option<dataset::LabelSet>,
    /// Weights (.safetensors); the embedded default when omitted. Give it several times to
    /// evaluate the ensemble (class probabilities averaged over the models), e.g. a set of
    /// distillation teachers.
    #[arg(long)]
    model: Vec<PathBuf>,
    /// Where to write report.json, confusion_matrix.png and roc_curves.png.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Test-time augmentation: average the predictions of several views of each image
    /// (`--tta` alone: the image and its mirror).
    #[arg(long, value_enum, num_args = 0..=1, default_value_t = evaluate::Tta::None, default_missing_value = "mirror")]
    tta: evaluate::Tta,
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Arithmetic of the CNN: auto, f32 or int8; auto is int8 on x86-64 CPUs with AVX2, as in the element.
    #[arg(long, default_value = "auto")]
    precision: emotion::Precision,
    /// Show the network this central part of each 48x48 image instead of the model's own
    /// `view_scale` (metadata; 1.0 = the whole image).
    #[arg(long)]
    view_scale: Option<f32>,
    /// Leave out the model's logit bias (metadata `logit_bias`, which undoes the class weighting
    /// of training, wholly or the share `logit_bias_scale` that `calibrate` set): the raw
    /// network, which favours rare classes.
    #[arg(long)]
    no_logit_bias: bool,
    /// Leave out the model's calibration temperature (metadata `temperature`, fitted by
    /// `moodmirror calibrate`): the probabilities as trained.
    #[arg(long)]
    no_temperature: bool,
    /// Write each image's source, true label (of the main label set; empty where it has none)
    /// and seven probabilities to this CSV.
    #[arg(long)]
    predictions: Option<PathBuf>,
}

pub fn run(args: &EvaluateArgs) -> Result<()> {
    if let (Some(video), Some(segments)) = (&args.video, &args.segments) {
        if args.model.len() > 1 {
            anyhow::bail!("--video runs the element, which takes one --model");
        }
        let run = video_eval::VideoRun {
            video,
            element: annotate::ElementStage {
                detector: args.detector,
                min_face_size: args.min_face_size,
                precision: None,
                model: args.model.first().map(PathBuf::as_path),
                draw: false,
                video: &args.video_settings,
            },
        };
        video_eval::evaluate(&run, segments, args.drift, args.report.as_deref())?;
        return Ok(());
    }
    let Some(data_arg) = &args.data else { anyhow::bail!("--data or --video is needed") };
    if let Some(path) = &args.predictions {
        let mut inputs = args.model.clone();
        inputs.push(PathBuf::from(data_arg.rsplit_once(':').map_or(data_arg.as_str(), |(p, _)| p)));
        outputs::check_output(path, "--predictions", &inputs, true)?;
    }
    let device = candle_core::Device::Cpu;
    let mut classifiers = Vec::new();
    if args.model.is_empty() {
        classifiers.push(emotion::EmotionClassifier::embedded(&device)?);
    }
    for path in &args.model {
        classifiers.push(emotion::EmotionClassifier::from_file(path, &device)?);
    }
    if let Some(scale) = args.view_scale {
        if !(0.5..=1.0).contains(&scale) {
            anyhow::bail!("--view-scale {scale}: expected a number in 0.5..=1");
        }
    }
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        outputs::check_folder_writable(dir, "--report", dir)?;
    }
    let data = Dataset::load(data_arg)?;
    let view_scale_of = |c: &emotion::EmotionClassifier| args.view_scale.unwrap_or(c.view_scale);
    let mut described = Vec::new();
    for classifier in &mut classifiers {
        classifier.set_precision(args.precision)?;
        classifier.set_logit_bias_enabled(!args.no_logit_bias);
        classifier.set_temperature_enabled(!args.no_temperature);
        let view_scale = view_scale_of(classifier);
        described.push(format!(
            "arch {}, {}, view scale {view_scale:.4}, {}, {}",
            classifier.arch.name(),
            classifier.arithmetic(),
            match (classifier.logit_bias(), classifier.metadata.get(emotion::LogitBias::SCALE_KEY)) {
                (Some(_), Some(scale)) => format!("logit bias (scale {scale})"),
                (Some(_), None) => "logit bias".into(),
                (None, _) => "no logit bias".into(),
            },
            match classifier.temperature() {
                Some(t) => format!("temperature {t:.3}"),
                None => "no temperature".into(),
            }
        ));
    }
    let views_of = |c: &emotion::EmotionClassifier| args.tta.views(view_scale_of(c), c.preprocess);
    let view_count = views_of(&classifiers[0]).len();
    let probs = evaluate::predict_ensemble(&mut classifiers, views_of, &data, &device, args.batch.max(1))?;
    evaluate::check_finite(&probs).map_err(anyhow::Error::msg)?;
    // Every label set the data has is scored; the first (or --labels) is the main report.
    let mut sets = data.label_sets();
    if let Some(wanted) = args.labels {
        if !sets.contains(&wanted) {
            anyhow::bail!("--labels {}: {} has no such labels", wanted.name(), data_arg);
        }
        sets.retain(|s| *s != wanted);
        sets.insert(0, wanted);
    }
    let reports: Vec<(dataset::LabelSet, evaluate::Report)> =
        sets.iter().filter_map(|&set| data.scored(set).map(|(i, l)| (set, evaluate::Report::compute_subset(&probs, &i, &l)))).collect();
    let Some((main_set, report)) = reports.first().cloned() else {
        anyhow::bail!("{}: no labels to score", data_arg);
    };
    if let Some(path) = &args.predictions {
        write_predictions(path, &data, &probs, main_set)?;
        println!("predictions written to {}", path.display());
    }
    let names: Vec<String> = args.model.iter().map(|p| p.display().to_string()).collect();
    if names.len() > 1 {
        println!("ensemble of {} models (probabilities averaged){}", names.len(), args.tta.describe());
        for (name, about) in names.iter().zip(&described) {
            println!("  model: {name} ({about})");
        }
    } else {
        let name = names.first().cloned().unwrap_or_else(|| "embedded default".into());
        println!("model: {name} ({}){}", described.join(""), args.tta.describe());
    }
    if reports.len() > 1 {
        println!("labels: {} ({} images scored)", main_set.name(), report.n);
    }
    print!("{}", report.to_text());
    for (set, other) in &reports[1..] {
        println!("\nlabels: {} ({} images scored)", set.name(), other.n);
        print!("{}", other.to_text());
    }
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut json = serde_json::to_value(&report)?;
        json["model"] = match names.len() {
            0 => serde_json::Value::Null,
            1 => serde_json::json!(names[0]),
            _ => serde_json::json!(names),
        };
        json["tta"] = serde_json::json!(args.tta != evaluate::Tta::None);
        json["tta_views"] = serde_json::json!(view_count);
        json["precision"] = serde_json::json!(classifiers[0].precision_name());
        json["view_scale"] = serde_json::json!(args.view_scale.unwrap_or(classifiers[0].view_scale));
        json["logit_bias"] = serde_json::json!(classifiers.iter().all(|c| c.logit_bias().is_some()));
        json["temperature"] = serde_json::json!(classifiers.iter().map(|c| c.temperature()).collect::<Vec<_>>());
        json["data"] = serde_json::json!(data_arg);
        json["labels"] = serde_json::json!(main_set.name());
        json["absent_classes"] = serde_json::json!(report.absent_classes());
        let mut by_labels = serde_json::Map::new();
        for (set, r) in &reports {
            by_labels.insert(set.name().into(), serde_json::to_value(r)?);
        }
        json["by_labels"] = serde_json::Value::Object(by_labels);
        let path = dir.join("report.json");
        std::fs::write(&path, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", path.display()))?;
        plots::confusion_heatmap(&report, &dir.join("confusion_matrix.png"))?;
        plots::roc_curves(&report, &dir.join("roc_curves.png"))?;
        plots::reliability_diagram(&report, &dir.join("reliability.png"))?;
        for (set, r) in &reports[1..] {
            plots::confusion_heatmap(r, &dir.join(format!("confusion_matrix_{}.png", set.name())))?;
        }
        println!("\nreport written to {}", dir.display());
    }
    Ok(())
}

/// The predictions CSV: `source,label,angry,…,neutral`, one row per image in data order, the label
/// of `set` (empty for an image that set does not score, e.g. a FER+ tie). Written beside the
/// target and renamed when complete.
fn write_predictions(path: &std::path::Path, data: &Dataset, probs: &[[f32; emotion::NUM_CLASSES]], set: dataset::LabelSet) -> Result<()> {
    use std::io::Write;
    let mut labels: Vec<Option<u8>> = vec![None; data.len()];
    if let Some((indices, truth)) = data.scored(set) {
        for (i, l) in indices.into_iter().zip(truth) {
            labels[i] = Some(l);
        }
    }
    let partial = outputs::partial(path);
    let file = std::fs::File::create(&partial).with_context(|| format!("writing {}", partial.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let write = |out: &mut std::io::BufWriter<std::fs::File>| -> std::io::Result<()> {
        writeln!(out, "source,label,{}", emotion::CLASS_NAMES.join(","))?;
        for (i, p) in probs.iter().enumerate() {
            let source = data.sources.get(i).map(String::as_str).unwrap_or_default();
            // A source with a comma or quote is quoted, CSV style.
            let source =
                if source.contains([',', '"', '\n']) { format!("\"{}\"", source.replace('"', "\"\"")) } else { source.to_string() };
            let label = labels[i].map(|l| emotion::CLASS_NAMES[l as usize]).unwrap_or_default();
            write!(out, "{source},{label}")?;
            for v in p {
                write!(out, ",{v:.6}")?;
            }
            writeln!(out)?;
        }
        out.flush()
    };
    if let Err(e) = write(&mut out) {
        drop(out);
        let _ = std::fs::remove_file(&partial);
        return Err(e).with_context(|| format!("writing {}", partial.display()));
    }
    drop(out);
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
