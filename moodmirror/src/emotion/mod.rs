//! The emotion classifier: FER2013's seven classes, the model's input contract, the CNN
//! architectures and loading of (embedded or user) weights.

mod calibration;
pub mod int8;
pub mod model;
mod view;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::ops;

pub use crate::device::{select_device, DeviceKind};
pub use crate::error::ModelError;
pub use calibration::{LogitBias, Temperature};
pub use model::{Arch, EmotionNet};
pub use view::{bilinear_clamped, normalize_into, normalize_view_into, View};

pub const NUM_CLASSES: usize = 7;

/// Class names in FER2013 label order: the order of the model's logits.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];

/// What the network expects: `INPUT_SIZE`² grayscale pixels `p` in 0..=255, fed as
/// `(p / 255 - MEAN) / STD`, shape `(B, 1, 48, 48)`; output logits in [`CLASS_NAMES`] order.
pub struct InputContract;

impl InputContract {
    pub const SIZE: usize = 48;
    pub const PIXELS: usize = Self::SIZE * Self::SIZE;
    pub const MEAN: f32 = 0.5;
    pub const STD: f32 = 0.25;

    #[inline]
    pub fn normalize(p: u8) -> f32 {
        (p as f32 / 255.0 - Self::MEAN) / Self::STD
    }

    /// Metadata key of the view scale: the network sees the central `view_scale` of the 48x48
    /// face frame, resampled to 48x48. Files without the key are viewed whole (1.0), as are the
    /// models `moodmirror train` writes (see `moodmirror_train::train::WHOLE_FRAME` for why).
    pub const VIEW_SCALE_KEY: &'static str = "view_scale";

    /// The view scale recorded in a model's metadata; an error for an unusable value.
    pub fn view_scale(metadata: &HashMap<String, String>) -> crate::Result<f32> {
        match metadata.get(Self::VIEW_SCALE_KEY) {
            None => Ok(1.0),
            Some(text) => match text.parse::<f32>() {
                Ok(v) if (0.5..=1.0).contains(&v) => Ok(v),
                _ => Err(crate::Error::ModelFile(format!("metadata {}='{text}' is not a number in 0.5..=1", Self::VIEW_SCALE_KEY))),
            },
        }
    }

    /// Metadata key of the crop preprocessing ([`Preprocess`]); files without it use `none`.
    pub const PREPROCESS_KEY: &'static str = "input_preprocess";

    /// The preprocessing recorded in a model's metadata; an error for an unknown name.
    pub fn preprocess(metadata: &HashMap<String, String>) -> crate::Result<Preprocess> {
        match metadata.get(Self::PREPROCESS_KEY) {
            None => Ok(Preprocess::None),
            Some(text) => Preprocess::from_name(text).ok_or_else(|| {
                crate::Error::ModelFile(format!("metadata {}='{text}' is not one of: none, standardize", Self::PREPROCESS_KEY))
            }),
        }
    }

    pub fn describe() -> String {
        format!(
            "{s}x{s} grayscale, x = (p/255 - {m}) / {d}, NCHW (B,1,{s},{s}) f32, logits in order {}",
            CLASS_NAMES.join(","),
            s = Self::SIZE,
            m = Self::MEAN,
            d = Self::STD
        )
    }
}

/// What a 48x48 crop goes through after [`InputContract::normalize`], the same in training
/// (after augmentation) and at inference (element, `image`, `evaluate`): one function,
/// [`Preprocess::apply`], recorded in the model file so each model is fed as it was trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preprocess {
    /// The normalised pixels as they are (models made before the originals; files without
    /// the metadata key).
    #[default]
    None,
    /// Each crop shifted and scaled to mean 0 and standard deviation 1 (a floor keeps flat
    /// crops from being amplified into noise): exposure and contrast of the camera drop out.
    Standardize,
}

impl Preprocess {
    /// Crops whose pixel standard deviation is below this (in normalised units: 2 % of the
    /// 0..255 range) are scaled as if they had it.
    const STD_FLOOR: f32 = 0.02 / InputContract::STD;

    pub fn name(self) -> &'static str {
        match self {
            Preprocess::None => "none",
            Preprocess::Standardize => "standardize",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "none" => Some(Preprocess::None),
            "standardize" => Some(Preprocess::Standardize),
            _ => None,
        }
    }

    /// Applies the preprocessing in place to one crop of normalised pixels.
    pub fn apply(self, crop: &mut [f32]) {
        match self {
            Preprocess::None => {}
            Preprocess::Standardize => {
                let n = crop.len().max(1) as f32;
                let mean = crop.iter().sum::<f32>() / n;
                let var = crop.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
                let scale = 1.0 / var.sqrt().max(Self::STD_FLOOR);
                for v in crop.iter_mut() {
                    *v = (*v - mean) * scale;
                }
            }
        }
    }
}

