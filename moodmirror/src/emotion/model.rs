//! The emotion CNN architectures. All take `(B, 1, 48, 48)` normalised grayscale (see
//! [`super::InputContract`]) and return `(B, 7)` logits in FER2013 order.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::NUM_CLASSES;
use crate::layers::{check_dtype, dropout, flatten, global_avg_pool, BatchNorm, Conv, ConvBnRelu, Dense, ModuleT, SeparableConv};
use crate::ops::max_pool2d;

/// Which network to build; stored in the weights' metadata as `arch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Compact VGG-style net (2 conv-BN-ReLU per stage, 32→256 channels): the shipped default.
    Vgg,
    /// Wider VGG-style net (64→384 channels, ≈4.5x the compact one's cost), for GPU training.
    VggLarge,
    /// Half-width VGG-style net (16→128 channels, ≈¼ of the compact one's cost): fast inference.
    VggSmall,
    /// The seed's "basic" CNN: conv 32/64/256/512, max-pool, dropout, dense 512.
    Basic,
    /// The seed's "advanced" mini-Xception: separable convs in residual blocks up to 512 filters.
    Xception,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Vgg => "vgg",
            Arch::VggLarge => "vgg-large",
            Arch::VggSmall => "vgg-small",
            Arch::Basic => "basic",
            Arch::Xception => "xception",
        }
    }

    /// The architecture a weights file's metadata names (`vgg` when it names none).
    pub fn from_metadata(metadata: &std::collections::HashMap<String, String>) -> crate::Result<Self> {
        let name = metadata.get("arch").map(String::as_str).unwrap_or("vgg");
        Self::from_name(name).ok_or_else(|| crate::Error::ModelFile(format!("unknown architecture '{name}'")))
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "vgg" => Some(Arch::Vgg),
            "vgg-large" => Some(Arch::VggLarge),
            "vgg-small" => Some(Arch::VggSmall),
            "basic" => Some(Arch::Basic),
            "xception" => Some(Arch::Xception),
            _ => None,
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(name: &str) -> std::result::Result<Self, String> {
        Self::from_name(name).ok_or_else(|| format!("unknown architecture '{name}' (vgg, vgg-large, vgg-small, basic, xception)"))
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A loaded emotion network of any [`Arch`].
#[derive(Debug, Clone)]
pub enum EmotionNet {
    Vgg(VggNet),
    Basic(BasicNet),
    Xception(XceptionNet),
}

impl EmotionNet {
    pub fn load(vb: VarBuilder, arch: Arch) -> Result<Self> {
        Ok(match arch {
            Arch::Vgg => EmotionNet::Vgg(VggNet::load(vb, &VggNet::STAGES, VggNet::HIDDEN)?),
            Arch::VggLarge => EmotionNet::Vgg(VggNet::load(vb, &VggNet::STAGES_LARGE, VggNet::HIDDEN_LARGE)?),
            Arch::VggSmall => EmotionNet::Vgg(VggNet::load(vb, &VggNet::STAGES_SMALL, VggNet::HIDDEN_SMALL)?),
            Arch::Basic => EmotionNet::Basic(BasicNet::load(vb)?),
            Arch::Xception => EmotionNet::Xception(XceptionNet::load(vb)?),
        })
    }

    /// Folds batch norm into the convolutions once: for models that only infer (the classifier,
    /// inference benchmarks), never during training.
    pub fn freeze_for_inference(&mut self) -> Result<()> {
        let layers: Vec<&mut ConvBnRelu> = match self {
            EmotionNet::Vgg(net) => net.stages.iter_mut().flatten().collect(),
            EmotionNet::Basic(_) => Vec::new(),
            EmotionNet::Xception(net) => net.stem.iter_mut().collect(),
        };
        layers.into_iter().try_for_each(ConvBnRelu::freeze)
    }

    /// `(B, 1, 48, 48)` → `(B, 7)` logits.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check_dtype(x)?;
        let (b, c, h, w) = x.dims4()?;
        if c != 1 {
            candle_core::bail!("emotion model expects 1 channel, got {c}");
        }
        // (B, 1, H, W) and (1, B, H, W) are the same memory: the CBHW input.
        let x = x.reshape((1, b, h, w))?;
        match self {
            EmotionNet::Vgg(net) => net.forward_t(&x, train),
            EmotionNet::Basic(net) => net.forward_t(&x, train),
            EmotionNet::Xception(net) => net.forward_t(&x, train),
        }
    }
}

#[derive(Debug, Clone)]
pub struct VggNet {
    pub(super) stages: Vec<Vec<ConvBnRelu>>,
    pub(super) fc1: Dense,
    pub(super) fc2: Dense,
}

impl VggNet {
    /// (channels, convolutions) per stage at 48, 24, 12 and 6 px. One convolution at the two
    /// large resolutions keeps the cost (≈75 M multiply-adds per face) where it pays most.
    pub const STAGES: [(usize, usize); 4] = [(32, 1), (64, 1), (128, 2), (256, 2)];
    pub const HIDDEN: usize = 256;
    /// `vgg-large`: the same shape, wider (≈335 M multiply-adds per face).
    pub const STAGES_LARGE: [(usize, usize); 4] = [(64, 1), (128, 2), (256, 2), (384, 2)];
    pub const HIDDEN_LARGE: usize = 384;
    /// `vgg-small`: half the channels (≈19 M multiply-adds per face).
    pub const STAGES_SMALL: [(usize, usize); 4] = [(16, 1), (32, 1), (64, 2), (128, 2)];
    pub const HIDDEN_SMALL: usize = 128;

    pub fn load(vb: VarBuilder, stage_shape: &[(usize, usize); 4], hidden: usize) -> Result<Self> {
        let mut stages = Vec::new();
        let mut c_in = 1;
        for (i, &(c, convs)) in stage_shape.iter().enumerate() {
            let vb = vb.pp(format!("stage{i}"));
            let mut stage = Vec::new();
            for j in 0..convs {
                stage.push(ConvBnRelu::load(vb.pp(j), c_in, c, 3, 1)?);
                c_in = c;
            }
            stages.push(stage);
        }
        // 48 → 3 after four 2x2 poolings.
        let fc1 = Dense::load(vb.pp("fc1"), c_in * 9, hidden)?;
        let fc2 = Dense::load(vb.pp("fc2"), hidden, NUM_CLASSES)?;
        Ok(Self { stages, fc1, fc2 })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, stage) in self.stages.iter().enumerate() {
            for layer in stage {
                x = layer.forward_t(&x, train)?;
            }
            x = max_pool2d(&x, 2, 2, 0)?;
            if i >= 1 {
                x = dropout(&x, 0.1 * i as f32, train)?;
            }
        }
        let x = flatten(&x)?;
        let x = dropout(&self.fc1.forward(&x)?.relu()?, 0.5, train)?;
        self.fc2.forward(&x)
    }
}

