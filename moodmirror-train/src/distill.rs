//! Knowledge distillation for `train --teacher`: the averaged class probabilities of one or more
//! trained models, used as soft targets. Either computed once per training image under test-time
//! augmentation ([`TeacherTargets`]) or, with `--teacher-online`, on every training batch exactly
//! as the student sees it, augmented and mixed ([`OnlineTeachers`]: consistent teaching).
//!
//! The teachers' raw probabilities are used (without their logit bias): a teacher trained with
//! the same class weights predicts `∝ w_k · p(k | x)`, the distribution the student's weighted
//! hard-label loss also aims at, so the student's own logit bias stays right.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use crate::dataset::Dataset;
use crate::evaluate::{add_probabilities, predict_ensemble, probability_rows, Tta};
use moodmirror::emotion::{EmotionClassifier, InputContract, Preprocess, NUM_CLASSES};

/// A teacher as distillation uses it: its raw probabilities, without its logit bias.
fn load_teacher(path: &Path, device: &Device) -> Result<EmotionClassifier> {
    let mut teacher = EmotionClassifier::from_file(path, device).with_context(|| format!("loading teacher {}", path.display()))?;
    teacher.set_logit_bias_enabled(false);
    Ok(teacher)
}

/// Soft targets of the teachers for each image of the training set, in dataset order.
pub struct TeacherTargets {
    pub probabilities: Vec<[f32; NUM_CLASSES]>,
}

impl TeacherTargets {
    /// Runs every teacher over `data` under `tta` and averages their probabilities.
    pub fn compute(teachers: &[PathBuf], tta: Tta, data: &Dataset, device: &Device) -> Result<Self> {
        if teachers.is_empty() {
            bail!("distillation needs at least one --teacher");
        }
        let mut models = teachers.iter().map(|path| load_teacher(path, device)).collect::<Result<Vec<_>>>()?;
        let probabilities = predict_ensemble(&mut models, |t| tta.views(t.view_scale, t.preprocess), data, device, 256)?;
        Ok(Self { probabilities })
    }

    /// What identifies a set of targets: the teachers (path and a hash of the contents: models
    /// of one architecture all have the same size), the views and the data.
    fn key(teachers: &[PathBuf], tta: Tta, data: &Dataset) -> String {
        use std::hash::{Hash, Hasher};
        let files: Vec<String> = teachers
            .iter()
            .map(|p| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(p).unwrap_or_default().hash(&mut hasher);
                format!("{}:{:016x}", p.display(), hasher.finish())
            })
            .collect();
        format!("{}|{tta:?}|{} images|labels {:?}", files.join(","), data.len(), data.class_counts())
    }

    /// The targets cached at `cache` when they were made from the same teachers, views and data;
    /// otherwise computed and written there (a resumed run does not pay for them again).
    pub fn load_or_compute(cache: &Path, teachers: &[PathBuf], tta: Tta, data: &Dataset, device: &Device) -> Result<Self> {
        let key = Self::key(teachers, tta, data);
        if let Ok(bytes) = std::fs::read(cache) {
            let meta = moodmirror::emotion::read_metadata(&bytes).unwrap_or_default();
            if meta.get("teacher_key") == Some(&key) {
                let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
                if let Some(t) = tensors.get("probabilities") {
                    let flat = t.flatten_all()?.to_vec1::<f32>()?;
                    if flat.len() == data.len() * NUM_CLASSES {
                        eprintln!("distill: teacher targets from {}", cache.display());
                        return Ok(Self::from_flat(&flat));
                    }
                }
            }
        }
        let started = std::time::Instant::now();
        let targets = Self::compute(teachers, tta, data, device)?;
        eprintln!(
            "distill: {} teacher(s) x {} views over {} images in {:.0} s",
            teachers.len(),
            tta.views(1.0, moodmirror::emotion::Preprocess::None).len(),
            data.len(),
            started.elapsed().as_secs_f64()
        );
        let flat: Vec<f32> = targets.probabilities.iter().flatten().copied().collect();
        let tensors = HashMap::from([("probabilities".to_string(), Tensor::from_vec(flat, (data.len(), NUM_CLASSES), &Device::Cpu)?)]);
        let meta = HashMap::from([("teacher_key".to_string(), key)]);
        crate::checkpoint::save_safetensors(&tensors, &meta, cache)?;
        Ok(targets)
    }

    fn from_flat(flat: &[f32]) -> Self {
        Self { probabilities: probability_rows(flat).collect() }
    }

    /// Agreement of the averaged teachers with the labels (a sanity figure for the log).
    pub fn accuracy(&self, labels: &[u8]) -> f64 {
        let right = self.probabilities.iter().zip(labels).filter(|(p, &y)| moodmirror::emotion::argmax(&p[..]).0 == y as usize).count();
        right as f64 / labels.len().max(1) as f64
    }
}