/// Names as on the command line and in model files: `none`, `standardize`.
impl std::str::FromStr for Preprocess {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        Self::from_name(name).ok_or_else(|| format!("unknown preprocessing '{name}' (none, standardize)"))
    }
}

impl std::fmt::Display for Preprocess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The default weights, trained by `moodmirror train` (see weights/README.md).
pub static EMBEDDED_WEIGHTS: &[u8] = include_bytes!("../../../weights/emotion.safetensors");

/// An error naming the first tensor that holds a NaN or an infinity (a diverged training run,
/// a corrupt file): such weights would turn every face into garbage without a word.
pub fn check_finite_tensors(bytes: &[u8]) -> crate::Result<()> {
    let file_error = |e: safetensors::SafeTensorError| crate::Error::ModelFile(e.to_string());
    let tensors = safetensors::SafeTensors::deserialize(bytes).map_err(file_error)?;
    let mut names = tensors.names();
    names.sort();
    for name in names {
        let view = tensors.tensor(name).map_err(file_error)?;
        let data = view.data();
        let bad = match view.dtype() {
            safetensors::Dtype::F32 => data.chunks_exact(4).position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
            safetensors::Dtype::F64 => data.chunks_exact(8).position(|b| !f64::from_le_bytes(b.try_into().unwrap_or([0; 8])).is_finite()),
            safetensors::Dtype::F16 => data.chunks_exact(2).position(|b| (u16::from_le_bytes([b[0], b[1]]) & 0x7c00) == 0x7c00),
            safetensors::Dtype::BF16 => data.chunks_exact(2).position(|b| (u16::from_le_bytes([b[0], b[1]]) & 0x7f80) == 0x7f80),
            _ => None,
        };
        if let Some(i) = bad {
            return Err(crate::Error::ModelFile(format!("tensor '{name}' holds a non-finite value (NaN or infinity) at element {i}")));
        }
    }
    Ok(())
}

/// Reads the `__metadata__` of a safetensors file (architecture, contract, training info).
pub fn read_metadata(bytes: &[u8]) -> crate::Result<HashMap<String, String>> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| crate::Error::ModelFile(e.to_string()))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// The arithmetic the emotion CNN runs in on the CPU (GPUs always run f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Precision {
    /// int8 on x86-64 CPUs with AVX2 (AVX-512 VNNI, AVX-VNNI or AVX2 kernels, for the
    /// VGG-style nets), f32 otherwise.
    Auto = 0,
    /// f32 everywhere: the arithmetic the model was trained in.
    F32 = 1,
    /// int8 convolutions (a slow portable kernel on CPUs without AVX2).
    Int8 = 2,
}

impl Precision {
    /// The element property's value for this precision.
    pub fn nick(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
    }
}

/// A ready-to-run emotion network and what its file says about it.
pub struct EmotionClassifier {
    net: EmotionNet,
    /// The int8 version of `net`, when the precision asks for it.
    int8: Option<int8::Int8VggNet>,
    device: Device,
    pub arch: Arch,
    /// The model's name for metadata readers (DL Streamer's `model_name`): the file's
    /// `model_name` metadata, else the file's stem.
    pub name: String,
    pub metadata: HashMap<String, String>,
    /// The part of the face frame the network looks at ([`InputContract::view_scale`]).
    pub view_scale: f32,
    /// What each crop goes through before the network ([`Preprocess`]).
    pub preprocess: Preprocess,
    /// [`LogitBias`] from the file, `(1, 7)`, when it has one.
    logit_bias: Option<Tensor>,
    /// The same values on the host, for [`Self::classify`].
    logit_bias_values: Option<[f32; NUM_CLASSES]>,
    /// Whether `logit_bias` is applied (on unless switched off to see the raw network).
    use_logit_bias: bool,
    /// [`Temperature`] from the file, when it has one.
    temperature: Option<f32>,
    /// Whether `temperature` is applied (on unless switched off to see the uncalibrated model).
    use_temperature: bool,
    /// Reused input buffer: no allocation per frame for the pixels.
    input: Vec<f32>,
}

impl EmotionClassifier {
    pub fn embedded(device: &Device) -> Result<Self, ModelError> {
        Self::from_bytes(EMBEDDED_WEIGHTS, "<embedded>", device)
    }

