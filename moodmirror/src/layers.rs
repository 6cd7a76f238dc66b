//! Building blocks of the emotion CNNs, on channel-major (C, B, H, W) activations.

use candle_core::{DType, Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder};

use crate::ops;

/// A layer whose behaviour differs between training and inference (batch norm, dropout).
pub trait ModuleT {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor>;
}

/// k×k convolution, He-initialised, optional bias.
#[derive(Debug, Clone)]
pub struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv {
    pub fn load(vb: VarBuilder, c_in: usize, c_out: usize, kernel: usize, stride: usize, padding: usize, bias: bool) -> Result<Self> {
        let fan_in = (c_in * kernel * kernel) as f64;
        let init = Init::Randn { mean: 0.0, stdev: (2.0 / fan_in).sqrt() };
        let weight = vb.get_with_hints((c_out, c_in, kernel, kernel), "weight", init)?;
        let bias = if bias { Some(vb.get_with_hints(c_out, "bias", Init::Const(0.0))?) } else { None };
        Ok(Self { weight, bias, stride, padding })
    }

    /// Two convolutions of the same input and geometry as one, with their outputs stacked.
    pub fn concat(a: &Conv, b: &Conv) -> Result<Self> {
        if (a.stride, a.padding, a.bias.is_some()) != (b.stride, b.padding, b.bias.is_some()) {
            candle_core::bail!("Conv::concat: the convolutions differ in stride, padding or bias");
        }
        let bias = match (&a.bias, &b.bias) {
            (Some(x), Some(y)) => Some(Tensor::cat(&[x, y], 0)?),
            _ => None,
        };
        Ok(Self { weight: Tensor::cat(&[&a.weight, &b.weight], 0)?, bias, stride: a.stride, padding: a.padding })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d_cbhw(x, &self.weight, self.bias.as_ref(), self.stride, self.padding)
    }

    /// `prelu(conv(x))` with per-channel slopes `alpha`, bias and activation fused (inference).
    pub fn forward_prelu(&self, x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
        ops::conv2d_bias_prelu_padded(x, &self.weight, self.bias.as_ref(), alpha, self.stride, self.padding)
    }
}

/// Depthwise 3×3 followed by pointwise 1×1: the separable convolution of Xception.
#[derive(Debug, Clone)]
pub struct SeparableConv {
    depthwise: Tensor,
    pointwise: Conv,
}

impl SeparableConv {
    pub fn load(vb: VarBuilder, c_in: usize, c_out: usize) -> Result<Self> {
        let init = Init::Randn { mean: 0.0, stdev: (2.0f64 / 9.0).sqrt() };
        let depthwise = vb.get_with_hints((c_in, 1, 3, 3), "depthwise.weight", init)?;
        let pointwise = Conv::load(vb.pp("pointwise"), c_in, c_out, 1, 1, 0, false)?;
        Ok(Self { depthwise, pointwise })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = ops::depthwise_conv2d(x, &self.depthwise, 1, 1)?;
        self.pointwise.forward(&x)
    }
}

/// Weight of each training batch in batch norm's running statistics.
pub const BN_MOMENTUM: f64 = 0.1;

/// Batch normalisation over the channel dim 0 of a CBHW tensor.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm {
    pub fn load(vb: VarBuilder, channels: usize) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        let running_mean = vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?;
        let running_var = vb.get_with_hints(channels, "running_var", Init::Const(1.0))?;
        Ok(Self {
            weight,
            bias,
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            eps: 1e-5,
            momentum: BN_MOMENTUM,
        })
    }
}

