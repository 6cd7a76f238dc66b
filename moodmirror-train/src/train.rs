//! `moodmirror train`: trains an emotion CNN on FER2013 with augmentation, class-balanced
//! label-smoothed cross-entropy, AdamW/SGD/RMSProp, warm-up + cosine schedule, per-epoch
//! checkpoints that `--resume` continues from, best-accuracy and best-loss weights, early stopping.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, D};
use candle_nn::VarMap;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

pub use crate::loss::{class_weights, distilled_weighted_ce, one_hot_rows, smoothed_weighted_ce};

use crate::checkpoint::{check_deployable, metadata, model_name_of, model_tensors, save_safetensors};
use crate::dataset::{Augment, BatchMix, CameraAugment, Dataset};
use crate::distill::{OnlineTeachers, TeacherTargets};
use crate::evaluate::{check_finite, predict, Report};
use crate::optim::{CosineSchedule, Optimizer, OptimizerKind};
use crate::plots::{self, EpochRecord};
use moodmirror::emotion::View;
use moodmirror::emotion::{Arch, EmotionNet, InputContract, LogitBias, NUM_CLASSES};
use moodmirror::layers::{seed_dropout, SeededInit};

pub use crate::train_args::{ComputeDevice, ConvPrecision, TargetKind, TrainArgs};

/// Where the soft targets of distillation come from.
enum Teaching {
    /// Computed once per training image (clean, under `--teacher-tta`).
    Cached(TeacherTargets),
    /// The teachers run on each batch.
    Online(OnlineTeachers),
}

/// Checkpoint metadata that `--resume` reads back.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct TrainState {
    epoch: usize,
    step: usize,
    best_accuracy: f64,
    best_loss: f64,
    epochs_since_best: usize,
    history: Vec<EpochRecord>,
}

fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    out.with_file_name(format!("{stem}.{suffix}.safetensors"))
}

/// Sets `vars` from a model file of architecture `arch` (`--init`).
fn load_model_weights(path: &Path, arch: Arch, vars: &HashMap<String, candle_core::Var>, device: &Device) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let meta = moodmirror::emotion::read_metadata(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let file_arch = Arch::from_metadata(&meta).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if file_arch != arch {
        bail!("{} holds arch {}, not {}", path.display(), file_arch.name(), arch.name());
    }
    set_vars(vars, &candle_core::safetensors::load_buffer(&bytes, device)?, path)
}

/// Sets every variable from the tensor of the same name read from `origin`.
fn set_vars(vars: &HashMap<String, candle_core::Var>, tensors: &HashMap<String, Tensor>, origin: &Path) -> Result<()> {
    for (name, var) in vars {
        let t = tensors.get(name).with_context(|| format!("{} lacks {name}", origin.display()))?;
        var.set(t).with_context(|| format!("{}: tensor {name}", origin.display()))?;
    }
    Ok(())
}

pub fn checkpoint_path(out: &Path) -> PathBuf {
    sibling(out, "ckpt")
}

/// The view scale new models record and are validated at: the whole 48x48 frame. Training's
/// mean view is 44/48 of it (random 44-px crops); viewing that at inference raised FER2013 val
/// accuracy (61.6 → 62.7 %) but moved neutral faces to sad (neutral recall 0.69 → 0.58) and
/// cost 6.9 points on the in-the-wild portraits (detect + classify 71.9 → 65.0 %).
pub const WHOLE_FRAME: f32 = 1.0;

