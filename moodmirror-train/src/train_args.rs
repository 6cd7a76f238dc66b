//! `moodmirror train`'s arguments: what they are, and the checks made before any data is read.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::Device;

use crate::dataset::Target;
use crate::evaluate::Tta;
use crate::optim::OptimizerKind;
use moodmirror::emotion::{Arch, Preprocess};

#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct TrainArgs {
    /// Training data: a directory with one folder per class, or fer2013.csv:Training.
    #[cfg_attr(feature = "clap", arg(long))]
    pub train: String,
    /// Validation data (model selection, early stopping): directory or fer2013.csv:PublicTest.
    #[cfg_attr(feature = "clap", arg(long))]
    pub val: String,
    /// Where to write the best-val-accuracy weights (.safetensors). Also written beside it:
    /// `<stem>.best-loss.safetensors` and the resumable checkpoint `<stem>.ckpt.safetensors`.
    #[cfg_attr(feature = "clap", arg(long))]
    pub out: PathBuf,
    /// Architecture: vgg, vgg-large, vgg-small, basic or xception.
    #[cfg_attr(feature = "clap", arg(long, default_value = "vgg"))]
    pub arch: Arch,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 30))]
    pub epochs: usize,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 64))]
    pub batch: usize,
    /// Peak learning rate (after warm-up).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 2e-3))]
    pub lr: f64,
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value = "adamw"))]
    pub optimizer: OptimizerKind,
    /// Weight decay of conv/dense kernels [default: 0.05 for AdamW (decoupled), 5e-4 otherwise].
    #[cfg_attr(feature = "clap", arg(long))]
    pub weight_decay: Option<f64>,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.1))]
    pub label_smoothing: f64,
    /// Class weights ∝ (1 / frequency)^power; 0 disables, 1 fully balances.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.5))]
    pub class_weight_power: f64,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 2))]
    pub warmup_epochs: usize,
    /// Stop when val accuracy has not improved for this many epochs.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 15))]
    pub patience: usize,
    /// Continue from a checkpoint written by an earlier run (`<stem>.ckpt.safetensors`).
    #[cfg_attr(feature = "clap", arg(long))]
    pub resume: Option<PathBuf>,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 42))]
    pub seed: u64,
    /// Directory for history.json/.csv and curves.png.
    #[cfg_attr(feature = "clap", arg(long))]
    pub report: Option<PathBuf>,
    /// Use only the first N training images per epoch (quick experiments and tests).
    #[cfg_attr(feature = "clap", arg(long))]
    pub limit: Option<usize>,
    /// Hide the progress bar (logs one line per epoch instead).
    #[cfg_attr(feature = "clap", arg(long))]
    pub quiet: bool,
    /// Where to train: the CPU (our fast ops) or CUDA GPU 0 (needs a build with `--features cuda`).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value = "cpu"))]
    pub device: ComputeDevice,
    /// Arithmetic of the convolutions' matrix products on the CPU: bf16 inputs with f32 sums
    /// (where the CPU has AVX-512 BF16: the products about twice as fast, a training step
    /// 1.3–1.6x; f32 elsewhere) or f32.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value = "bf16"))]
    pub conv_precision: ConvPrecision,
    /// Start from these weights (a model file, e.g. the shipped default) with a fresh optimizer
    /// and schedule, instead of from random ones.
    #[cfg_attr(feature = "clap", arg(long, conflicts_with = "resume"))]
    pub init: Option<PathBuf>,
    /// With --init: weights saved after this epoch of a run with the same --epochs and --lr,
    /// continued on that run's schedule (the learning rate where it was) with a fresh optimizer
    /// whose step size ramps up over a quarter epoch while its moments rebuild. What a
    /// checkpoint too large to keep (its optimizer state) is replaced by.
    #[cfg_attr(feature = "clap", arg(long, requires = "init"))]
    pub start_epoch: Option<usize>,
    /// Teacher model for knowledge distillation (repeat for several; their probabilities are
    /// averaged). Each training target mixes the label with the teachers' raw probabilities on
    /// that image (computed once under `--teacher-tta`, cached in `<stem>.teacher.safetensors`).
    #[cfg_attr(feature = "clap", arg(long))]
    pub teacher: Vec<PathBuf>,
    /// Views of each training image the teachers average.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value = "ten-crop"))]
    pub teacher_tta: Tta,
    /// Share of the teachers' probabilities in each target (0..=1; the rest is the label).
    /// 0.7 made the shipped model (weights/README.md).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.7))]
    pub distill_weight: f64,
    /// Run the teachers on every training batch as the student sees it (augmented, and mixed
    /// with `--mixup`) instead of once on the clean images; `--teacher-tta` none or mirror.
    #[cfg_attr(feature = "clap", arg(long, requires = "teacher"))]
    pub teacher_online: bool,
    /// Mixup: each training image is blended with another of its batch, λ ~ Beta(A, A), and its
    /// target (labels, and teacher probabilities) with the same λ. 0 turns it off.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.0))]
    pub mixup: f64,
    /// What each image is fitted to: FER2013's label, FER+'s vote distribution (needs the
    /// originals' labels.csv), or a mix of both (`--target-mix`). FER+ targets validate on
    /// FER+'s majority labels.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value = "fer2013"))]
    pub target: TargetKind,
    /// Share of FER+'s votes in `--target mix` (the rest is FER2013's label).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.5))]
    pub target_mix: f32,
    /// What each crop goes through after augmentation, recorded in the model so inference
    /// does the same: none or standardize.
    #[cfg_attr(feature = "clap", arg(long, default_value = "none"))]
    pub preprocess: Preprocess,
    /// Leave out the camera-like degradations (gamma, blur, noise, JPEG) of the augmentation.
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_camera_augment: bool,
    /// Faces from other sources: the share of training images framed looser than FER2013's
    /// (the face 1/1.3 ..= 1 of the frame, edges replicated), the share shown at a low
    /// resolution (16-32 px and back) and the share sharpened (unsharp mask). 0 reproduces the
    /// earlier models' augmentation.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.0))]
    pub zoom_out: f32,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.0))]
    pub low_res: f32,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.0))]
    pub sharpen: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum TargetKind {
    Fer2013,
    Ferplus,
    Mix,
}