/// Teachers that label each training batch as the student sees it. Their int8 forward pass costs
/// a fraction of a training step (about 13 ms per teacher and view for 64 faces here).
pub struct OnlineTeachers {
    teachers: Vec<EmotionClassifier>,
    mirror: bool,
    mirrored: Vec<f32>,
}

impl OnlineTeachers {
    /// Loads the teachers (raw probabilities, as for [`TeacherTargets`]); `tta` is `none` or
    /// `mirror` (more views of an already augmented image would cost more than the step).
    /// The teachers see the student's preprocessed input, so they must preprocess as it does.
    pub fn load(paths: &[PathBuf], tta: Tta, device: &Device, student: Preprocess) -> Result<Self> {
        if paths.is_empty() {
            bail!("distillation needs at least one --teacher");
        }
        let mirror = match tta {
            Tta::None => false,
            Tta::Mirror => true,
            Tta::TenCrop => bail!("--teacher-online runs the teachers on every batch: --teacher-tta none or mirror, not ten-crop"),
            Tta::Grid => bail!("--teacher-online runs the teachers on every batch: --teacher-tta none or mirror, not grid"),
        };
        let teachers: Vec<EmotionClassifier> = paths.iter().map(|path| load_teacher(path, device)).collect::<Result<_>>()?;
        if let Some((path, t)) = paths.iter().zip(&teachers).find(|(_, t)| t.preprocess != student) {
            bail!(
                "--teacher-online: teacher {} preprocesses crops as '{}', the student as '{}'; use cached teacher targets (no --teacher-online) or a teacher with the same --preprocess",
                path.display(),
                t.preprocess.name(),
                student.name()
            );
        }
        Ok(Self { teachers, mirror, mirrored: Vec::new() })
    }

    /// The teachers' averaged probabilities for `input` (`batch` normalised 48x48 images),
    /// written into `out` (cleared first).
    pub fn probabilities(&mut self, input: &[f32], batch: usize, device: &Device, out: &mut Vec<[f32; NUM_CLASSES]>) -> Result<()> {
        let s = InputContract::SIZE;
        let input = &input[..batch * InputContract::PIXELS];
        if self.mirror {
            self.mirrored.clear();
            self.mirrored.extend(input.chunks_exact(s).flat_map(|row| row.iter().rev().copied()));
        }
        let mut views = vec![Tensor::from_slice(input, (batch, 1, s, s), device)?];
        if self.mirror {
            views.push(Tensor::from_slice(&self.mirrored, (batch, 1, s, s), device)?);
        }
        let parts = views.len() * self.teachers.len();
        let mut sum = vec![0f32; batch * NUM_CLASSES];
        for teacher in &mut self.teachers {
            for x in &views {
                add_probabilities(&mut sum, &teacher.logits(x)?, parts)?;
            }
        }
        out.clear();
        out.extend(probability_rows(&sum));
        Ok(())
    }
}
