//! Int8 inference of the VGG-style emotion nets on x86-64 CPUs (`ops::int8`'s kernels).
//!
//! Batch norm is folded into each convolution, whose weights are quantised per output channel
//! to i8. Activations (non-negative after ReLU) are quantised to u8 per image and per layer,
//! scaled by that image's own maximum: an image's result does not depend on the other images
//! of its batch, and no calibration data is needed. The first convolution (one input channel,
//! 1 % of the work) and the two dense layers stay f32. Images run in parallel, each through
//! all convolutions while its activations are in cache.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::model::{EmotionNet, VggNet};
use super::{InputContract, NUM_CLASSES};
use crate::ops::dense::DenseRows;
use crate::ops::int8::{conv3x3_one_channel, quantize_padded, Int8Conv3x3, Int8Kernel};

/// The first convolution (1 input channel) in f32, NHWC output.
#[derive(Debug, Clone)]
struct FirstConv {
    c_out: usize,
    /// `[tap][c_out]`.
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// One image's working memory, reused across calls.
#[derive(Debug, Default, Clone)]
struct Scratch {
    image: Vec<f32>,
    activations: Vec<f32>,
    quantized: Vec<u8>,
}

/// A [`VggNet`] with int8 convolutions.
#[derive(Debug, Clone)]
pub struct Int8VggNet {
    kernel: Int8Kernel,
    /// The largest activation the weights' kernel takes (kept when the portable kernel runs
    /// them, so that it computes the same sums).
    activation_limit: f32,
    first: FirstConv,
    /// The other convolutions; `true` where a 2x2 max-pool follows.
    convs: Vec<(Int8Conv3x3, bool)>,
    first_pools: bool,
    fc1: DenseRows,
    fc2: DenseRows,
    features: usize,
    /// Floats of the largest convolution output.
    activation_len: usize,
    scratch: Vec<Scratch>,
    feature_buffer: Vec<f32>,
    hidden: Vec<f32>,
    logits: Vec<f32>,
    dense_scratch: Vec<f32>,
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

impl Int8VggNet {
    /// Quantises `net` for `kernel`; `None` for architectures without an int8 version.
    pub fn quantize(net: &EmotionNet, kernel: Int8Kernel) -> Result<Option<Self>> {
        let EmotionNet::Vgg(net) = net else {
            return Ok(None);
        };
        Self::from_vgg(net, kernel).map(Some)
    }

    fn from_vgg(net: &VggNet, kernel: Int8Kernel) -> Result<Self> {
        let mut layers = Vec::new();
        for stage in &net.stages {
            for (j, layer) in stage.iter().enumerate() {
                let (weight, bias) = layer.fold()?;
                layers.push((weight, bias, j + 1 == stage.len()));
            }
        }
        let Some(((first_w, first_b, first_pools), rest)) = layers.split_first() else {
            candle_core::bail!("int8: the network has no convolutions");
        };
        let (c_out, c_in, kh, kw) = first_w.dims4()?;
        if (c_in, kh, kw) != (1, 3, 3) {
            candle_core::bail!("int8: the first convolution is {c_in}x{kh}x{kw}, expected 1x3x3");
        }
        let w = to_vec(first_w)?;
        let first = FirstConv {
            c_out,
            weight: (0..9).flat_map(|tap| (0..c_out).map(move |co| (tap, co))).map(|(tap, co)| w[co * 9 + tap]).collect(),
            bias: to_vec(first_b)?,
        };
        let mut convs = Vec::new();
        let mut side = InputContract::SIZE;
        if *first_pools {
            side /= 2;
        }
        let mut channels = c_out;
        let mut activation_len = InputContract::PIXELS * c_out;
        for (weight, bias, pools) in rest {
            let (c_out, c_in, kh, kw) = weight.dims4()?;
            if (kh, kw) != (3, 3) || c_in != channels {
                candle_core::bail!("int8: convolution {c_in}x{kh}x{kw} → {c_out} does not follow a {channels}-channel layer");
            }
            let conv = Int8Conv3x3::quantize(kernel, &to_vec(weight)?, &to_vec(bias)?, c_out, c_in).map_err(candle_core::Error::msg)?;
            convs.push((conv, *pools));
            activation_len = activation_len.max(side * side * c_out);
            channels = c_out;
            if *pools {
                side /= 2;
            }
        }
        let features = channels * side * side;
        let (fc1, fc2) = (DenseRows::new(net.fc1.weight(), net.fc1.bias())?, DenseRows::new(net.fc2.weight(), net.fc2.bias())?);
        if fc1.c_in() != features || fc2.c_in() != fc1.c_out() || fc2.c_out() != NUM_CLASSES {
            candle_core::bail!("int8: dense layers {}→{}→{} after {features} features", fc1.c_in(), fc1.c_out(), fc2.c_out());
        }
        Ok(Self {
            kernel,
            activation_limit: kernel.activation_limit(),
            first,
            convs,
            first_pools: *first_pools,
            fc1,
            fc2,
            features,
            activation_len,
            scratch: Vec::new(),
            feature_buffer: Vec::new(),
            hidden: Vec::new(),
            logits: Vec::new(),
            dense_scratch: Vec::new(),
        })
    }

