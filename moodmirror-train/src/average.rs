//! `moodmirror average`: stochastic weight averaging (SWA) of checkpoints from one training run.
//!
//! The weights of the last epochs of a run lie around a flat minimum; their average usually
//! generalises better than any one of them. Batch norm's running statistics do not average
//! (they belong to each model's own activations), so they are re-estimated on training images
//! with the averaged weights, as `torch.optim.swa_utils.update_bn` does.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;

use rand::SeedableRng;

use crate::checkpoint::{metadata, model_tensors, save_safetensors};
use crate::dataset::{Augment, Dataset, LabelSet};
use crate::evaluate::{predict, Report};
use crate::train::{class_weights, WHOLE_FRAME};
use moodmirror::emotion::View;
use moodmirror::emotion::{read_metadata, Arch, EmotionNet, InputContract, LogitBias, Preprocess, NUM_CLASSES};
use moodmirror::layers::{seed_dropout, SeededInit, BN_MOMENTUM};

#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct AverageArgs {
    /// Weight files or checkpoints of one architecture, e.g. the last epochs' checkpoints.
    #[cfg_attr(feature = "clap", arg(required = true, num_args = 2..))]
    pub inputs: Vec<PathBuf>,
    #[cfg_attr(feature = "clap", arg(long))]
    pub out: PathBuf,
    /// Training images (class folders or fer2013.csv:Training) to re-estimate batch norm on.
    #[cfg_attr(feature = "clap", arg(long))]
    pub train: String,
    /// How many training images (evenly spread) batch norm statistics are estimated from.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 8192))]
    pub bn_images: usize,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 128))]
    pub batch: usize,
    /// Seed of the augmentation and dropout during the batch norm passes.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 42))]
    pub seed: u64,
    /// Validation images: print the averaged model's report and store its accuracy.
    #[cfg_attr(feature = "clap", arg(long))]
    pub val: Option<String>,
    /// The `--class-weight-power` the inputs were trained with, for files that do not record
    /// their logit bias (written by `train` since it records one): the averaged file then gets
    /// the bias that undoes those class weights on `--train`'s class counts.
    #[cfg_attr(feature = "clap", arg(long))]
    pub class_weight_power: Option<f64>,
}