    pub fn from_file(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|reason| ModelError::Io { path: path.display().to_string(), reason })?;
        Self::from_bytes(&bytes, &path.display().to_string(), device)
    }

    /// Loads `model_location`, or the embedded default when it is empty.
    pub fn load(model_location: &str, device: &Device) -> Result<Self, ModelError> {
        if model_location.is_empty() {
            Self::embedded(device)
        } else {
            Self::from_file(Path::new(model_location), device)
        }
    }

    pub fn from_bytes(bytes: &[u8], origin: &str, device: &Device) -> Result<Self, ModelError> {
        let format_err = |reason: String| ModelError::Format { origin: origin.to_string(), reason };
        let metadata = read_metadata(bytes).map_err(|e| format_err(e.to_string()))?;
        check_finite_tensors(bytes).map_err(|e| format_err(e.to_string()))?;
        let view_scale = InputContract::view_scale(&metadata).map_err(|e| format_err(e.to_string()))?;
        let preprocess = InputContract::preprocess(&metadata).map_err(|e| format_err(e.to_string()))?;
        let arch = Arch::from_metadata(&metadata).map_err(|e| format_err(e.to_string()))?;
        let logit_bias_values = LogitBias::from_metadata(&metadata).map_err(|e| format_err(e.to_string()))?;
        let temperature = Temperature::from_metadata(&metadata).map_err(|e| format_err(e.to_string()))?;
        let logit_bias = match &logit_bias_values {
            Some(bias) => Some(LogitBias::tensor(bias, device).map_err(|e| format_err(e.to_string()))?),
            None => None,
        };
        let vb = VarBuilder::from_slice_safetensors(bytes, DType::F32, device).map_err(|e| format_err(e.to_string()))?;
        let mut net = EmotionNet::load(vb, arch).map_err(|e| ModelError::Shape {
            origin: origin.to_string(),
            arch: arch.name().to_string(),
            reason: e.to_string(),
        })?;
        // The classifier only infers: fold batch norm once, not on every call.
        net.freeze_for_inference().map_err(|e| format_err(e.to_string()))?;
        let stem = Path::new(origin).file_stem().map(|s| s.to_string_lossy().to_string());
        let name = metadata
            .get("model_name")
            .cloned()
            .or(stem.filter(|s| !s.starts_with('<')))
            .unwrap_or_else(|| "moodmirror-emotion".to_string());
        let mut classifier = Self {
            net,
            int8: None,
            device: device.clone(),
            arch,
            name,
            metadata,
            view_scale,
            preprocess,
            logit_bias,
            logit_bias_values,
            use_logit_bias: true,
            temperature,
            use_temperature: true,
            input: Vec::new(),
        };
        classifier.set_precision(Precision::Auto).map_err(|e| format_err(e.to_string()))?;
        Ok(classifier)
    }

    /// The model's own single view of a crop: its view scale and preprocessing, unmirrored.
    pub fn view(&self) -> View {
        View::centred(self.view_scale, false).preprocessed(self.preprocess)
    }

    pub fn net(&self) -> &EmotionNet {
        &self.net
    }

    /// Chooses f32 or int8 arithmetic; an error for int8 on a GPU or for an architecture
    /// without an int8 version.
    pub fn set_precision(&mut self, precision: Precision) -> crate::Result<()> {
        let kernel = match (precision, self.device.is_cpu()) {
            (Precision::F32, _) | (Precision::Auto, false) => None,
            (Precision::Int8, false) => {
                return Err(crate::Error::Precision("precision=int8 runs on the CPU only; use precision=f32 or auto on a GPU".into()))
            }
            (Precision::Auto, true) => ops::int8::Int8Kernel::detect(),
            (Precision::Int8, true) => Some(ops::int8::Int8Kernel::detect().unwrap_or(ops::int8::Int8Kernel::Portable)),
        };
        if let (Some(kernel), Some(net)) = (kernel, &self.int8) {
            if net.kernel() == kernel {
                return Ok(()); // already quantised for this kernel (the element re-applies its setting)
            }
        }
        self.int8 = match kernel {
            None => None,
            Some(kernel) => {
                match int8::Int8VggNet::quantize(&self.net, kernel).map_err(|e| crate::Error::Precision(format!("int8 version: {e}")))? {
                    Some(net) => Some(net),
                    None if precision == Precision::Int8 => {
                        return Err(crate::Error::Precision(format!(
                            "architecture '{}' has no int8 version; use precision=f32",
                            self.arch.name()
                        )))
                    }
                    None => None,
                }
            }
        };
        Ok(())
    }

    /// The int8 kernel in use (`None` in f32).
    pub fn int8_kernel(&self) -> Option<ops::int8::Int8Kernel> {
        self.int8.as_ref().map(|n| n.kernel())
    }

    /// The arithmetic in use, as logs and reports show it: "f32" or "int8 (avx2)".
    pub fn arithmetic(&self) -> String {
        match self.int8_kernel() {
            Some(k) => format!("int8 ({})", k.name()),
            None => "f32".into(),
        }
    }

    /// The arithmetic in use: "int8" or "f32".
    pub fn precision_name(&self) -> &'static str {
        if self.int8.is_some() {
            "int8"
        } else {
            "f32"
        }
    }

    /// Switches the file's [`LogitBias`] on (the default) or off (the network's raw logits).
    pub fn set_logit_bias_enabled(&mut self, enabled: bool) {
        self.use_logit_bias = enabled;
    }

    /// The [`LogitBias`] in use, if any.
    pub fn logit_bias(&self) -> Option<&Tensor> {
        self.logit_bias.as_ref().filter(|_| self.use_logit_bias)
    }

    /// Switches the file's [`Temperature`] on (the default) or off (the uncalibrated model).
    pub fn set_temperature_enabled(&mut self, enabled: bool) {
        self.use_temperature = enabled;
    }

    /// The [`Temperature`] in use, if any.
    pub fn temperature(&self) -> Option<f32> {
        self.temperature.filter(|_| self.use_temperature)
    }

    /// `(B, 1, 48, 48)` normalised images → `(B, 7)` logits (with the file's [`LogitBias`], divided
    /// by its [`Temperature`]), in the chosen precision.
    pub fn logits(&mut self, x: &Tensor) -> candle_core::Result<Tensor> {
        let raw = match &mut self.int8 {
            Some(net) => net.forward(x)?,
            None => self.net.forward_t(x, false)?,
        };
        let biased = LogitBias::add(raw, self.logit_bias())?;
        match self.temperature() {
            Some(t) => biased.affine(1.0 / t as f64, 0.0),
            None => Ok(biased),
        }
    }

    /// Classifies 48x48 grayscale crops (`INPUT_SIZE²` bytes each, row-major) in one batch and
    /// writes one probability vector per crop into `probabilities`.
    pub fn classify(&mut self, crops: &[u8], probabilities: &mut Vec<[f32; NUM_CLASSES]>) -> candle_core::Result<()> {
        probabilities.clear();
        let n = crops.len() / InputContract::PIXELS;
        if n == 0 {
            return Ok(());
        }
        let px = InputContract::PIXELS;
        self.input.resize(n * px, 0.0);
        let view = self.view();
        for (crop, input) in crops.chunks_exact(px).zip(self.input.chunks_exact_mut(px)) {
            normalize_view_into(crop, input, view);
        }
        let bias = self.logit_bias_values.filter(|_| self.use_logit_bias);
        let inverse_temperature = self.temperature().map_or(1.0, |t| 1.0 / t);
        match &mut self.int8 {
            // The int8 net's logits straight from its buffer: no tensors on the per-frame path.
            Some(net) => softmax_rows(net.logits(&self.input, n)?, bias, inverse_temperature, probabilities),
            None => {
                let s = InputContract::SIZE;
                let logits = self.net.forward_t(&Tensor::from_slice(&self.input, (n, 1, s, s), &self.device)?, false)?;
                softmax_rows(&logits.flatten_all()?.to_vec1::<f32>()?, bias, inverse_temperature, probabilities);
            }
        }
        Ok(())
    }
}