    pub fn kernel(&self) -> Int8Kernel {
        self.kernel
    }

    /// The same quantised weights run by the portable kernel: the vector kernels' reference.
    pub fn with_portable_arithmetic(mut self) -> Self {
        self.kernel = Int8Kernel::Portable;
        self
    }

    /// `(B, 1, 48, 48)` normalised images → `(B, 7)` logits.
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        crate::layers::check_dtype(x)?;
        let (b, c, h, w) = x.dims4()?;
        let s = InputContract::SIZE;
        if (c, h, w) != (1, s, s) {
            candle_core::bail!("emotion model expects (B, 1, {s}, {s}), got {:?}", x.dims());
        }
        let pixels = x.flatten_all()?.to_vec1::<f32>()?;
        self.forward_slice(&pixels, b)
    }

    /// `n` normalised 48x48 images, row-major, back to back → `(n, 7)` logits.
    pub fn forward_slice(&mut self, pixels: &[f32], n: usize) -> Result<Tensor> {
        let logits = self.logits(pixels, n)?;
        Tensor::from_slice(logits, (n, NUM_CLASSES), &candle_core::Device::Cpu)
    }

    /// As [`Self::forward_slice`], the logits row-major in the net's own buffer (no tensor: the
    /// per-frame path reads them directly).
    pub fn logits(&mut self, pixels: &[f32], n: usize) -> Result<&[f32]> {
        let px = InputContract::PIXELS;
        if pixels.len() < n * px {
            candle_core::bail!("int8: {} pixels for {n} images", pixels.len());
        }
        if n == 0 {
            return Ok(&[]);
        }
        let threads = rayon::current_num_threads().clamp(1, n);
        let per_thread = n.div_ceil(threads);
        // Taken out of `self` for the parallel loop, which reads the layers; put back below.
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut feature_buffer = std::mem::take(&mut self.feature_buffer);
        scratch.resize_with(threads, Scratch::default);
        feature_buffer.resize(n * self.features, 0.0);
        let this = &*self;
        let features = scratch
            .par_iter_mut()
            .zip(feature_buffer.par_chunks_mut(per_thread * this.features))
            .zip(pixels[..n * px].par_chunks(per_thread * px))
            .try_for_each(|((scratch, features), images)| {
                images
                    .chunks_exact(px)
                    .zip(features.chunks_exact_mut(this.features))
                    .try_for_each(|(image, feature)| this.image_features(image, scratch, feature))
            });
        self.scratch = scratch;
        if let Err(e) = features {
            self.feature_buffer = feature_buffer;
            return Err(e);
        }
        let dense = self.fc1.forward(&feature_buffer[..n * self.features], n, true, &mut self.dense_scratch, &mut self.hidden);
        self.feature_buffer = feature_buffer;
        dense?;
        self.fc2.forward(&self.hidden, n, false, &mut self.dense_scratch, &mut self.logits)?;
        Ok(&self.logits)
    }

