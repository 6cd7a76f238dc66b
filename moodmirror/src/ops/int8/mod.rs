//! Int8 inference kernels for x86-64 CPUs: AVX-512 VNNI, AVX-VNNI and plain AVX2.
//!
//! A 3x3 convolution (stride 1, padding 1) of unsigned 8-bit activations with signed 8-bit
//! weights: `vpdpbusd` multiplies 4 u8·s8 pairs and adds them into an i32 lane, 64
//! multiply-adds per instruction where f32 FMA does 16. Activations are laid out NHWC with a
//! zero border (`(H+2)·(W+2)·C` bytes), so the convolution is an implicit GEMM that reads its
//! input in place: no im2col copy. Weights are quantised per output channel (symmetric, ±127);
//! the caller picks the activations' scale. The i32 sums become
//! `relu(sum · in_scale · weight_scale + bias)` in f32, and the kernel returns their maximum,
//! from which the caller quantises the next layer's input.
//!
//! On 256-bit registers, AVX-VNNI (Intel since Alder Lake) runs the same `vpdpbusd` on 8 lanes,
//! and plain AVX2 (every x86-64 CPU since Haswell and Zen 1) emulates it with `vpmaddubsw`
//! (u8·s8 pairs summed into i16) and `vpmaddwd` (i16 pairs into i32). `vpmaddubsw` saturates at
//! ±32767, and 2·255·127 would overflow it: weights for the AVX2 kernel are quantised to ±64
//! and its activations to 0..=127, so that two `vpmaddubsw` results add in i16 before one
//! `vpmaddwd` widens them (2·2·127·64 = 32,512): exact sums, on slightly coarser numbers, with a
//! quarter fewer multiplier instructions than one `vpmaddwd` per `vpmaddubsw`.
//!
//! A portable kernel computes the same sums without SIMD: it is the reference of the tests and
//! runs where no vector kernel does (slowly: callers prefer f32 there).

/// Output pixels per register tile (along a row).
const TILE_PIXELS: usize = 6;

/// Which implementation runs the convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// AVX-512 VNNI (`vpdpbusd` on 16 lanes): x86-64 CPUs from Ice Lake and Zen 4 on.
    Vnni,
    /// AVX-VNNI (`vpdpbusd` on 8 lanes): Intel from Alder Lake on; the same sums as `Vnni`.
    AvxVnni,
    /// AVX2 (`vpmaddubsw` + `vpmaddwd`), weights quantised to ±64: every x86-64 CPU since
    /// Haswell and Zen 1.
    Avx2,
    /// Plain Rust: the tests' reference.
    Portable,
}

impl Int8Kernel {
    /// The fastest kernel this CPU has, or the one `MOODMIRROR_INT8_KERNEL` names
    /// (`avx512-vnni`, `avx-vnni`, `avx2`; for benchmarks and tests of each path on one
    /// machine) when the CPU has that one; `None` where no vector kernel runs.
    pub fn detect() -> Option<Self> {
        static CHOSEN: std::sync::OnceLock<Option<Int8Kernel>> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let forced = std::env::var("MOODMIRROR_INT8_KERNEL").ok().and_then(|v| Int8Kernel::from_name(&v));
            match forced {
                Some(k) if k.is_here() => Some(k),
                _ => Self::available().first().copied(),
            }
        })
    }

    /// The vector kernels this CPU runs, fastest first.
    pub fn available() -> Vec<Self> {
        [Int8Kernel::Vnni, Int8Kernel::AvxVnni, Int8Kernel::Avx2].into_iter().filter(|k| k.is_here()).collect()
    }

    /// Whether this CPU runs the kernel.
    pub fn is_here(self) -> bool {
        use crate::ops::cpu;
        match self {
            Int8Kernel::Vnni => cpu::has_avx512_vnni(),
            Int8Kernel::AvxVnni => cpu::has_avx_vnni(),
            Int8Kernel::Avx2 => cpu::has_avx2_fma(),
            Int8Kernel::Portable => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Vnni => "avx512-vnni",
            Int8Kernel::AvxVnni => "avx-vnni",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Portable => "portable",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Int8Kernel::Vnni, Int8Kernel::AvxVnni, Int8Kernel::Avx2, Int8Kernel::Portable].into_iter().find(|k| k.name() == name.trim())
    }

    /// The largest quantised weight magnitude the kernel's arithmetic takes exactly.
    fn weight_limit(self) -> f32 {
        if self == Int8Kernel::Avx2 {
            64.0
        } else {
            127.0
        }
    }

    /// The largest quantised activation the kernel's arithmetic takes exactly.
    pub fn activation_limit(self) -> f32 {
        if self == Int8Kernel::Avx2 {
            127.0
        } else {
            255.0
        }
    }

    /// The VNNI kernel, asked for and present.
    fn is_vnni_here(self) -> bool {
        self == Int8Kernel::Vnni && self.is_here()
    }

    /// One of the 256-bit kernels, asked for and present.
    fn is_256_here(self) -> bool {
        matches!(self, Int8Kernel::AvxVnni | Int8Kernel::Avx2) && self.is_here()
    }
}

