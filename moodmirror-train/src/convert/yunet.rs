//! YuNet's ONNX export to our safetensors names (`moodmirror convert-yunet`).

use super::onnx::{Graph, Initializer};

/// The safetensors name of each convolution in YuNet's ONNX export, whose exporter folded batch
/// norm into the depthwise convolutions and renamed those weights to numbers: a named weight
/// keeps its name, the first convolution is the stem, and a numbered one that reads a unit's
/// pointwise `….conv1` is that unit's `….conv2`.
pub fn convert_onnx(graph: &Graph) -> Result<Vec<(String, Initializer)>, String> {
    let mut producer: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    let mut tensors = Vec::new();
    for (index, node) in graph.nodes.iter().filter(|n| n.op_type == "Conv").enumerate() {
        let [input, weight, bias] = node.inputs.as_slice() else {
            return Err(format!("convolution #{index} has {} inputs, expected 3", node.inputs.len()));
        };
        let name = if let Some(name) = weight.strip_suffix(".weight").filter(|n| !n.starts_with(|c: char| c.is_ascii_digit())) {
            name.to_string()
        } else if index == 0 {
            "backbone.model0.conv1".to_string()
        } else if let Some(unit) = producer.get(input.as_str()).and_then(|p| p.strip_suffix(".conv1")) {
            format!("{unit}.conv2")
        } else {
            return Err(format!("cannot name convolution #{index} (weight `{weight}`)"));
        };
        for (tensor, suffix) in [(weight, "weight"), (bias, "bias")] {
            let init = graph.initializers.get(tensor).ok_or_else(|| format!("convolution {name}: no initializer `{tensor}`"))?;
            tensors.push((format!("{name}.{suffix}"), init.clone()));
        }
        if let Some(out) = node.outputs.first() {
            producer.insert(out, name);
        }
    }
    if tensors.is_empty() {
        return Err("the graph has no convolutions".into());
    }
    Ok(tensors)
}