    /// The flattened (NCHW order, as the dense layer was trained) features of one image.
    fn image_features(&self, image: &[f32], scratch: &mut Scratch, features: &mut [f32]) -> Result<()> {
        let mut side = InputContract::SIZE;
        // Zero border for the first convolution's padding.
        scratch.image.clear();
        scratch.image.resize((side + 2) * (side + 2), 0.0);
        for (y, row) in image.chunks_exact(side).enumerate() {
            scratch.image[(y + 1) * (side + 2) + 1..][..side].copy_from_slice(row);
        }
        let mut channels = self.first.c_out;
        scratch.activations.resize(self.activation_len, 0.0);
        let first = &self.first;
        let mut max = conv3x3_one_channel(self.kernel, &first.weight, &first.bias, &scratch.image, side, side, &mut scratch.activations)
            .map_err(candle_core::Error::msg)?;
        let mut pools = self.first_pools;
        for (conv, conv_pools) in &self.convs {
            let scale = quantize_padded(
                self.kernel,
                self.activation_limit,
                &scratch.activations,
                side,
                side,
                channels,
                max,
                pools,
                &mut scratch.quantized,
            );
            if pools {
                side /= 2;
            }
            max = conv
                .forward(self.kernel, &scratch.quantized, side, side, scale, &mut scratch.activations)
                .map_err(candle_core::Error::msg)?;
            channels = conv.c_out;
            pools = *conv_pools;
        }
        // Last max-pool, then NHWC → the NCHW flatten order of fc1's inputs.
        let (out_side, step) = if pools { (side / 2, 2) } else { (side, 1) };
        if features.len() != channels * out_side * out_side {
            candle_core::bail!("int8: {} features, the dense layer takes {}", channels * out_side * out_side, features.len());
        }
        for y in 0..out_side {
            for x in 0..out_side {
                for c in 0..channels {
                    let mut v = f32::MIN;
                    for dy in 0..step {
                        for dx in 0..step {
                            v = v.max(scratch.activations[((y * step + dy) * side + x * step + dx) * channels + c]);
                        }
                    }
                    features[(c * out_side + y) * out_side + x] = v;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emotion::EmotionClassifier;
    use candle_core::Device;

    /// The astronaut's face (tests/fixtures, public domain), its mirror and shifted crops:
    /// real face pixels in the model's input contract.
    fn face_batch() -> (Vec<f32>, usize) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/astronaut.png");
        let photo = image::open(path).expect("fixture").into_luma8();
        let s = InputContract::SIZE as u32;
        let mut pixels = Vec::new();
        let mut n = 0;
        for (dx, dy, side) in [(0, 0, 95), (-8, -4, 110), (6, 8, 85), (-3, 10, 100), (10, -6, 120)] {
            let crop = image::imageops::crop_imm(&photo, (177 + dx) as u32, (66 + dy) as u32, side, side).to_image();
            let face = image::imageops::resize(&crop, s, s, image::imageops::FilterType::Triangle);
            for mirror in [false, true] {
                let face = if mirror { image::imageops::flip_horizontal(&face) } else { face.clone() };
                pixels.extend(face.pixels().map(|p| InputContract::normalize(p.0[0])));
                n += 1;
            }
        }
        (pixels, n)
    }

    #[test]
    fn int8_net_agrees_with_f32_on_real_faces() {
        let classifier = EmotionClassifier::embedded(&Device::Cpu).expect("embedded model");
        let (pixels, n) = face_batch();
        let s = InputContract::SIZE;
        let x = Tensor::from_slice(&pixels, (n, 1, s, s), &Device::Cpu).unwrap();
        let probs = |logits: Tensor| candle_nn::ops::softmax_last_dim(&logits).unwrap().to_vec2::<f32>().unwrap();
        let f32_probs = probs(classifier.net().forward_t(&x, false).unwrap());
        let mut portable = Int8VggNet::quantize(classifier.net(), Int8Kernel::Portable).unwrap().expect("vgg has an int8 version");
        let int8_probs = probs(portable.forward(&x).unwrap());
        for (a, b) in f32_probs.iter().zip(&int8_probs) {
            assert_eq!(crate::emotion::argmax(a).0, crate::emotion::argmax(b).0, "f32 {a:?} int8 {b:?}");
            let worst = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(worst < 0.03, "f32 {a:?} int8 {b:?}");
        }
        // Each image on its own gives exactly the result it gets in the batch: scales are per
        // image and the dense layers sum in the same order whatever the batch.
        for i in [0, n - 1] {
            let alone = probs(portable.forward_slice(&pixels[i * InputContract::PIXELS..][..InputContract::PIXELS], 1).unwrap());
            assert_eq!(alone[0], int8_probs[i], "image {i} alone and in its batch");
        }
        // Every vector kernel this CPU has gives exactly the portable kernel's results on the
        // weights quantised for it, and the same predictions as f32.
        for kernel in Int8Kernel::available() {
            let mut fast = Int8VggNet::quantize(classifier.net(), kernel).unwrap().expect("int8");
            let mut reference = fast.clone().with_portable_arithmetic();
            let fast_probs = probs(fast.forward(&x).unwrap());
            assert_eq!(fast_probs, probs(reference.forward(&x).unwrap()), "{} and portable kernels differ", kernel.name());
            for (a, b) in f32_probs.iter().zip(&fast_probs) {
                assert_eq!(crate::emotion::argmax(a).0, crate::emotion::argmax(b).0, "{}: f32 {a:?} int8 {b:?}", kernel.name());
                let worst = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
                assert!(worst < 0.03, "{}: f32 {a:?} int8 {b:?}", kernel.name());
            }
        }
    }

    #[test]
    fn int8_rejects_wrong_input_and_other_architectures() {
        let classifier = EmotionClassifier::embedded(&Device::Cpu).expect("embedded model");
        let mut net = Int8VggNet::quantize(classifier.net(), Int8Kernel::Portable).unwrap().expect("int8");
        assert!(net.forward(&Tensor::zeros((2, 1, 40, 40), candle_core::DType::F32, &Device::Cpu).unwrap()).is_err());
        assert!(net.forward_slice(&[0.0; 10], 1).is_err());
        assert_eq!(net.forward_slice(&[], 0).unwrap().dims(), &[0, NUM_CLASSES]);
        let vb = candle_nn::VarBuilder::from_varmap(&candle_nn::VarMap::new(), candle_core::DType::F32, &Device::Cpu);
        let basic = EmotionNet::load(vb, crate::emotion::Arch::Basic).unwrap();
        assert!(Int8VggNet::quantize(&basic, Int8Kernel::Portable).unwrap().is_none());
    }
}