/// Quantises `values` to symmetric i8 (±`limit`) with one scale; returns the scale.
fn quantize_symmetric(values: &[f32], limit: f32, out: &mut Vec<i8>) -> f32 {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { max / limit } else { 1.0 };
    out.extend(values.iter().map(|v| (v / scale).round().clamp(-limit, limit) as i8));
    scale
}

/// A 3x3, stride 1, padding 1 convolution with int8 weights, bias and ReLU.
#[derive(Debug, Clone)]
pub struct Int8Conv3x3 {
    pub c_in: usize,
    pub c_out: usize,
    /// `[c_out][tap][c_in]` quantised weights (the portable kernel's layout).
    plain: Vec<i8>,
    /// VNNI layout, per block of `16·lanes` output channels: `[tap][c_in/4][lanes][16 ch][4 ci]`
    /// (`lanes` 1 for the 256-bit kernels).
    packed: Vec<i8>,
    /// The kernel the weights were quantised and packed for.
    kernel: Int8Kernel,
    /// `(first channel, 16-lane vectors, offset in packed)` per block of output channels.
    blocks: Vec<(usize, usize, usize)>,
    weight_scale: Vec<f32>,
    bias: Vec<f32>,
}

impl Int8Conv3x3 {
    /// From f32 weights `(c_out, c_in, 3, 3)` (row-major) and a bias of `c_out`, for `kernel`
    /// (its weight range and packing; the portable kernel runs any of them). The vector kernels
    /// need `c_in` divisible by 4 and `c_out` by 16.
    pub fn quantize(kernel: Int8Kernel, weight: &[f32], bias: &[f32], c_out: usize, c_in: usize) -> crate::Result<Self> {
        if !c_in.is_multiple_of(4) || !c_out.is_multiple_of(16) {
            return Err(crate::Error::Kernel(format!(
                "int8 convolution needs input channels divisible by 4 and output channels by 16, got {c_in} → {c_out}"
            )));
        }
        if weight.len() != c_out * c_in * 9 || bias.len() != c_out {
            return Err(crate::Error::Kernel(format!(
                "int8 convolution {c_in} → {c_out}: {} weights and {} biases, expected {} and {c_out}",
                weight.len(),
                bias.len(),
                c_out * c_in * 9
            )));
        }
        let mut plain = Vec::with_capacity(weight.len());
        let mut weight_scale = Vec::with_capacity(c_out);
        let mut channel = Vec::with_capacity(c_in * 9);
        let mut quantized = Vec::with_capacity(c_in * 9);
        for co in 0..c_out {
            // (c_in, 3, 3) → (tap, c_in): taps outermost, channels contiguous, as NHWC reads them.
            channel.clear();
            let w = &weight[co * c_in * 9..(co + 1) * c_in * 9];
            channel.extend((0..9).flat_map(|tap| (0..c_in).map(move |ci| w[ci * 9 + tap])));
            quantized.clear();
            weight_scale.push(quantize_symmetric(&channel, kernel.weight_limit(), &mut quantized));
            plain.extend_from_slice(&quantized);
        }
        let mut packed = Vec::with_capacity(plain.len());
        let mut blocks = Vec::new();
        let mut co0 = 0;
        while co0 < c_out {
            // 16-channel blocks for the 256-bit kernels: read as two vectors of 8 channels.
            let lanes = match c_out - co0 {
                _ if kernel != Int8Kernel::Vnni => 1,
                r if r >= 64 => 4,
                r if r >= 32 => 2,
                _ => 1,
            };
            blocks.push((co0, lanes, packed.len()));
            for tap in 0..9 {
                for ci4 in (0..c_in).step_by(4) {
                    for lane in 0..lanes {
                        for ch in 0..16 {
                            let co = co0 + lane * 16 + ch;
                            let at = co * 9 * c_in + tap * c_in + ci4;
                            packed.extend_from_slice(&plain[at..at + 4]);
                        }
                    }
                }
            }
            co0 += lanes * 16;
        }
        Ok(Self { c_in, c_out, plain, packed, kernel, blocks, weight_scale, bias: bias.to_vec() })
    }