impl TrainArgs {
    pub fn target(&self) -> Result<Target> {
        Ok(match self.target {
            TargetKind::Fer2013 => Target::Fer2013,
            TargetKind::Ferplus => Target::FerPlus,
            TargetKind::Mix if (0.0..=1.0).contains(&self.target_mix) => Target::Mix { share: self.target_mix },
            TargetKind::Mix => bail!("--target-mix {}: expected a share in 0..=1", self.target_mix),
        })
    }

    /// The numeric arguments, checked before any data is read (loading FER2013 and building the
    /// model take a while; a typo should not wait for them).
    pub fn check_numbers(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr {}: expected a positive number", self.lr);
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            bail!("--label-smoothing {}: expected a share in 0..1 (0 turns it off)", self.label_smoothing);
        }
        if let Some(wd) = self.weight_decay.filter(|wd| !(wd.is_finite() && *wd >= 0.0)) {
            bail!("--weight-decay {wd}: expected a number ≥ 0");
        }
        if !self.class_weight_power.is_finite() {
            bail!("--class-weight-power {}: expected a number (0 disables, 1 fully balances)", self.class_weight_power);
        }
        if !(0.0..=1.0).contains(&self.distill_weight) {
            bail!("--distill-weight {}: expected a number in 0..=1", self.distill_weight);
        }
        if !(self.mixup >= 0.0 && self.mixup.is_finite()) {
            bail!("--mixup {}: expected a Beta parameter ≥ 0 (0 turns mixup off)", self.mixup);
        }
        for (name, p) in [("--zoom-out", self.zoom_out), ("--low-res", self.low_res), ("--sharpen", self.sharpen)] {
            if !(0.0..=1.0).contains(&p) {
                bail!("{name} {p}: expected a share of the images, 0..=1");
            }
        }
        Ok(())
    }
}

/// The arithmetic of the convolutions' matrix products in training (`--conv-precision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ConvPrecision {
    /// bf16 inputs, f32 accumulation (AVX-512 BF16; f32 on CPUs without it and on GPUs).
    Bf16,
    /// f32 throughout.
    F32,
}

impl ConvPrecision {
    /// Whether the bf16 GEMM actually runs.
    pub fn uses_bf16(self) -> bool {
        self == ConvPrecision::Bf16 && moodmirror::ops::gemm_bf16::available()
    }
}

/// The `--device` of `train` and `bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ComputeDevice {
    Cpu,
    Cuda,
}

impl ComputeDevice {
    /// The candle device, or an error saying why CUDA is not available.
    pub fn device(self) -> Result<Device> {
        match self {
            ComputeDevice::Cpu => Ok(Device::Cpu),
            ComputeDevice::Cuda => Ok(moodmirror::emotion::select_device(moodmirror::emotion::DeviceKind::Cuda)?.0),
        }
    }
}
