//! Model files as training writes them: tensors in a reproducible safetensors file, with the
//! metadata the element and `evaluate` read back.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use candle_nn::VarMap;
use moodmirror::emotion::{Arch, InputContract, CLASS_NAMES};

pub fn metadata(arch: Arch, command: &str, val_accuracy: f64, epoch: usize, view_scale: f32) -> HashMap<String, String> {
    let mut m = HashMap::new();
    m.insert(InputContract::VIEW_SCALE_KEY.into(), format!("{view_scale:.6}"));
    m.insert("arch".into(), arch.name().into());
    m.insert("input_contract".into(), InputContract::describe());
    m.insert("input_size".into(), InputContract::SIZE.to_string());
    m.insert("input_mean".into(), InputContract::MEAN.to_string());
    m.insert("input_std".into(), InputContract::STD.to_string());
    m.insert("class_names".into(), CLASS_NAMES.join(","));
    m.insert("training_command".into(), command.into());
    m.insert("date".into(), today());
    m.insert("val_accuracy".into(), format!("{val_accuracy:.4}"));
    m.insert("epoch".into(), epoch.to_string());
    m.insert("format".into(), "pt".into());
    m
}

fn today() -> String {
    // Days since the epoch → civil date (Howard Hinnant's algorithm); no date crate needed.
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let z = secs / 86_400 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}")
}

/// The name a model file records for metadata readers: the file's stem.
pub fn model_name_of(out: &Path) -> String {
    out.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "moodmirror-emotion".into())
}

/// How many images [`check_deployable`] runs.
pub const DEPLOY_CHECK_IMAGES: usize = 64;

/// Checks that a model, as it would be written (tensors and metadata), runs the way the element
/// runs it: loaded by the element's classifier at its default precision (int8 on CPUs with
/// AVX2), its probabilities for `images` (48x48 grey, back to back; the first
/// [`DEPLOY_CHECK_IMAGES`]) finite. A network can train to weights whose f32 loss is finite and
/// whose int8 outputs are not (huge weights); such a model is never written.
pub fn check_deployable(tensors: &HashMap<String, Tensor>, meta: &HashMap<String, String>, images: &[u8]) -> Result<()> {
    use moodmirror::emotion::{EmotionClassifier, Precision};
    let bytes = safetensors_bytes(tensors, meta)?;
    let mut classifier = EmotionClassifier::from_bytes(&bytes, "the trained model", &candle_core::Device::Cpu)?;
    classifier.set_precision(Precision::Auto)?;
    let px = InputContract::PIXELS;
    let n = (images.len() / px).min(DEPLOY_CHECK_IMAGES);
    let mut probabilities = Vec::new();
    classifier.classify(&images[..n * px], &mut probabilities)?;
    if let Some(i) = probabilities.iter().position(|p| p.iter().any(|v| !v.is_finite())) {
        anyhow::bail!("its output for val image {i} is not finite in the element's arithmetic ({})", classifier.arithmetic());
    }
    Ok(())
}

/// Writes tensors with string metadata to a safetensors file (atomically: temp file + rename).
pub fn save_safetensors(tensors: &HashMap<String, Tensor>, meta: &HashMap<String, String>, path: &Path) -> Result<()> {
    let bytes = safetensors_bytes(tensors, meta)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The safetensors file of `tensors` (as f32, sorted by name) with `meta`.
fn safetensors_bytes(tensors: &HashMap<String, Tensor>, meta: &HashMap<String, String>) -> Result<Vec<u8>> {
    let mut owned: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = tensors[name].to_dtype(DType::F32)?.flatten_all()?;
        let bytes: Vec<u8> = t.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect();
        owned.push((name.clone(), bytes, tensors[name].dims().to_vec()));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, b, s)| Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?)))
        .collect::<std::result::Result<_, safetensors::SafeTensorError>>()?;
    sorted_header(safetensors::serialize(views, Some(meta.clone()))?)
}

/// The safetensors file with its JSON header's keys sorted (the crate writes the metadata map in
/// hash order), so that converting or saving the same tensors twice gives the same bytes.
pub(crate) fn sorted_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let len = u64::from_le_bytes(bytes.get(..8).and_then(|b| b.try_into().ok()).context("safetensors header")?) as usize;
    let header: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..8 + len).context("safetensors header")?)?;
    let mut json = serde_json::to_vec(&header)?;
    // The data starts 8-byte aligned; the format pads the header with spaces.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + len..]);
    Ok(out)
}

/// The model's tensors by name, as they are saved.
pub fn model_tensors(varmap: &VarMap) -> HashMap<String, Tensor> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect()
}