pub fn run(args: &TrainArgs, command_line: &str) -> Result<()> {
    let device = args.device.device()?;
    if args.epochs == 0 {
        bail!("--epochs 0: nothing would be trained or written; give at least 1");
    }
    if args.batch < 2 {
        bail!("--batch must be at least 2 (batch norm)");
    }
    args.check_numbers()?;
    // Where the model goes is checked before any work (an epoch can take minutes).
    if args.out.is_dir() {
        bail!("--out {} is a folder: name the model file (.safetensors)", args.out.display());
    }
    crate::paths::check_folder_writable(args.out.parent().unwrap_or(Path::new("")), "--out", &args.out)?;
    // The weights it starts from and its teachers are read, never replaced (a checkpoint given to
    // --resume is the run's own, and is).
    let read = || args.init.iter().chain(&args.teacher).map(PathBuf::as_path);
    crate::paths::check_not_an_input(&args.out, "--out", read())?;
    crate::paths::check_not_an_input(&sibling(&args.out, "best-loss"), "--out's best-loss file", read())?;
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir).with_context(|| format!("--report: creating {}", dir.display()))?;
    }
    let target = args.target()?;
    let train = Dataset::load_for(&args.train, target).context("loading --train")?;
    // Validation keeps every image: each label set picks the ones it scores.
    let val = Dataset::load(&args.val).context("loading --val")?;
    let label_set = target.label_set();
    let Some((val_indices, val_labels)) = val.scored(label_set) else {
        bail!("--val {} has no {} labels to validate a {} target on", args.val, label_set.name(), target.describe());
    };
    if train.len() < args.batch {
        bail!("--train has {} images, fewer than one batch of {}", train.len(), args.batch);
    }
    let counts = train.class_counts();
    let weights = class_weights(&counts, args.class_weight_power);
    // Validation, model selection and the files written all see the prior-corrected logits,
    // as the classifier will.
    let bias = LogitBias::undoing_class_weights(&weights);
    let bias_tensor = LogitBias::tensor(&bias, &device)?;
    let file_metadata = |accuracy: f64, epoch: usize| {
        let mut m = metadata(args.arch, command_line, accuracy, epoch, WHOLE_FRAME);
        m.insert(LogitBias::KEY.into(), LogitBias::format(&bias));
        m.insert("class_weight_power".into(), args.class_weight_power.to_string());
        m.insert(InputContract::PREPROCESS_KEY.into(), args.preprocess.name().into());
        m.insert("model_name".into(), model_name_of(&args.out));
        m.insert("target".into(), target.describe());
        m.insert("val_labels".into(), label_set.name().into());
        m
    };
    eprintln!(
        "train: {} images {:?}, target {}; val: {} images scored on {} labels; class weights {:?}; preprocess {}",
        train.len(),
        counts,
        target.describe(),
        val_indices.len(),
        label_set.name(),
        weights.map(|w| (w * 100.0).round() / 100.0),
        args.preprocess.name()
    );

    let varmap = VarMap::new();
    // Initial weights and dropout masks depend only on the seed.
    let vb = SeededInit::varbuilder(&varmap, args.seed, &device);
    let net = EmotionNet::load(vb, args.arch)?;
    let vars = varmap.data().lock().unwrap_or_else(|e| e.into_inner()).clone();
    let weight_decay = args.weight_decay.unwrap_or(match args.optimizer {
        OptimizerKind::Adamw => 0.05,
        OptimizerKind::Sgd | OptimizerKind::Rmsprop => 5e-4,
    });
    let mut optimizer = Optimizer::new(args.optimizer, &vars, weight_decay)?;
    let n_params: usize = vars.values().map(|v| v.elem_count()).sum();
    let bf16 = args.conv_precision.uses_bf16() && device.is_cpu();
    eprintln!(
        "arch {} with {n_params} parameters, optimizer {}, convolution GEMMs in {}",
        args.arch.name(),
        args.optimizer.name(),
        if bf16 { "bf16 (f32 sums)" } else { "f32" }
    );

    let mut state =
        TrainState { epoch: 0, step: 0, best_accuracy: 0.0, best_loss: f64::INFINITY, epochs_since_best: 0, history: Vec::new() };
    if let Some(resume) = &args.resume {
        let bytes = std::fs::read(resume).with_context(|| format!("reading {}", resume.display()))?;
        let meta = moodmirror::emotion::read_metadata(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", resume.display()))?;
        let saved: TrainState = serde_json::from_str(meta.get("train_state").map(String::as_str).unwrap_or(""))
            .with_context(|| format!("{} is not a training checkpoint", resume.display()))?;
        if meta.get("arch").map(String::as_str) != Some(args.arch.name()) {
            bail!("{} holds arch {:?}, not {}", resume.display(), meta.get("arch"), args.arch.name());
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, &device)?;
        set_vars(&vars, &tensors, resume)?;
        optimizer.load_state(&tensors, saved.step)?;
        eprintln!("resumed from {} after epoch {}", resume.display(), saved.epoch);
        state = saved;
    }

    if let Some(init) = &args.init {
        load_model_weights(init, args.arch, &vars, &device)?;
        eprintln!("initial weights from {}", init.display());
    }
    let mut ramp_steps = 0;
    let mut teaching = if args.teacher.is_empty() {
        None
    } else if args.teacher_online {
        eprintln!("distill: {} teacher(s) on every batch, weight {}", args.teacher.len(), args.distill_weight);
        Some(Teaching::Online(OnlineTeachers::load(&args.teacher, args.teacher_tta, &device, args.preprocess)?))
    } else {
        let targets = TeacherTargets::load_or_compute(&sibling(&args.out, "teacher"), &args.teacher, args.teacher_tta, &train, &device)?;
        eprintln!(
            "distill: teachers agree with the training labels on {:.2} % of images; weight {}",
            100.0 * targets.accuracy(&train.labels),
            args.distill_weight
        );
        Some(Teaching::Cached(targets))
    };
    let mut soft = Vec::with_capacity(args.batch);

    let n_train = args.limit.unwrap_or(train.len()).min(train.len());
    let steps_per_epoch = n_train / args.batch;
    if steps_per_epoch == 0 {
        bail!("--limit {n_train}: fewer training images than one batch of {}", args.batch);
    }
    let schedule = CosineSchedule {
        peak: args.lr,
        warmup: args.warmup_epochs * steps_per_epoch,
        total: args.epochs * steps_per_epoch,
        final_fraction: 0.01,
    };
    if let Some(start) = args.start_epoch {
        if args.init.is_none() {
            bail!("--start-epoch {start} continues from saved weights: give them with --init");
        }
        if start >= args.epochs {
            bail!("--start-epoch {start}: the schedule has only {} epochs (--epochs)", args.epochs);
        }
        state.epoch = start;
        state.step = start * steps_per_epoch;
        ramp_steps = (steps_per_epoch / 4).max(1);
        eprintln!("continuing the {}-epoch schedule after epoch {start}: learning rate {:.2e}", args.epochs, schedule.lr(state.step));
    }
    let first_step = state.step;
    let camera = CameraAugment { low_res_probability: args.low_res, sharpen_probability: args.sharpen, ..CameraAugment::default() };
    let augment = Augment {
        camera: if args.no_camera_augment { CameraAugment::off() } else { camera },
        zoom_out_probability: args.zoom_out,
        preprocess: args.preprocess,
        ..Augment::default()
    };
    let val_view = View::centred(WHOLE_FRAME, false).preprocessed(args.preprocess);
    let px = InputContract::PIXELS;
    let s = InputContract::SIZE;
    let mut input = vec![0f32; args.batch * px];
    let mut mixed = if args.mixup > 0.0 { vec![0f32; args.batch * px] } else { Vec::new() };
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir)?;
    }

    for epoch in state.epoch + 1..=args.epochs {
        let started = Instant::now();
        seed_dropout(args.seed ^ (epoch as u64) << 32);
        // The epoch's order and augmentations depend only on (seed, epoch): resumable runs
        // see the same data as uninterrupted ones.
        let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed.wrapping_mul(1_000_003) + epoch as u64);
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        order.truncate(n_train);
        let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(steps_per_epoch as u64) };
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{}", args.epochs));
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = args.lr;
        for (batch_idx, chunk) in order.chunks_exact(args.batch).enumerate() {
            let base_seed = args.seed ^ ((epoch as u64) << 40) ^ ((batch_idx as u64) << 16);
            input.par_chunks_mut(px).zip(chunk.par_iter()).enumerate().for_each(|(j, (dst, &idx))| {
                let mut r = rand::rngs::StdRng::seed_from_u64(base_seed.wrapping_add(j as u64));
                augment.apply(train.image(idx), dst, &mut r);
            });
            let labels: Vec<u8> = chunk.iter().map(|&i| train.labels[i]).collect();
            let label_rows: Vec<[f32; NUM_CLASSES]> = chunk.iter().map(|&i| train.target_row(i)).collect();
            let mix = if args.mixup > 0.0 {
                let mut r = rand::rngs::StdRng::seed_from_u64(base_seed ^ 0x6d69_7875_7000);
                let m = BatchMix::sample(args.batch, args.mixup, &mut r)?;
                m.mix_images(&input, &mut mixed, px);
                Some(m)
            } else {
                None
            };
            let batch_input = if mix.is_some() { &mixed } else { &input };
            match &mut teaching {
                Some(Teaching::Cached(t)) => {
                    soft.clear();
                    soft.extend(chunk.iter().map(|&i| t.probabilities[i]));
                    if let Some(m) = &mix {
                        m.mix_rows(&mut soft);
                    }
                }
                Some(Teaching::Online(t)) => t.probabilities(batch_input, args.batch, &device, &mut soft)?,
                None => {}
            }
            let x = Tensor::from_slice(batch_input, (args.batch, 1, s, s), &device)?;
            // Forward and backward with the GEMMs of `--conv-precision`; validation stays f32.
            let (logits, loss, grads) = moodmirror::ops::with_bf16_matmul(bf16, || -> candle_core::Result<_> {
                let logits = net.forward_t(&x, true)?;
                let soft_targets = teaching.as_ref().map(|_| (&soft[..], args.distill_weight as f32));
                let loss = distilled_weighted_ce(&logits, &label_rows, &weights, args.label_smoothing, mix.as_ref(), soft_targets)?;
                let grads = loss.backward()?;
                Ok((logits, loss, grads))
            })?;
            let loss_value = loss.to_scalar::<f32>()?;
            if !loss_value.is_finite() {
                bar.finish_and_clear();
                bail!(
                    "training diverged: the loss is {loss_value} at epoch {epoch}, batch {}; nothing of this epoch was written{}. Try a lower --lr.",
                    batch_idx + 1,
                    if state.epoch > 0 {
                        format!(" (the last good weights are {} and checkpoint {} from epoch {})", args.out.display(), checkpoint_path(&args.out).display(), state.epoch)
                    } else {
                        String::new()
                    }
                );
            }
            lr = schedule.lr(state.step);
            let since_start = state.step - first_step;
            if since_start < ramp_steps {
                lr *= (since_start + 1) as f64 / ramp_steps as f64;
            }
            optimizer.apply(&grads, lr)?;
            state.step += 1;
            let preds = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            // Under mixup a prediction counts as right when it names the larger share.
            let dominant = |i: usize| match &mix {
                Some(m) if m.lambda[i] < 0.5 => labels[m.partner[i]],
                _ => labels[i],
            };
            correct += preds.iter().enumerate().filter(|(i, p)| **p == dominant(*i) as u32).count();
            seen += labels.len();
            loss_sum += loss_value as f64 * labels.len() as f64;
            bar.inc(1);
            bar.set_message(format!("loss {:.4} acc {:.3} lr {lr:.2e}", loss_sum / seen as f64, correct as f64 / seen as f64));
        }
        bar.finish_and_clear();
        let probs = predict(&mut |x| LogitBias::add(net.forward_t(x, false)?, Some(&bias_tensor)), &val, &device, 256, &[val_view])?;
        check_finite(&probs)
            .map_err(|e| anyhow::anyhow!("training diverged at epoch {epoch}: on validation {e}; nothing of this epoch was written"))?;
        let report = Report::compute_subset(&probs, &val_indices, &val_labels);
        let other_sets: Vec<String> = val
            .label_sets()
            .into_iter()
            .filter(|s| *s != label_set)
            .filter_map(|s| val.scored(s).map(|(i, l)| format!("{} acc {:.4}", s.name(), Report::compute_subset(&probs, &i, &l).accuracy)))
            .collect();
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            val_loss: report.loss,
            val_accuracy: report.accuracy,
            lr,
            seconds: started.elapsed().as_secs_f64(),
        };
        eprintln!(
            "epoch {epoch}/{}: train loss {:.4} acc {:.4} | val ({}) loss {:.4} acc {:.4} macro-F1 {:.4}{} | {:.0}s ({:.0} img/s)",
            args.epochs,
            record.train_loss,
            record.train_accuracy,
            label_set.name(),
            record.val_loss,
            record.val_accuracy,
            report.macro_f1,
            other_sets.iter().map(|s| format!(" | {s}")).collect::<String>(),
            record.seconds,
            seen as f64 / record.seconds
        );
        state.history.push(record);
        state.epoch = epoch;

        let tensors = model_tensors(&varmap);
        // Only a model the element can run is ever written (the last good one stays).
        let deployable = check_deployable(&tensors, &file_metadata(report.accuracy, epoch), &val.images);
        if let Err(e) = &deployable {
            eprintln!("  epoch {epoch}: not saved: {e:#} (is --lr {} too high?)", args.lr);
        }
        if report.accuracy > state.best_accuracy && deployable.is_ok() {
            state.best_accuracy = report.accuracy;
            state.epochs_since_best = 0;
            save_safetensors(&tensors, &file_metadata(report.accuracy, epoch), &args.out)?;
            eprintln!("  best val accuracy so far → {}", args.out.display());
        } else {
            state.epochs_since_best += 1;
        }
        if report.loss < state.best_loss && deployable.is_ok() {
            state.best_loss = report.loss;
            let path = sibling(&args.out, "best-loss");
            save_safetensors(&tensors, &file_metadata(report.accuracy, epoch), &path)?;
        }
        let mut ckpt = tensors;
        ckpt.extend(optimizer.state());
        let mut meta = file_metadata(report.accuracy, epoch);
        meta.insert("train_state".into(), serde_json::to_string(&state)?);
        meta.insert("optimizer".into(), optimizer.kind().name().into());
        save_safetensors(&ckpt, &meta, &checkpoint_path(&args.out))?;
        if let Some(dir) = &args.report {
            write_history(&state.history, dir)?;
        }
        if state.epochs_since_best >= args.patience {
            eprintln!("early stop: no val accuracy gain for {} epochs", args.patience);
            break;
        }
    }
    if !args.out.is_file() {
        bail!(
            "no epoch gave a model the element can run (finite outputs on val in its arithmetic): nothing written to {}; \
             lower --lr (now {}) or check the training data",
            args.out.display(),
            args.lr
        );
    }
    eprintln!("best val accuracy {:.4}; weights in {}", state.best_accuracy, args.out.display());
    Ok(())
}