    /// Bytes the padded input of an `h`x`w` image must hold: the zero-bordered image plus
    /// slack that the last row's partial tile may read (its results are discarded).
    pub fn input_len(&self, h: usize, w: usize) -> usize {
        padded_len(h, w, self.c_in)
    }

    /// Convolves the padded NHWC u8 `input` (values × `in_scale` = activations) into `out`
    /// (`h·w·c_out` f32, NHWC, after bias and ReLU); returns the largest output.
    pub fn forward(&self, kernel: Int8Kernel, input: &[u8], h: usize, w: usize, in_scale: f32, out: &mut [f32]) -> crate::Result<f32> {
        if input.len() < self.input_len(h, w) || out.len() < h * w * self.c_out {
            return Err(crate::Error::Kernel(format!(
                "int8 convolution on {h}x{w}: buffers of {} and {} elements are too small",
                input.len(),
                out.len()
            )));
        }
        // A vector kernel runs only on weights packed for it; the portable one runs any.
        let kernel = if kernel == self.kernel { kernel } else { Int8Kernel::Portable };
        Ok(match kernel {
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Vnni if kernel.is_vnni_here() => {
                // SAFETY: the CPU has the features (checked above) and the buffer sizes were
                // checked against the reads and writes the kernel makes.
                unsafe { vnni::forward(self, input, h, w, in_scale, out) }
            }
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::AvxVnni if kernel.is_256_here() => {
                // SAFETY: as above, for AVX2 and AVX-VNNI.
                unsafe { avx2::forward_vnni(self, input, h, w, in_scale, out) }
            }
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx2 if kernel.is_256_here() => {
                // SAFETY: as above, for AVX2; the weights are within ±64 (quantised for Avx2).
                unsafe { avx2::forward_madd(self, input, h, w, in_scale, out) }
            }
            _ => self.forward_portable(input, h, w, in_scale, out),
        })
    }

    fn forward_portable(&self, input: &[u8], h: usize, w: usize, in_scale: f32, out: &mut [f32]) -> f32 {
        let (c_in, c_out) = (self.c_in, self.c_out);
        let row = (w + 2) * c_in;
        let mut max = 0f32;
        for y in 0..h {
            for x in 0..w {
                for co in 0..c_out {
                    let weights = &self.plain[co * 9 * c_in..(co + 1) * 9 * c_in];
                    let mut sum = 0i32;
                    for tap in 0..9 {
                        let at = (y + tap / 3) * row + (x + tap % 3) * c_in;
                        let pixels = &input[at..at + c_in];
                        let taps = &weights[tap * c_in..(tap + 1) * c_in];
                        sum += pixels.iter().zip(taps).map(|(&a, &b)| a as i32 * b as i32).sum::<i32>();
                    }
                    let scale = in_scale * self.weight_scale[co];
                    let v = (sum as f32).mul_add(scale, self.bias[co]).max(0.0);
                    out[(y * w + x) * c_out + co] = v;
                    max = max.max(v);
                }
            }
        }
        max
    }
}