#[cfg(feature = "train")]
impl BatchNorm {
    /// Training-mode `relu(bn(x))` with the fused CPU op; updates the running statistics.
    pub fn forward_relu_train(&self, x: &Tensor) -> Result<Tensor> {
        let (y, mean, var) = crate::ops::batch_norm_relu_train(x, &self.weight, &self.bias, self.eps)?;
        let n = x.elem_count() / mean.len().max(1);
        let unbiased = n as f32 / (n.max(2) - 1) as f32;
        let m = self.momentum;
        let dev = x.device();
        let mean = Tensor::from_vec(mean, self.weight.shape(), dev)?;
        let var = (Tensor::from_vec(var, self.weight.shape(), dev)? * unbiased as f64)?;
        self.running_mean.set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
        self.running_var.set(&((self.running_var.as_tensor() * (1.0 - m))? + (var * m)?)?)?;
        Ok(y)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let shape = x.shape().clone();
        let c = shape.dims()[0];
        let stat_shape: Vec<usize> = std::iter::once(c).chain(std::iter::repeat_n(1, shape.rank() - 1)).collect();
        if train {
            let flat = x.reshape((c, ()))?;
            let n = flat.dim(1)?;
            let mean = flat.mean_keepdim(D::Minus1)?;
            let centered = flat.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
            let inv_std = (var.clone() + self.eps)?.sqrt()?.recip()?;
            let scale = inv_std.broadcast_mul(&self.weight.reshape((c, 1))?)?;
            let y = centered.broadcast_mul(&scale)?.broadcast_add(&self.bias.reshape((c, 1))?)?;
            // Running statistics (unbiased variance, as PyTorch) for inference.
            let m = self.momentum;
            let unbiased = (var.detach().flatten_all()? * (n as f64 / (n.max(2) - 1) as f64))?;
            let mean = mean.detach().flatten_all()?;
            self.running_mean.set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
            self.running_var.set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
            y.reshape(shape)
        } else {
            let scale = (self.running_var.as_tensor() + self.eps)?.sqrt()?.recip()?.mul(&self.weight)?;
            let shift = (&self.bias - self.running_mean.as_tensor().mul(&scale)?)?;
            x.broadcast_mul(&scale.reshape(stat_shape.clone())?)?.broadcast_add(&shift.reshape(stat_shape)?)
        }
    }
}

/// Convolution, batch norm, ReLU: the unit every architecture here is made of.
#[derive(Debug, Clone)]
pub struct ConvBnRelu {
    conv: Conv,
    bn: BatchNorm,
    /// Folded (weight, bias) for inference, computed once by [`ConvBnRelu::freeze`]; without it
    /// (training, whose statistics move) each inference call folds afresh.
    frozen: Option<(Tensor, Tensor)>,
}

impl ConvBnRelu {
    pub fn load(vb: VarBuilder, c_in: usize, c_out: usize, kernel: usize, stride: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv::load(vb.pp("conv"), c_in, c_out, kernel, stride, kernel / 2, false)?,
            bn: BatchNorm::load(vb.pp("bn"), c_out)?,
            frozen: None,
        })
    }

    /// Folds batch norm into the convolution once, for a model that will only infer.
    pub fn freeze(&mut self) -> Result<()> {
        self.frozen = Some(self.fold()?);
        Ok(())
    }
}

impl ConvBnRelu {
    /// Inference on the CPU: batch norm folded into the convolution's weights and bias, ReLU
    /// fused into the convolution's output (one pass instead of four).
    fn forward_folded(&self, x: &Tensor) -> Result<Tensor> {
        let fresh;
        let (weight, shift) = match &self.frozen {
            Some(frozen) => frozen,
            None => {
                fresh = self.fold()?;
                &fresh
            }
        };
        let zeros = shift.zeros_like()?;
        ops::conv2d_bias_prelu_padded(x, weight, Some(shift), &zeros, self.conv.stride, self.conv.padding)
    }

    /// The convolution's weight and bias with batch norm's running statistics folded in.
    pub fn fold(&self) -> Result<(Tensor, Tensor)> {
        let scale = (self.bn.running_var.as_tensor() + self.bn.eps)?.sqrt()?.recip()?.mul(&self.bn.weight)?;
        let shift = (&self.bn.bias - self.bn.running_mean.as_tensor().mul(&scale)?)?;
        let shift = match &self.conv.bias {
            Some(b) => (&shift + b.mul(&scale)?)?,
            None => shift,
        };
        let c_out = scale.dim(0)?;
        let weight = self.conv.weight.broadcast_mul(&scale.reshape((c_out, 1, 1, 1))?)?;
        Ok((weight, shift))
    }
}

impl ModuleT for ConvBnRelu {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train && crate::ops::fast_path(x) {
            return self.forward_folded(x);
        }
        let y = self.conv.forward(x)?;
        #[cfg(feature = "train")]
        if train && crate::ops::fast_path(&y) {
            return self.bn.forward_relu_train(&y);
        }
        {
            self.bn.forward_t(&y, train)?.relu()
        }
    }
}