#[derive(Debug, Clone)]
pub struct BasicNet {
    convs: Vec<Conv>,
    fc1: Dense,
    fc2: Dense,
}

impl BasicNet {
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let widths = [(1, 32), (32, 64), (64, 256), (256, 512)];
        let convs = widths
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| Conv::load(vb.pp(format!("conv{i}")), a, b, 3, 1, 1, true))
            .collect::<Result<Vec<_>>>()?;
        // 48 → 24 → 12 → 6 after three poolings (after conv1, conv2, conv3).
        let fc1 = Dense::load(vb.pp("fc1"), 512 * 36, 512)?;
        let fc2 = Dense::load(vb.pp("fc2"), 512, NUM_CLASSES)?;
        Ok(Self { convs, fc1, fc2 })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.convs[0].forward(x)?.relu()?;
        let x = self.convs[1].forward(&x)?.relu()?;
        let x = dropout(&max_pool2d(&x, 2, 2, 0)?, 0.25, train)?;
        let x = self.convs[2].forward(&x)?.relu()?;
        let x = max_pool2d(&x, 2, 2, 0)?;
        let x = self.convs[3].forward(&x)?.relu()?;
        let x = dropout(&max_pool2d(&x, 2, 2, 0)?, 0.25, train)?;
        let x = dropout(&self.fc1.forward(&flatten(&x)?)?.relu()?, 0.5, train)?;
        self.fc2.forward(&x)
    }
}

#[derive(Debug, Clone)]
struct XceptionBlock {
    residual: Conv,
    residual_bn: BatchNorm,
    sep1: SeparableConv,
    bn1: BatchNorm,
    sep2: SeparableConv,
    bn2: BatchNorm,
}

impl XceptionBlock {
    fn load(vb: VarBuilder, c_in: usize, c_out: usize) -> Result<Self> {
        Ok(Self {
            residual: Conv::load(vb.pp("residual"), c_in, c_out, 1, 2, 0, false)?,
            residual_bn: BatchNorm::load(vb.pp("residual_bn"), c_out)?,
            sep1: SeparableConv::load(vb.pp("sep1"), c_in, c_out)?,
            bn1: BatchNorm::load(vb.pp("bn1"), c_out)?,
            sep2: SeparableConv::load(vb.pp("sep2"), c_out, c_out)?,
            bn2: BatchNorm::load(vb.pp("bn2"), c_out)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let residual = self.residual_bn.forward_t(&self.residual.forward(x)?, train)?;
        let y = self.bn1.forward_t(&self.sep1.forward(x)?, train)?.relu()?;
        let y = self.bn2.forward_t(&self.sep2.forward(&y)?, train)?;
        max_pool2d(&y, 3, 2, 1)? + residual
    }
}

#[derive(Debug, Clone)]
pub struct XceptionNet {
    stem: Vec<ConvBnRelu>,
    blocks: Vec<XceptionBlock>,
    head: Dense,
}

impl XceptionNet {
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let stem = vec![ConvBnRelu::load(vb.pp("stem0"), 1, 16, 3, 1)?, ConvBnRelu::load(vb.pp("stem1"), 16, 32, 3, 1)?];
        let widths = [32, 64, 128, 256, 512];
        let blocks = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| XceptionBlock::load(vb.pp(format!("block{i}")), w[0], w[1]))
            .collect::<Result<Vec<_>>>()?;
        let head = Dense::load(vb.pp("head"), 512, NUM_CLASSES)?;
        Ok(Self { stem, blocks, head })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.stem {
            x = layer.forward_t(&x, train)?;
        }
        for block in &self.blocks {
            x = block.forward_t(&x, train)?;
        }
        let x = dropout(&global_avg_pool(&x)?, 0.5, train)?;
        self.head.forward(&x)
    }
}