/// Length of a zero-bordered NHWC u8 buffer for an `h`x`w`x`c` image, with the slack a
/// partial tile of the last row reads past its end.
pub fn padded_len(h: usize, w: usize, c: usize) -> usize {
    ((h + 2) * (w + 2) + TILE_PIXELS + 2) * c
}

/// Quantises `src` (`h·w·c` NHWC, values in `0..=max`) to bytes in `0..=limit` (the weights'
/// kernel's [`Int8Kernel::activation_limit`]) in the interior of the padded `dst`, max-pooled
/// 2x2 first when `pool`, with `kernel`'s vector code where it has some; zeroes the border.
/// Returns the scale (`value = byte · scale`).
#[allow(clippy::too_many_arguments)]
pub fn quantize_padded(
    kernel: Int8Kernel,
    limit: f32,
    src: &[f32],
    h: usize,
    w: usize,
    c: usize,
    max: f32,
    pool: bool,
    dst: &mut Vec<u8>,
) -> f32 {
    let (oh, ow) = if pool { (h / 2, w / 2) } else { (h, w) };
    dst.clear();
    dst.resize(padded_len(oh, ow, c), 0);
    let scale = if max > 0.0 { max / limit } else { 1.0 };
    let inv = 1.0 / scale;
    let row = (ow + 2) * c;
    let step = if pool { 2 } else { 1 };
    // Decided once per image, not per pixel.
    let vector = c.is_multiple_of(16) && kernel.is_vnni_here();
    let vector256 = c.is_multiple_of(8) && kernel.is_256_here();
    for y in 0..oh {
        for x in 0..ow {
            let d = &mut dst[(y + 1) * row + (x + 1) * c..][..c];
            let at = |dy: usize, dx: usize| &src[((y * step + dy) * w + x * step + dx) * c..][..c];
            let quads = if pool { [at(0, 0), at(0, 1), at(1, 0), at(1, 1)] } else { [at(0, 0); 4] };
            #[cfg(target_arch = "x86_64")]
            if vector {
                // SAFETY: AVX-512 is present (checked) and every slice holds `c` elements.
                unsafe { vnni::max4_quantize(quads, inv, d) };
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if vector256 {
                // SAFETY: AVX2 is present (checked) and every slice holds `c` elements.
                unsafe { avx2::max4_quantize(quads, inv, limit, d) };
                continue;
            }
            for (i, q) in d.iter_mut().enumerate() {
                let v = quads[0][i].max(quads[1][i]).max(quads[2][i].max(quads[3][i]));
                *q = (v * inv + 0.5).min(limit) as u8;
            }
        }
    }
    scale
}

/// A 3x3 convolution (padding 1) of a one-channel f32 image with bias and ReLU: the first layer
/// of the emotion nets, kept in f32. `weight` is `[tap][c_out]`, `input` a zero-bordered
/// `(h+2)x(w+2)` image, `out` `h·w·c_out` NHWC. Returns the largest output.
pub fn conv3x3_one_channel(
    kernel: Int8Kernel,
    weight: &[f32],
    bias: &[f32],
    input: &[f32],
    h: usize,
    w: usize,
    out: &mut [f32],
) -> crate::Result<f32> {
    let c = bias.len();
    if weight.len() != 9 * c || input.len() < (h + 2) * (w + 2) || out.len() < h * w * c {
        return Err(crate::Error::Kernel(format!("one-channel convolution on {h}x{w} → {c}: buffers too small")));
    }
    #[cfg(target_arch = "x86_64")]
    if c.is_multiple_of(16) && kernel.is_vnni_here() {
        // SAFETY: AVX-512 is present (checked) and the buffer sizes were checked above.
        return Ok(unsafe { vnni::conv3x3_one_channel(weight, bias, input, h, w, out) });
    }
    #[cfg(target_arch = "x86_64")]
    if c.is_multiple_of(8) && kernel.is_256_here() {
        // SAFETY: AVX2 and FMA are present (checked) and the buffer sizes were checked above.
        return Ok(unsafe { avx2::conv3x3_one_channel(weight, bias, input, h, w, out) });
    }
    let mut max = 0f32;
    for y in 0..h {
        for x in 0..w {
            let o = &mut out[(y * w + x) * c..][..c];
            for (co, o) in o.iter_mut().enumerate() {
                let mut v = bias[co];
                for tap in 0..9 {
                    v = input[(y + tap / 3) * (w + 2) + x + tap % 3].mul_add(weight[tap * c + co], v);
                }
                *o = v.max(0.0);
                max = max.max(*o);
            }
        }
    }
    Ok(max)
}

/// The one-channel 3x3 convolution (the f32 first layer), `$lanes` output channels per
/// register: the AVX-512 and AVX2 copies differ only in their intrinsics.
#[cfg(target_arch = "x86_64")]
macro_rules! one_channel_conv {
    ($features:literal, $lanes:literal, $zero:ident, $load:ident, $set1:ident, $fmadd:ident, $max:ident, $store:ident, $reduce:ident) => {
        /// The first layer's 3x3 convolution of a one-channel image, every output channel.
        ///
        /// # Safety
        ///
        /// The CPU has the features this copy is compiled for; `input` and `out` hold `h · w` values.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn conv3x3_one_channel(weight: &[f32], bias: &[f32], input: &[f32], h: usize, w: usize, out: &mut [f32]) -> f32 {
            // SAFETY: the caller upholds this function's contract (its `# Safety` section).
            unsafe {
                let c = bias.len();
                let zero = $zero();
                let mut max = zero;
                for co in (0..c).step_by($lanes) {
                    let b = $load(bias.as_ptr().add(co));
                    let mut k = [zero; 9];
                    for (tap, k) in k.iter_mut().enumerate() {
                        *k = $load(weight.as_ptr().add(tap * c + co));
                    }
                    for y in 0..h {
                        for x in 0..w {
                            let mut v = b;
                            for (tap, k) in k.iter().enumerate() {
                                let a = *input.get_unchecked((y + tap / 3) * (w + 2) + x + tap % 3);
                                v = $fmadd($set1(a), *k, v);
                            }
                            let v = $max(v, zero);
                            $store(out.as_mut_ptr().add((y * w + x) * c + co), v);
                            max = $max(max, v);
                        }
                    }
                }
                $reduce(max)
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod vnni;

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// f32 convolution of the dequantised input with the f32 weights: what int8 approximates.
    #[allow(clippy::too_many_arguments)]
    fn reference(weight: &[f32], bias: &[f32], input: &[u8], scale: f32, h: usize, w: usize, c_in: usize, c_out: usize) -> Vec<f32> {
        let row = (w + 2) * c_in;
        let mut out = vec![0f32; h * w * c_out];
        for y in 0..h {
            for x in 0..w {
                for co in 0..c_out {
                    let mut s = bias[co];
                    for ci in 0..c_in {
                        for tap in 0..9 {
                            let a = input[(y + tap / 3) * row + (x + tap % 3) * c_in + ci] as f32 * scale;
                            s += a * weight[(co * c_in + ci) * 9 + tap];
                        }
                    }
                    out[(y * w + x) * c_out + co] = s.max(0.0);
                }
            }
        }
        out
    }

    fn random_case(seed: u64, h: usize, w: usize, c_in: usize, c_out: usize) -> (Vec<f32>, Vec<f32>, Vec<u8>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let weight: Vec<f32> = (0..c_out * c_in * 9).map(|_| rng.random_range(-0.2..0.2)).collect();
        let bias: Vec<f32> = (0..c_out).map(|_| rng.random_range(-0.5..0.5)).collect();
        let mut input = vec![0u8; padded_len(h, w, c_in)];
        let row = (w + 2) * c_in;
        for y in 0..h {
            for x in 0..w {
                for ci in 0..c_in {
                    input[(y + 1) * row + (x + 1) * c_in + ci] = rng.random();
                }
            }
        }
        (weight, bias, input)
    }

    #[test]
    fn int8_convolution_matches_f32_within_quantisation_error() {
        // Odd sizes: partial tiles, one- and two-vector channel blocks after full ones.
        for (seed, (h, w, c_in, c_out)) in [(5, 7, 8, 16), (6, 6, 32, 64), (3, 13, 12, 112), (1, 1, 4, 48)].into_iter().enumerate() {
            let (weight, bias, full_range_input) = random_case(seed as u64, h, w, c_in, c_out);
            let scale = 0.01;
            for kernel in std::iter::once(Int8Kernel::Portable).chain(Int8Kernel::available()) {
                // Activations as quantised for this kernel (0..=127 for AVX2).
                let input: Vec<u8> = full_range_input.iter().map(|&v| v.min(kernel.activation_limit() as u8)).collect();
                let expected = reference(&weight, &bias, &input, scale, h, w, c_in, c_out);
                let range = expected.iter().fold(0f32, |m, v| m.max(*v));
                let conv = Int8Conv3x3::quantize(kernel, &weight, &bias, c_out, c_in).unwrap();
                let mut out = vec![0f32; h * w * c_out];
                let max = conv.forward(Int8Kernel::Portable, &input, h, w, scale, &mut out).unwrap();
                let worst = expected.iter().zip(&out).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                // Weight rounding: at most half a step (max|w|/254, /128 for AVX2's ±64) per tap,
                // times the input.
                let tolerance = if kernel == Int8Kernel::Avx2 { 0.02 } else { 0.01 };
                assert!(worst < tolerance * range.max(1.0), "{} {h}x{w} {c_in}→{c_out}: off by {worst} of {range}", kernel.name());
                assert_eq!(max, out.iter().fold(0f32, |m, v| m.max(*v)));
                if kernel != Int8Kernel::Portable {
                    let mut fast = vec![0f32; h * w * c_out];
                    let fast_max = conv.forward(kernel, &input, h, w, scale, &mut fast).unwrap();
                    // Same integer sums, same fused multiply-add: identical results.
                    assert_eq!(fast, out, "{} {h}x{w} {c_in}→{c_out}", kernel.name());
                    assert_eq!(fast_max, max);
                }
            }
        }
    }

    #[test]
    fn extreme_weights_and_activations_sum_exactly_on_every_kernel() {
        // Every weight at the largest magnitude (±64 for AVX2, ±127 else), alternating in sign
        // by channel pair, every activation at the kernel's limit: the sums the i16 stages could
        // overflow on.
        let (h, w, c_in, c_out) = (3, 5, 40, 32);
        let weight: Vec<f32> = (0..c_out * c_in * 9).map(|i| if (i / 2) % 3 == 0 { -1.0 } else { 1.0 }).collect();
        let bias = vec![0.0; c_out];
        for kernel in Int8Kernel::available() {
            let limit = kernel.activation_limit() as u8;
            let mut input = vec![0u8; padded_len(h, w, c_in)];
            let row = (w + 2) * c_in;
            for y in 0..h {
                for x in 0..w {
                    input[(y + 1) * row + (x + 1) * c_in..][..c_in].fill(limit);
                }
            }
            let conv = Int8Conv3x3::quantize(kernel, &weight, &bias, c_out, c_in).unwrap();
            let (mut fast, mut portable) = (vec![0f32; h * w * c_out], vec![0f32; h * w * c_out]);
            conv.forward(kernel, &input, h, w, 1.0, &mut fast).unwrap();
            conv.forward(Int8Kernel::Portable, &input, h, w, 1.0, &mut portable).unwrap();
            assert_eq!(fast, portable, "{}", kernel.name());
            assert!(portable.iter().any(|v| *v > 0.0), "{}: some positive sums", kernel.name());
        }
    }

    #[test]
    fn quantize_padded_pools_scales_and_keeps_a_zero_border() {
        let (h, w, c) = (4, 2, 3);
        let src: Vec<f32> = (0..h * w * c).map(|i| i as f32).collect();
        let mut dst = Vec::new();
        let max = (h * w * c - 1) as f32;
        let scale = quantize_padded(Int8Kernel::Portable, 255.0, &src, h, w, c, max, true, &mut dst);
        assert_eq!(scale, max / 255.0);
        assert_eq!(dst.len(), padded_len(2, 1, c));
        // Pooled pixel (1, 0) is the max of rows 2..4: source pixel (3, 1), channel i.
        let row = 3 * c;
        for i in 0..c {
            let v = src[(3 * w + 1) * c + i];
            assert_eq!(dst[2 * row + c + i], (v / scale).round() as u8);
            assert_eq!(dst[c + i], 0, "top border");
        }
        assert_eq!(dst[(2 * row + c)..][..c].iter().max(), Some(&255));
    }

    #[test]
    fn vector_and_portable_helpers_agree() {
        // Nothing to compare on a CPU without vector kernels: the portable code is tested above.
        for fast in Int8Kernel::available() {
            helpers_agree(fast);
        }
    }

    fn helpers_agree(fast: Int8Kernel) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let (h, w, c) = (6, 10, 32);
        let src: Vec<f32> = (0..h * w * c).map(|_| rng.random_range(0.0..3.0)).collect();
        for pool in [false, true] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let sa = quantize_padded(fast, fast.activation_limit(), &src, h, w, c, 3.0, pool, &mut a);
            let sb = quantize_padded(Int8Kernel::Portable, fast.activation_limit(), &src, h, w, c, 3.0, pool, &mut b);
            assert_eq!((sa, &a), (sb, &b), "pool {pool}");
        }
        let weight: Vec<f32> = (0..9 * c).map(|_| rng.random_range(-1.0..1.0)).collect();
        let bias: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5..0.5)).collect();
        let image: Vec<f32> = (0..(h + 2) * (w + 2)).map(|_| rng.random_range(-2.0..2.0)).collect();
        let (mut a, mut b) = (vec![0f32; h * w * c], vec![0f32; h * w * c]);
        let ma = conv3x3_one_channel(fast, &weight, &bias, &image, h, w, &mut a).unwrap();
        let mb = conv3x3_one_channel(Int8Kernel::Portable, &weight, &bias, &image, h, w, &mut b).unwrap();
        assert_eq!((ma, &a), (mb, &b));
        // And the portable one is the convolution it claims to be: pixel (2, 3), channel 5.
        let expected = (0..9).fold(bias[5], |v, tap| v + image[(2 + tap / 3) * (w + 2) + 3 + tap % 3] * weight[tap * c + 5]);
        assert!((b[(2 * w + 3) * c + 5] - expected.max(0.0)).abs() < 1e-5);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let k = Int8Kernel::Portable;
        assert!(Int8Conv3x3::quantize(k, &[0.0; 9 * 3 * 16], &[0.0; 16], 16, 3).is_err());
        assert!(Int8Conv3x3::quantize(k, &[0.0; 10], &[0.0; 16], 16, 4).is_err());
        let conv = Int8Conv3x3::quantize(k, &[0.0; 9 * 4 * 16], &[0.0; 16], 16, 4).unwrap();
        let mut out = vec![0f32; 16];
        assert!(conv.forward(Int8Kernel::Portable, &[0u8; 8], 1, 1, 1.0, &mut out).is_err());
    }
}