/// Appends the softmax of each row of `(logits + bias) * inverse_temperature` to `probabilities`.
fn softmax_rows(logits: &[f32], bias: Option<[f32; NUM_CLASSES]>, inverse_temperature: f32, probabilities: &mut Vec<[f32; NUM_CLASSES]>) {
    let bias = bias.unwrap_or([0.0; NUM_CLASSES]);
    probabilities
        .extend(logits.chunks_exact(NUM_CLASSES).map(|row| softmax(std::array::from_fn(|i| (row[i] + bias[i]) * inverse_temperature))));
}

/// The softmax of one row of logits (shifted by its maximum, so large logits cannot overflow).
fn softmax(logits: [f32; NUM_CLASSES]) -> [f32; NUM_CLASSES] {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
    let e = logits.map(|x| (x - max).exp());
    let sum: f32 = e.iter().sum();
    e.map(|x| x / sum)
}

/// Names as the element's property and the command line take them: `auto`, `f32`, `int8`.
impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        [Precision::Auto, Precision::F32, Precision::Int8]
            .into_iter()
            .find(|p| p.nick() == name)
            .ok_or_else(|| format!("unknown precision '{name}' (auto, f32, int8)"))
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.nick())
    }
}

/// Index and value of the largest probability.
pub fn argmax(probabilities: &[f32]) -> (usize, f32) {
    probabilities.iter().copied().enumerate().fold((0, f32::MIN), |best, (i, p)| if p > best.1 { (i, p) } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers;

    /// A model file of `varmap`'s tensors whose metadata names `arch` and `extra` keys.
    fn save_model(varmap: &candle_nn::VarMap, arch: Arch, extra: &[(&str, String)], path: &Path) {
        let data = varmap.data().lock().unwrap();
        let tensors: Vec<(String, Vec<u8>, Vec<usize>)> = data
            .iter()
            .map(|(k, v)| {
                let values = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (k.clone(), values.iter().flat_map(|x| x.to_le_bytes()).collect(), v.as_tensor().dims().to_vec())
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(k, d, s)| (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap()))
            .collect();
        let mut meta = HashMap::from([("arch".to_string(), arch.name().to_string())]);
        meta.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        safetensors::serialize_to_file(views, Some(meta), path).unwrap();
    }

    #[test]
    fn view_scale_comes_from_metadata_and_bad_values_are_named() {
        let mut meta = HashMap::new();
        assert_eq!(InputContract::view_scale(&meta).unwrap(), 1.0);
        meta.insert(InputContract::VIEW_SCALE_KEY.to_string(), "0.916667".to_string());
        assert!((InputContract::view_scale(&meta).unwrap() - 0.916667).abs() < 1e-6);
        for bad in ["0", "1.5", "wide", "NaN"] {
            meta.insert(InputContract::VIEW_SCALE_KEY.to_string(), bad.to_string());
            let err = InputContract::view_scale(&meta).unwrap_err().to_string();
            assert!(err.contains("view_scale") && err.contains(bad), "{err}");
        }
        // The shipped model views the whole frame.
        let shipped = EmotionClassifier::embedded(&Device::Cpu).unwrap();
        assert_eq!(shipped.view_scale, 1.0);
    }

    #[test]
    fn int8_is_refused_by_name_for_an_architecture_without_it() {
        let varmap = candle_nn::VarMap::new();
        let vb = layers::SeededInit::varbuilder(&varmap, 3, &Device::Cpu);
        EmotionNet::load(vb, Arch::Basic).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("basic.safetensors");
        save_model(&varmap, Arch::Basic, &[], &path);
        let mut classifier = EmotionClassifier::from_file(&path, &Device::Cpu).unwrap();
        assert_eq!(classifier.precision_name(), "f32", "auto falls back to f32");
        let err = classifier.set_precision(Precision::Int8).unwrap_err().to_string();
        assert!(err.contains("'basic' has no int8 version"), "{err}");
        classifier.set_precision(Precision::F32).unwrap();
        let mut shipped = EmotionClassifier::embedded(&Device::Cpu).unwrap();
        shipped.set_precision(Precision::Int8).unwrap();
        assert_eq!(shipped.precision_name(), "int8");
    }

    #[test]
    fn logit_bias_is_read_checked_and_applied_to_every_path() {
        let mut meta = HashMap::new();
        assert!(LogitBias::from_metadata(&meta).unwrap().is_none());
        let weights = [1.0, 4.0, 1.0, 0.5, 1.0, 1.0, 1.0];
        let bias = LogitBias::undoing_class_weights(&weights);
        assert!((bias[1] + 4f32.ln()).abs() < 1e-6 && (bias[3] - 2f32.ln()).abs() < 1e-6 && bias[0] == 0.0);
        meta.insert(LogitBias::KEY.to_string(), LogitBias::format(&bias));
        let read = LogitBias::from_metadata(&meta).unwrap().unwrap();
        assert!(read.iter().zip(&bias).all(|(a, b)| (a - b).abs() < 1e-5));
        for bad in ["1,2,3", "0,0,0,0,0,0,0,0", "0,0,0,x,0,0,0", "0,0,0,inf,0,0,0"] {
            meta.insert(LogitBias::KEY.to_string(), bad.to_string());
            let err = LogitBias::from_metadata(&meta).unwrap_err().to_string();
            assert!(err.contains("logit_bias") && err.contains(bad), "{err}");
        }

        // A file whose bias strongly favours "surprise": every path predicts it, until the
        // bias is switched off.
        let varmap = candle_nn::VarMap::new();
        let vb = layers::SeededInit::varbuilder(&varmap, 5, &Device::Cpu);
        EmotionNet::load(vb, Arch::Vgg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("biased.safetensors");
        save_model(&varmap, Arch::Vgg, &[(LogitBias::KEY, LogitBias::format(&[0., 0., 0., 0., 0., 1e3, 0.]))], &path);
        let crops: Vec<u8> = (0..4 * InputContract::PIXELS).map(|i| (i * 37 % 251) as u8).collect();
        let mut probabilities = Vec::new();
        for precision in [Precision::F32, Precision::Int8] {
            let mut classifier = EmotionClassifier::from_file(&path, &Device::Cpu).unwrap();
            classifier.set_precision(precision).unwrap();
            classifier.classify(&crops, &mut probabilities).unwrap();
            assert!(probabilities.iter().all(|p| argmax(p).0 == 5), "{precision:?}");
            let x = Tensor::zeros((2, 1, 48, 48), DType::F32, &Device::Cpu).unwrap();
            let top = classifier.logits(&x).unwrap().argmax(1).unwrap().to_vec1::<u32>().unwrap();
            assert_eq!(top, [5, 5]);
            classifier.set_logit_bias_enabled(false);
            classifier.classify(&crops, &mut probabilities).unwrap();
            assert!(probabilities.iter().all(|p| p[5] < 0.99), "{precision:?}: raw network");
        }
    }

    #[test]
    fn temperature_softens_every_path_and_keeps_the_label() {
        let varmap = candle_nn::VarMap::new();
        let vb = layers::SeededInit::varbuilder(&varmap, 9, &Device::Cpu);
        EmotionNet::load(vb, Arch::Vgg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.safetensors");
        let hot = dir.path().join("hot.safetensors");
        save_model(&varmap, Arch::Vgg, &[], &plain);
        save_model(&varmap, Arch::Vgg, &[(Temperature::KEY, Temperature::format(4.0))], &hot);
        let bad = dir.path().join("bad.safetensors");
        save_model(&varmap, Arch::Vgg, &[(Temperature::KEY, "-2".into())], &bad);
        let err = EmotionClassifier::from_file(&bad, &Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("temperature='-2'"), "{err}");
        let crops: Vec<u8> = (0..3 * InputContract::PIXELS).map(|i| (i * 53 % 241) as u8).collect();
        let x =
            Tensor::from_vec((0..2 * 48 * 48).map(|i| ((i % 97) as f32 - 48.0) / 24.0).collect::<Vec<_>>(), (2, 1, 48, 48), &Device::Cpu)
                .unwrap();
        for precision in [Precision::F32, Precision::Int8] {
            let (mut p_plain, mut p_hot) = (Vec::new(), Vec::new());
            let mut a = EmotionClassifier::from_file(&plain, &Device::Cpu).unwrap();
            let mut b = EmotionClassifier::from_file(&hot, &Device::Cpu).unwrap();
            assert_eq!((a.temperature(), b.temperature()), (None, Some(4.0)));
            a.set_precision(precision).unwrap();
            b.set_precision(precision).unwrap();
            a.classify(&crops, &mut p_plain).unwrap();
            b.classify(&crops, &mut p_hot).unwrap();
            for (p, q) in p_plain.iter().zip(&p_hot) {
                // softmax(z / 4) is softmax(z)^(1/4), renormalised: same label, lower peak.
                assert_eq!(argmax(p).0, argmax(q).0, "{precision:?}");
                let powered: Vec<f32> = p.iter().map(|v| v.powf(0.25)).collect();
                let sum: f32 = powered.iter().sum();
                assert!(powered.iter().zip(q).all(|(v, w)| (v / sum - w).abs() < 1e-4), "{precision:?}: {p:?} vs {q:?}");
            }
            let za = a.logits(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let zb = b.logits(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(za.iter().zip(&zb).all(|(u, v)| (u / 4.0 - v).abs() < 1e-4), "{precision:?}");
            b.set_temperature_enabled(false);
            b.classify(&crops, &mut p_hot).unwrap();
            assert!(p_plain.iter().zip(&p_hot).all(|(p, q)| p.iter().zip(q).all(|(u, v)| (u - v).abs() < 1e-6)));
        }
    }
}