/// Batch norm statistics are re-estimated, never averaged.
fn is_running_statistic(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// What [`mean_weights`] reads from the checkpoints.
#[derive(Debug)]
struct MeanWeights {
    arch: Arch,
    /// The element-wise mean of each model tensor.
    mean: HashMap<String, Tensor>,
    /// The logit bias they share, if they have one.
    bias: Option<[f32; NUM_CLASSES]>,
    /// How they were trained: the first one's command (one run made them all).
    training_command: Option<String>,
    /// The crop preprocessing they share.
    preprocess: Preprocess,
    /// The labels the first one was validated on (`val_labels`), FER2013's when not recorded.
    val_labels: LabelSet,
}

/// The element-wise mean of the model tensors (optimizer state left out) of `files`, checked
/// to be of one architecture with the same tensors and logit bias.
fn mean_weights(files: &[PathBuf]) -> Result<MeanWeights> {
    let mut arch = None;
    let mut bias = None;
    let mut training_command = None;
    let mut preprocess = Preprocess::None;
    let mut val_labels = LabelSet::Fer2013;
    let mut sum: HashMap<String, Tensor> = HashMap::new();
    for (i, file) in files.iter().enumerate() {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let meta = read_metadata(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let this = Arch::from_metadata(&meta).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        match arch {
            None => arch = Some(this),
            Some(a) if a != this => bail!("{} holds arch {}, the first file {}", file.display(), this.name(), a.name()),
            Some(_) => {}
        }
        let this_bias = LogitBias::from_metadata(&meta).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        if i > 0 && this_bias != bias {
            bail!("{} has logit bias {this_bias:?}, the first file {bias:?}: trained with other class weights", file.display());
        }
        bias = this_bias;
        let this_preprocess = InputContract::preprocess(&meta).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        if i > 0 && this_preprocess != preprocess {
            bail!(
                "{} preprocesses crops as '{}', the first file as '{}': they are different models",
                file.display(),
                this_preprocess.name(),
                preprocess.name()
            );
        }
        preprocess = this_preprocess;
        if i == 0 {
            training_command = meta.get("training_command").cloned();
            if meta.get("val_labels").map(String::as_str) == Some(LabelSet::Ferplus.name()) {
                val_labels = LabelSet::Ferplus;
            }
        }
        let tensors: HashMap<String, Tensor> = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?
            .into_iter()
            .filter(|(name, _)| !name.starts_with("optim."))
            .collect();
        if i > 0 && tensors.len() != sum.len() {
            bail!("{} has {} model tensors, the first file {}", file.display(), tensors.len(), sum.len());
        }
        for (name, t) in tensors {
            let t = t.to_dtype(candle_core::DType::F32)?;
            let total = match sum.remove(&name) {
                None if i == 0 => t,
                None => bail!("{} has tensor {name}, the first file does not", file.display()),
                Some(s) if s.shape() != t.shape() => {
                    bail!("{}: tensor {name} has shape {:?}, the first file {:?}", file.display(), t.shape(), s.shape())
                }
                Some(s) => (s + t)?,
            };
            sum.insert(name, total);
        }
    }
    let arch = arch.context("no input files")?;
    let n = files.len() as f64;
    let mean = sum.into_iter().map(|(k, v)| Ok((k, (v / n)?))).collect::<Result<_>>()?;
    Ok(MeanWeights { arch, mean, bias, training_command, preprocess, val_labels })
}

/// Sets batch norm's running statistics to their mean over `batches` (forward passes in
/// training mode). The cumulative mean, not the moving average (which would remember only the
/// last ~10 batches): the statistics are zeroed before each batch, so that afterwards they hold
/// `BN_MOMENTUM` times that batch's statistics.
fn reestimate_batch_norm(net: &EmotionNet, varmap: &VarMap, batches: impl Iterator<Item = candle_core::Result<Tensor>>) -> Result<()> {
    let statistics: Vec<Var> = varmap
        .data()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(name, _)| is_running_statistic(name))
        .map(|(_, var)| var.clone())
        .collect();
    let mut sums: Vec<Tensor> = statistics.iter().map(|v| v.as_tensor().zeros_like()).collect::<candle_core::Result<_>>()?;
    let mut count = 0;
    for batch in batches {
        for var in &statistics {
            var.set(&var.as_tensor().zeros_like()?)?;
        }
        net.forward_t(&batch?, true)?;
        for (var, sum) in statistics.iter().zip(sums.iter_mut()) {
            *sum = (&*sum + (var.as_tensor() / BN_MOMENTUM)?)?;
        }
        count += 1;
    }
    if count == 0 {
        bail!("no batch to estimate batch norm statistics on");
    }
    for (var, sum) in statistics.iter().zip(&sums) {
        var.set(&(sum / count as f64)?)?;
    }
    Ok(())
}

pub fn run(args: &AverageArgs, command_line: &str) -> Result<()> {
    if args.batch < 2 {
        bail!("--batch must be at least 2 (batch norm)");
    }
    crate::paths::check_not_an_input(&args.out, "--out", args.inputs.iter().map(PathBuf::as_path))?;
    let MeanWeights { arch, mean, bias: recorded_bias, training_command, preprocess, val_labels } = mean_weights(&args.inputs)?;
    let device = Device::Cpu;
    let varmap = VarMap::new();
    {
        let mut vars = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        for (name, t) in &mean {
            vars.insert(name.clone(), Var::from_tensor(t)?);
        }
    }
    let net = EmotionNet::load(SeededInit::varbuilder(&varmap, 0, &device), arch)?;
    if varmap.data().lock().unwrap_or_else(|e| e.into_inner()).len() != mean.len() {
        bail!("the averaged files do not hold every tensor of architecture {}", arch.name());
    }

    // Re-estimate batch norm's running statistics: forward passes in training mode (batch
    // statistics, moving averages updated) on images spread over the set, augmented as in
    // training (statistics of clean images shifted wild-dev's neutral faces to angry: 71.9 %
    // → 62.8 % for the shipped model, though FER val gained 0.9 points).
    let train = Dataset::load(&args.train).context("loading --train")?;
    if train.len() < args.batch {
        bail!("--train has {} images, fewer than one batch of {}", train.len(), args.batch);
    }
    let bias = match args.class_weight_power {
        Some(power) => Some(LogitBias::undoing_class_weights(&class_weights(&train.class_counts(), power))),
        None => recorded_bias,
    };
    if bias.is_none() {
        eprintln!("note: the inputs record no logit bias and --class-weight-power is not given: the averaged file gets none");
    }
    let n = args.bn_images.clamp(args.batch, train.len());
    let px = InputContract::PIXELS;
    let s = InputContract::SIZE;
    let mut input = vec![0f32; args.batch * px];
    let mut used = 0;
    let augment = Augment { preprocess, ..Augment::default() };
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    seed_dropout(args.seed);
    let batches = std::iter::from_fn(|| {
        if used + args.batch > n {
            return None;
        }
        for (j, dst) in input.chunks_exact_mut(px).enumerate() {
            let index = ((used + j) * train.len()) / n;
            augment.apply(train.image(index), dst, &mut rng);
        }
        used += args.batch;
        Some(Tensor::from_slice(&input, (args.batch, 1, s, s), &device))
    });
    reestimate_batch_norm(&net, &varmap, batches)?;
    eprintln!(
        "averaged {} files ({} tensors, batch norm statistics from {used} training images)",
        args.inputs.len(),
        mean.keys().filter(|k| !is_running_statistic(k)).count()
    );

    let accuracy = match &args.val {
        Some(val) => {
            let val = Dataset::load(val).context("loading --val")?;
            let bias = bias.map(|b| LogitBias::tensor(&b, &device)).transpose()?;
            let mut logits = |x: &Tensor| LogitBias::add(net.forward_t(x, false)?, bias.as_ref());
            let probs = predict(&mut logits, &val, &device, 256, &[View::centred(WHOLE_FRAME, false).preprocessed(preprocess)])?;
            let (indices, labels) = val
                .scored(val_labels)
                .with_context(|| format!("--val has no {} labels, which the inputs were validated on", val_labels.name()))?;
            let report = Report::compute_subset(&probs, &indices, &labels);
            println!("labels: {} ({} images)", val_labels.name(), report.n);
            print!("{}", report.to_text());
            report.accuracy
        }
        None => f64::NAN,
    };
    let tensors = model_tensors(&varmap);
    let mut meta = metadata(arch, command_line, accuracy, 0, WHOLE_FRAME);
    meta.insert(InputContract::PREPROCESS_KEY.into(), preprocess.name().into());
    meta.insert("val_labels".into(), val_labels.name().into());
    meta.insert("model_name".into(), crate::checkpoint::model_name_of(&args.out));
    meta.insert("averaged_from".into(), args.inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(","));
    meta.remove("epoch");
    if let Some(command) = training_command {
        meta.insert("inputs_training_command".into(), command);
    }
    if let Some(bias) = &bias {
        meta.insert(LogitBias::KEY.into(), LogitBias::format(bias));
    }
    if let Some(power) = args.class_weight_power {
        meta.insert("class_weight_power".into(), power.to_string());
    }
    if accuracy.is_nan() {
        meta.remove("val_accuracy");
    }
    crate::checkpoint::check_deployable(&tensors, &meta, &train.images)
        .with_context(|| format!("the averaged model cannot run as the element runs it; {} not written", args.out.display()))?;
    save_safetensors(&tensors, &meta, &args.out)?;
    eprintln!("averaged weights → {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_biased(dir: &std::path::Path, name: &str, arch: Arch, seed: u64, bias: Option<[f32; NUM_CLASSES]>) -> PathBuf {
        let varmap = VarMap::new();
        EmotionNet::load(SeededInit::varbuilder(&varmap, seed, &Device::Cpu), arch).unwrap();
        let tensors = model_tensors(&varmap);
        let path = dir.join(name);
        let mut meta = metadata(arch, "test", 0.5, 1, WHOLE_FRAME);
        if let Some(bias) = bias {
            meta.insert(LogitBias::KEY.into(), LogitBias::format(&bias));
        }
        save_safetensors(&tensors, &meta, &path).unwrap();
        path
    }

    fn write(dir: &std::path::Path, name: &str, arch: Arch, seed: u64) -> PathBuf {
        write_biased(dir, name, arch, seed, None)
    }

    /// Running statistics of the layers before the first dropout (stages 0 and 1 of the VGG nets),
    /// which see the same inputs on every pass.
    fn statistics(varmap: &VarMap) -> Vec<f32> {
        let data = varmap.data().lock().unwrap();
        let mut names: Vec<&String> =
            data.keys().filter(|n| is_running_statistic(n) && (n.starts_with("stage0") || n.starts_with("stage1"))).collect();
        assert_eq!(names.len(), 4);
        names.sort();
        names.iter().flat_map(|n| data[*n].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
    }

    #[test]
    fn batch_norm_statistics_are_the_mean_over_batches() {
        let varmap = VarMap::new();
        let net = EmotionNet::load(SeededInit::varbuilder(&varmap, 5, &Device::Cpu), Arch::VggSmall).unwrap();
        let s = InputContract::SIZE;
        let batch = |seed: u64| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let v: Vec<f32> = (0..4 * s * s).map(|_| rand::Rng::random_range(&mut rng, -2.0..2.0)).collect();
            Tensor::from_vec(v, (4, 1, s, s), &Device::Cpu)
        };
        let run = |seeds: &[u64]| {
            reestimate_batch_norm(&net, &varmap, seeds.iter().map(|&k| batch(k))).unwrap();
            statistics(&varmap)
        };
        let (x, y) = (run(&[1]), run(&[2]));
        // A batch repeated gives its own statistics; two batches give the mean of theirs.
        let xx = run(&[1, 1]);
        for (a, b) in x.iter().zip(&xx) {
            assert!((a - b).abs() < 1e-4 * a.abs().max(1.0), "{a} vs {b}");
        }
        let xy = run(&[1, 2]);
        let mut differs = false;
        for ((a, b), m) in x.iter().zip(&y).zip(&xy) {
            assert!((m - (a + b) / 2.0).abs() < 1e-4 * m.abs().max(1.0), "{m} vs mean of {a}, {b}");
            differs |= (a - b).abs() > 1e-3;
        }
        assert!(differs, "the two batches should have different statistics");
        assert!(reestimate_batch_norm(&net, &varmap, std::iter::empty()).is_err());
    }

    #[test]
    fn averages_tensor_by_tensor_and_refuses_mixed_architectures() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.safetensors", Arch::VggSmall, 1);
        let b = write(dir.path(), "b.safetensors", Arch::VggSmall, 2);
        let MeanWeights { arch, mean, bias, .. } = mean_weights(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(arch, Arch::VggSmall);
        assert_eq!(bias, None);
        let load = |p: &PathBuf| candle_core::safetensors::load(p, &Device::Cpu).unwrap();
        let (ta, tb) = (load(&a), load(&b));
        let name = "fc2.weight";
        let expected = ((&ta[name] + &tb[name]).unwrap() / 2.0).unwrap();
        let diff = (&mean[name] - expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-7);
        assert_eq!(mean.len(), ta.len());

        let other = write(dir.path(), "c.safetensors", Arch::Basic, 3);
        let err = mean_weights(&[a.clone(), other]).unwrap_err().to_string();
        assert!(err.contains("arch basic") && err.contains("vgg-small"), "{err}");

        // The logit bias is carried over when the files agree on it, refused when they do not.
        let bias = [0.5, -1.0, 0.0, 0.25, 0.0, 0.0, 0.0];
        let d = write_biased(dir.path(), "d.safetensors", Arch::VggSmall, 4, Some(bias));
        let e = write_biased(dir.path(), "e.safetensors", Arch::VggSmall, 5, Some(bias));
        assert_eq!(mean_weights(&[d.clone(), e]).unwrap().bias, Some(bias));
        let err = mean_weights(&[d, a]).unwrap_err().to_string();
        assert!(err.contains("logit bias") && err.contains("class weights"), "{err}");
    }
}