/// Fully connected layer on (B, features).
#[derive(Debug, Clone)]
pub struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    pub fn load(vb: VarBuilder, c_in: usize, c_out: usize) -> Result<Self> {
        let bound = (1.0 / c_in as f64).sqrt();
        let init = Init::Uniform { lo: -bound, up: bound };
        Ok(Self { weight: vb.get_with_hints((c_out, c_in), "weight", init)?, bias: vb.get_with_hints(c_out, "bias", Init::Const(0.0))? })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_no_bias(x)?.broadcast_add(&self.bias)
    }

    /// `x · Wᵀ` without the bias, for callers that fuse the bias into the next op.
    pub fn forward_no_bias(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::matmul(x, &self.weight.t()?)
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// `(c_out, c_in)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

// Dropout masks come from one seeded generator so that `--seed` makes training reproducible
// (candle's CPU rng cannot be seeded); one per thread, so that a training run (forward passes
// on its own thread) is not disturbed by another run in the same process, as parallel tests.
thread_local! {
    static DROPOUT_RNG: std::cell::RefCell<Option<rand::rngs::StdRng>> = const { std::cell::RefCell::new(None) };
}

/// Seeds this thread's dropout masks.
pub fn seed_dropout(seed: u64) {
    use rand::SeedableRng;
    DROPOUT_RNG.with(|r| *r.borrow_mut() = Some(rand::rngs::StdRng::seed_from_u64(seed)));
}

pub fn dropout(x: &Tensor, p: f32, train: bool) -> Result<Tensor> {
    use rand::{Rng, SeedableRng};
    if !train || p <= 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = DROPOUT_RNG.with(|r| {
        let mut r = r.borrow_mut();
        let rng = r.get_or_insert_with(|| rand::rngs::StdRng::seed_from_u64(0));
        (0..x.elem_count()).map(|_| if rng.random::<f32>() < p { 0.0 } else { keep }).collect()
    });
    x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?)
}

/// A VarBuilder backend that creates missing variables from a seeded generator, in the order
/// the model asks for them: the same seed gives the same initial weights.
pub struct SeededInit {
    varmap: candle_nn::VarMap,
    rng: std::sync::Mutex<rand::rngs::StdRng>,
}

impl SeededInit {
    pub fn varbuilder(varmap: &candle_nn::VarMap, seed: u64, device: &candle_core::Device) -> VarBuilder<'static> {
        use rand::SeedableRng;
        let backend = SeededInit { varmap: varmap.clone(), rng: std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)) };
        VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone())
    }
}

impl candle_nn::var_builder::SimpleBackend for SeededInit {
    fn get(&self, shape: candle_core::Shape, name: &str, init: Init, dtype: DType, dev: &candle_core::Device) -> Result<Tensor> {
        use rand::Rng;
        let mut vars = self.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = vars.get(name) {
            if v.shape() != &shape {
                candle_core::bail!("{name}: shape {:?}, expected {shape:?}", v.shape());
            }
            return Ok(v.as_tensor().clone());
        }
        let n = shape.elem_count();
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let values: Vec<f32> = match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..up) as f32).collect(),
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| {
                    // Box–Muller.
                    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
                    let u2: f64 = rng.random();
                    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                    (mean + stdev * z) as f32
                })
                .collect(),
            other => {
                return other.var(shape, dtype, dev).map(|v| {
                    let t = v.as_tensor().clone();
                    vars.insert(name.to_string(), v);
                    t
                })
            }
        };
        let var = Var::from_tensor(&Tensor::from_vec(values, shape, dev)?.to_dtype(dtype)?)?;
        let t = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &candle_core::Device) -> Result<Tensor> {
        candle_core::bail!("{name}: variables must be created with a shape and an initialiser")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.data().lock().unwrap_or_else(|e| e.into_inner()).contains_key(name)
    }
}

/// (C, B, H, W) → (B, C): global average pooling.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let (c, b, _, _) = x.dims4()?;
    x.reshape((c, b, ()))?.mean(D::Minus1)?.t()?.contiguous()
}

/// (C, B, H, W) → (B, C·H·W) in PyTorch's NCHW flatten order.
pub fn flatten(x: &Tensor) -> Result<Tensor> {
    let (_, b, _, _) = x.dims4()?;
    x.transpose(0, 1)?.contiguous()?.reshape((b, ()))
}

pub fn check_dtype(x: &Tensor) -> Result<()> {
    if x.dtype() != DType::F32 {
        candle_core::bail!("emotion model expects f32 input, got {:?}", x.dtype());
    }
    Ok(())
}
