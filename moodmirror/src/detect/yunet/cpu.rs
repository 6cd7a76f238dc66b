//! YuNet-n on plain slices with moodmirror's depthwise-pointwise kernels: the CPU path, with its
//! buffers kept between frames.

use candle_core::Tensor;

use crate::ops::dpunit::{self, SimdLevel};

use super::net::{DpUnit, YuNetNet};

/// A [`DpUnit`]'s weights as plain vectors, for [`CpuPlan`].
pub(super) struct UnitWeights {
    pub(super) c_in: usize,
    pub(super) pointwise: Vec<f32>,
    pub(super) pointwise_bias: Vec<f32>,
    pub(super) depthwise: Vec<f32>,
    pub(super) depthwise_bias: Vec<f32>,
    pub(super) relu: bool,
}

impl UnitWeights {
    pub(super) fn of(u: &DpUnit) -> candle_core::Result<Self> {
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        Ok(Self {
            c_in: u.pointwise.dim(1)?,
            pointwise: flat(&u.pointwise)?,
            pointwise_bias: flat(&u.pointwise_bias)?,
            depthwise: flat(&u.depthwise)?,
            depthwise_bias: flat(&u.depthwise_bias)?,
            relu: u.relu,
        })
    }

    pub(super) fn c_out(&self) -> usize {
        self.pointwise_bias.len()
    }

    /// `x` (`c_in` channels of a CBHW batch of `batch` maps of `h` x `w`) → `out` (`c_out`
    /// channels), `t` the pointwise result.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(&self, level: SimdLevel, x: &[f32], batch: usize, h: usize, w: usize, t: &mut Vec<f32>, out: &mut Vec<f32>) {
        let (n, c) = (batch * h * w, self.c_out());
        grow(t, c * n);
        grow(out, c * n);
        // The pointwise bias goes in before the depthwise pass, whose zero padding must not see it.
        dpunit::pointwise(level, x, self.c_in, n, &self.pointwise, &self.pointwise_bias, false, t);
        dpunit::depthwise3x3(level, t, c, batch, h, w, &self.depthwise, &self.depthwise_bias, self.relu, out);
    }
}

thread_local! {
    /// Per thread, a batch of crops' input planes, the buffers of its pass and the crops'
    /// indices ([`YuNet::track`]).
    pub(super) static CROP_SCRATCH: std::cell::RefCell<(Vec<f32>, Scratch, Vec<usize>)> = std::cell::RefCell::new(Default::default());
}

/// Makes `v` at least `n` long. The layers write every element they read back, so a buffer
/// only grows (zero-filling it to each layer's size was a tenth of the detector's time); the
/// kernels take sizes explicitly and ignore the rest.
pub(super) fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// `dst = src`, reusing `dst`'s allocation.
pub(super) fn copy_into(dst: &mut Vec<f32>, src: &[f32]) {
    dst.clear();
    dst.extend_from_slice(src);
}

/// Buffers of one [`CpuPlan::forward`], kept between calls: no allocation per frame.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) cols: Vec<f32>,
    pub(super) t: Vec<f32>,
    pub(super) a: Vec<f32>,
    pub(super) b: Vec<f32>,
    pub(super) feats: [Vec<f32>; 3],
    /// Per level the 16 head channels, `h` and `w`.
    pub(super) heads: [(Vec<f32>, usize, usize); 3],
}

impl Scratch {
    /// The three levels' head outputs, as [`decode`] reads them.
    pub(super) fn head_slices(&self) -> [(&[f32], usize, usize); 3] {
        self.heads.each_ref().map(|(d, h, w)| (&d[..], *h, *w))
    }
}

/// The network on plain slices with [`dpunit`]'s kernels: the CPU path (candle's tensors and
/// [`YuNetNet::forward`] serve GPUs and are this path's reference in the tests).
pub(super) struct CpuPlan {
    pub(super) level: SimdLevel,
    pub(super) stem_weight: Vec<f32>,
    pub(super) stem_bias: Vec<f32>,
    pub(super) stem_unit: UnitWeights,
    pub(super) blocks: Vec<[UnitWeights; 2]>,
    pub(super) lateral: Vec<UnitWeights>,
    pub(super) shared: Vec<UnitWeights>,
    pub(super) heads: Vec<UnitWeights>,
}