fn write_history(history: &[EpochRecord], dir: &Path) -> Result<()> {
    std::fs::write(dir.join("history.json"), serde_json::to_string_pretty(history)?)?;
    let mut csv = String::from("epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds\n");
    for r in history {
        csv += &format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.6e},{:.1}\n",
            r.epoch, r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy, r.lr, r.seconds
        );
    }
    std::fs::write(dir.join("history.csv"), csv)?;
    plots::training_curves(history, &dir.join("curves.png"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_weights_average_to_one_and_favour_rare_classes() {
        let counts = [3995, 436, 4097, 7215, 4830, 3171, 4965];
        let w = class_weights(&counts, 0.5);
        let total: usize = counts.iter().sum();
        let mean: f32 = counts.iter().zip(&w).map(|(&c, &x)| c as f32 * x).sum::<f32>() / total as f32;
        assert!((mean - 1.0).abs() < 1e-5);
        assert!(w[1] > w[0] && w[0] > w[3]);
        assert_eq!(class_weights(&counts, 0.0), [1.0; NUM_CLASSES]);
    }

    #[test]
    fn distilled_ce_mixes_label_and_teacher_targets_by_weight() -> candle_core::Result<()> {
        let logits = Tensor::new(&[[1f32, 0., 0., 0., 0., 0., 0.], [0., 0., 2., 0., 0., 0., 0.]], &Device::Cpu)?;
        let mut w = [1f32; NUM_CLASSES];
        w[4] = 3.0;
        let teacher = [[0.5, 0.5, 0., 0., 0., 0., 0.], [0., 0., 0.25, 0., 0.75, 0., 0.]];
        let labels = [0u8, 4];
        let log_p = |row: usize, c: usize| -> f64 {
            let z: Vec<f64> = if row == 0 { vec![1., 0., 0., 0., 0., 0., 0.] } else { vec![0., 0., 2., 0., 0., 0., 0.] };
            z[c] - z.iter().map(|v| v.exp()).sum::<f64>().ln()
        };
        let scalar = |t: Tensor| -> candle_core::Result<f64> { Ok(t.to_scalar::<f32>()? as f64) };
        // α = 0: the weighted label loss (weights 1 and 3), whatever the teacher says.
        let weighted_label_sum = -log_p(0, 0) - 3.0 * log_p(1, 4);
        let hard = weighted_label_sum / 4.0;
        let got = scalar(distilled_weighted_ce(&logits, &one_hot_rows(&labels), &w, 0.0, None, Some((&teacher, 0.0)))?)?;
        assert!((got - hard).abs() < 1e-5, "{got} vs {hard}");
        assert!((scalar(smoothed_weighted_ce(&logits, &labels, &w, 0.0)?)? - hard).abs() < 1e-5);
        // α = 1: plain cross-entropy against the teacher's probabilities, labels ignored.
        let soft = -(0.5 * log_p(0, 0) + 0.5 * log_p(0, 1) + 0.25 * log_p(1, 2) + 0.75 * log_p(1, 4)) / 2.0;
        let got = scalar(distilled_weighted_ce(&logits, &one_hot_rows(&labels), &w, 0.0, None, Some((&teacher, 1.0)))?)?;
        assert!((got - soft).abs() < 1e-5, "{got} vs {soft}");
        // α = 0.5: label part weighted (1-α)·w[y], teacher part α, normalised by their sum.
        let mixed = (0.5 * weighted_label_sum + 0.5 * 2.0 * soft) / (0.5 * 4.0 + 0.5 * 2.0);
        let got = scalar(distilled_weighted_ce(&logits, &one_hot_rows(&labels), &w, 0.0, None, Some((&teacher, 0.5)))?)?;
        assert!((got - mixed).abs() < 1e-5, "{got} vs {mixed}");
        assert!(distilled_weighted_ce(&logits, &one_hot_rows(&labels), &w, 0.0, None, Some((&teacher[..1], 0.5))).is_err());
        Ok(())
    }

    #[test]
    fn mixup_ce_mixes_the_two_labels_with_their_class_weights() -> candle_core::Result<()> {
        let logits = Tensor::new(&[[1f32, 0., 0., 0., 0., 0., 0.], [0., 0., 2., 0., 0., 0., 0.]], &Device::Cpu)?;
        let mut w = [1f32; NUM_CLASSES];
        w[4] = 3.0;
        let labels = [0u8, 4];
        let log_p = |row: usize, c: usize| -> f64 {
            let z: Vec<f64> = if row == 0 { vec![1., 0., 0., 0., 0., 0., 0.] } else { vec![0., 0., 2., 0., 0., 0., 0.] };
            z[c] - z.iter().map(|v| v.exp()).sum::<f64>().ln()
        };
        // Sample 0 is 0.75 of itself (class 0) and 0.25 of sample 1 (class 4, weight 3);
        // sample 1 is itself only.
        let mix = BatchMix { partner: vec![1, 1], lambda: vec![0.75, 1.0] };
        let sum = -(0.75 * log_p(0, 0) + 0.25 * 3.0 * log_p(0, 4)) - 3.0 * log_p(1, 4);
        let want = sum / (0.75 + 0.75 + 3.0);
        let got = distilled_weighted_ce(&logits, &one_hot_rows(&labels), &w, 0.0, Some(&mix), None)?.to_scalar::<f32>()? as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // With a teacher (α = 0.5): its rows are taken as they are.
        let teacher = [[0.5, 0., 0., 0., 0.5, 0., 0.], [0., 0., 0., 0., 1., 0., 0.]];
        let soft = -(0.5 * log_p(0, 0) + 0.5 * log_p(0, 4)) - log_p(1, 4);
        let want = (0.5 * sum + 0.5 * soft) / (0.5 * 4.5 + 0.5 * 2.0);
        let got =
            distilled_weighted_ce(&logits, &one_hot_rows(&labels), &w, 0.0, Some(&mix), Some((&teacher, 0.5)))?.to_scalar::<f32>()? as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let bad = BatchMix { partner: vec![2, 0], lambda: vec![0.5, 0.5] };
        assert!(distilled_weighted_ce(&logits, &one_hot_rows(&labels), &w, 0.0, Some(&bad), None).is_err());
        Ok(())
    }

    #[test]
    fn vote_rows_weigh_each_class_share_with_its_class_weight() -> candle_core::Result<()> {
        let logits = Tensor::new(&[[1f32, 0., 0., 0., 0.5, 0., 0.]], &Device::Cpu)?;
        let mut w = [1f32; NUM_CLASSES];
        w[4] = 3.0;
        let votes = [[0.6f32, 0., 0., 0., 0.4, 0., 0.]];
        let z = [1f64, 0., 0., 0., 0.5, 0., 0.];
        let log_p = |c: usize| z[c] - z.iter().map(|v| v.exp()).sum::<f64>().ln();
        // W_q = 0.6·1 + 0.4·3 = 1.8; the loss is Σ w_c q_c (-log p_c) / W_q.
        let want = -(0.6 * log_p(0) + 1.2 * log_p(4)) / 1.8;
        let got = distilled_weighted_ce(&logits, &votes, &w, 0.0, None, None)?.to_scalar::<f32>()? as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        Ok(())
    }

    #[test]
    fn smoothed_ce_matches_hand_computation() -> candle_core::Result<()> {
        let logits = Tensor::new(&[[2f32, 0., 0., 0., 0., 0., 0.], [0., 0., 0., 1., 0., 0., 0.]], &Device::Cpu)?;
        let w = [1f32; NUM_CLASSES];
        let got = smoothed_weighted_ce(&logits, &[0, 3], &w, 0.0)?.to_scalar::<f32>()?;
        let l0 = -(2f64.exp() / (2f64.exp() + 6.0)).ln();
        let l1 = -(1f64.exp() / (1f64.exp() + 6.0)).ln();
        assert!((got as f64 - (l0 + l1) / 2.0).abs() < 1e-5);
        Ok(())
    }
}
