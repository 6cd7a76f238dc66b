//! YuNet-n as a candle module on channel-major `(C, B, H, W)` activations: the GPU path, and the
//! reference of the CPU plan in the tests.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::STRIDES;
use crate::ops::{conv2d_bias_prelu_padded, depthwise3x3_bias_act, max_pool2d};

/// A 1x1 convolution followed by a 3x3 depthwise one (batch norm folded in), ReLU optional:
/// YuNet's `ConvDPUnit`.
pub(super) struct DpUnit {
    /// `(C_out, C_in)`.
    pub(super) pointwise: Tensor,
    pub(super) pointwise_bias: Tensor,
    /// `(C_out, 1, 3, 3)`.
    pub(super) depthwise: Tensor,
    pub(super) depthwise_bias: Tensor,
    pub(super) relu: bool,
}

impl DpUnit {
    pub(super) fn load(vb: VarBuilder, c_in: usize, c_out: usize, relu: bool) -> candle_core::Result<Self> {
        Ok(Self {
            pointwise: vb.pp("conv1").get((c_out, c_in, 1, 1), "weight")?.reshape((c_out, c_in))?,
            pointwise_bias: vb.pp("conv1").get(c_out, "bias")?,
            depthwise: vb.pp("conv2").get((c_out, 1, 3, 3), "weight")?,
            depthwise_bias: vb.pp("conv2").get(c_out, "bias")?,
            relu,
        })
    }

    /// Units reading the same input as one, outputs stacked along the channels (exact: the
    /// depthwise part works per channel).
    pub(super) fn stack(units: &[DpUnit]) -> candle_core::Result<Self> {
        let cat = |f: fn(&DpUnit) -> &Tensor| Tensor::cat(&units.iter().map(f).collect::<Vec<_>>(), 0);
        Ok(Self {
            pointwise: cat(|u| &u.pointwise)?,
            pointwise_bias: cat(|u| &u.pointwise_bias)?,
            depthwise: cat(|u| &u.depthwise)?,
            depthwise_bias: cat(|u| &u.depthwise_bias)?,
            relu: units.iter().any(|u| u.relu),
        })
    }

    /// `(C_in, B, H, W)` → `(C_out, B, H, W)`.
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (c_in, b, h, w) = x.dims4()?;
        let c_out = self.pointwise.dim(0)?;
        let y = self.pointwise.matmul(&x.contiguous()?.reshape((c_in, b * h * w))?)?.reshape((c_out, b, h, w))?;
        depthwise3x3_bias_act(&y, &self.depthwise, &self.pointwise_bias, &self.depthwise_bias, self.relu)
    }
}

/// The network, on channel-major `(C, B, H, W)` activations as moodmirror's other nets.
pub struct YuNetNet {
    pub(super) stem_weight: Tensor,
    pub(super) stem_bias: Tensor,
    /// Zero slopes: the stem's ReLU as the fused conv + bias + PReLU op.
    pub(super) stem_slopes: Tensor,
    pub(super) stem_unit: DpUnit,
    /// `model1` … `model5`, two units each.
    pub(super) blocks: Vec<[DpUnit; 2]>,
    pub(super) lateral: Vec<DpUnit>,
    pub(super) shared: Vec<DpUnit>,
    /// Per level: class, objectness, box and landmark units stacked (16 channels).
    pub(super) heads: Vec<DpUnit>,
}

impl YuNetNet {
    pub fn load(vb: VarBuilder) -> candle_core::Result<Self> {
        let backbone = vb.pp("backbone");
        let stem = backbone.pp("model0");
        let mut blocks = Vec::new();
        for (i, c_in) in [(1, 16), (2, 64), (3, 64), (4, 64), (5, 64)] {
            let b = backbone.pp(format!("model{i}"));
            blocks.push([DpUnit::load(b.pp("conv1"), c_in, c_in, true)?, DpUnit::load(b.pp("conv2"), c_in, 64, true)?]);
        }
        let head = vb.pp("bbox_head");
        let mut lateral = Vec::new();
        let mut shared = Vec::new();
        let mut heads = Vec::new();
        for level in 0..STRIDES.len() {
            lateral.push(DpUnit::load(vb.pp(format!("neck.lateral_convs.{level}")), 64, 64, true)?);
            shared.push(DpUnit::load(head.pp(format!("multi_level_share_convs.{level}.0")), 64, 64, true)?);
            let unit = |name: &str, c: usize| DpUnit::load(head.pp(format!("multi_level_{name}.{level}")), 64, c, false);
            heads.push(DpUnit::stack(&[unit("cls", 1)?, unit("obj", 1)?, unit("bbox", 4)?, unit("kps", 10)?])?);
        }
        Ok(Self {
            stem_weight: stem.pp("conv1").get((16, 3, 3, 3), "weight")?,
            stem_bias: stem.pp("conv1").get(16, "bias")?,
            stem_slopes: Tensor::zeros(16, DType::F32, vb.device())?,
            stem_unit: DpUnit::load(stem.pp("conv2"), 16, 16, true)?,
            blocks,
            lateral,
            shared,
            heads,
        })
    }

    /// BGR pixel values (0–255) `(3, B, H, W)`, H and W multiples of 32 → per stride 8, 16, 32
    /// the raw head outputs `(16, B, H/s, W/s)`: class and objectness logits, box, landmarks.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let x = conv2d_bias_prelu_padded(x, &self.stem_weight, Some(&self.stem_bias), &self.stem_slopes, 2, 1)?;
        let mut x = max_pool2d(&self.stem_unit.forward(&x)?, 2, 2, 0)?;
        let mut feats = Vec::with_capacity(3);
        for (i, [a, b]) in self.blocks.iter().enumerate() {
            x = b.forward(&a.forward(&x)?)?;
            let model = i + 1;
            if model >= 3 {
                feats.push(x.clone());
            }
            if (2..=4).contains(&model) {
                x = max_pool2d(&x, 2, 2, 0)?;
            }
        }
        // Top-down: each coarser level, refined, is added to the next finer one.
        for level in (1..feats.len()).rev() {
            feats[level] = self.lateral[level].forward(&feats[level])?;
            let (_, _, h, w) = feats[level - 1].dims4()?;
            feats[level - 1] = (&feats[level - 1] + feats[level].upsample_nearest2d(h, w)?)?;
        }
        feats[0] = self.lateral[0].forward(&feats[0])?;
        feats.iter().enumerate().map(|(level, f)| self.heads[level].forward(&self.shared[level].forward(f)?)).collect()
    }
}