impl CpuPlan {
    pub(super) fn of(net: &YuNetNet) -> candle_core::Result<Self> {
        let units = |v: &[DpUnit]| v.iter().map(UnitWeights::of).collect::<candle_core::Result<Vec<_>>>();
        Ok(Self {
            level: SimdLevel::detect(),
            stem_weight: net.stem_weight.flatten_all()?.to_vec1()?,
            stem_bias: net.stem_bias.to_vec1()?,
            stem_unit: UnitWeights::of(&net.stem_unit)?,
            blocks: net.blocks.iter().map(|[a, b]| Ok([UnitWeights::of(a)?, UnitWeights::of(b)?])).collect::<candle_core::Result<_>>()?,
            lateral: units(&net.lateral)?,
            shared: units(&net.shared)?,
            heads: units(&net.heads)?,
        })
    }

    /// A batch of BGR images `(3, batch, h, w)`, sides multiples of 32 → `s.heads` (CBHW).
    pub(super) fn forward(&self, x: &[f32], batch: usize, h: usize, w: usize, s: &mut Scratch) {
        let level = self.level;
        let (mut h, mut w) = (h / 2, w / 2);
        grow(&mut s.cols, 27 * batch * h * w);
        dpunit::im2col3x3_stride2(x, 3, batch, 2 * h, 2 * w, &mut s.cols);
        grow(&mut s.b, 16 * batch * h * w);
        dpunit::pointwise(level, &s.cols, 27, batch * h * w, &self.stem_weight, &self.stem_bias, true, &mut s.b);
        self.stem_unit.forward(level, &s.b, batch, h, w, &mut s.t, &mut s.a);
        let pool = |src: &[f32], c: usize, h: &mut usize, w: &mut usize, dst: &mut Vec<f32>| {
            grow(dst, c * batch * (*h / 2) * (*w / 2));
            dpunit::max_pool2(level, src, c * batch, *h, *w, dst);
            *h /= 2;
            *w /= 2;
        };
        pool(&s.a, 16, &mut h, &mut w, &mut s.b);
        // s.b holds the input of model1; each block leaves its output in s.b.
        let mut dims = [(0, 0); 3];
        for (i, [u1, u2]) in self.blocks.iter().enumerate() {
            let model = i + 1;
            u1.forward(level, &s.b, batch, h, w, &mut s.t, &mut s.a);
            u2.forward(level, &s.a, batch, h, w, &mut s.t, &mut s.b);
            if model >= 3 {
                copy_into(&mut s.feats[model - 3], &s.b[..64 * batch * h * w]);
                dims[model - 3] = (h, w);
            }
            if (2..=4).contains(&model) {
                pool(&s.b, 64, &mut h, &mut w, &mut s.a);
                std::mem::swap(&mut s.a, &mut s.b);
            }
        }
        for l in (1..3).rev() {
            let (lh, lw) = dims[l];
            self.lateral[l].forward(level, &s.feats[l], batch, lh, lw, &mut s.t, &mut s.a);
            // A copy, not a swap: swapping would hand the big buffer's allocation to a small
            // level and make the next frame reallocate it.
            copy_into(&mut s.feats[l], &s.a[..64 * batch * lh * lw]);
            let (upper, lower) = s.feats.split_at_mut(l);
            dpunit::add_upsampled2(level, &mut upper[l - 1], &lower[0], 64 * batch, lh, lw);
        }
        self.lateral[0].forward(level, &s.feats[0], batch, dims[0].0, dims[0].1, &mut s.t, &mut s.a);
        copy_into(&mut s.feats[0], &s.a[..64 * batch * dims[0].0 * dims[0].1]);
        for (l, &(lh, lw)) in dims.iter().enumerate() {
            self.shared[l].forward(level, &s.feats[l], batch, lh, lw, &mut s.t, &mut s.a);
            let (out, oh, ow) = &mut s.heads[l];
            self.heads[l].forward(level, &s.a, batch, lh, lw, &mut s.t, out);
            (*oh, *ow) = (lh, lw);
        }
    }
}
