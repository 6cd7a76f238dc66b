//! The int8 kernels on AVX-512 VNNI (`vpdpbusd` on 16 lanes).

use super::{Int8Conv3x3, TILE_PIXELS};
use std::arch::x86_64::*;

/// The AVX-512 VNNI int8 convolution.
///
/// # Safety
///
/// The CPU has AVX-512 F, BW and VNNI; `input` is the quantised, padded image `conv` reads
/// (with the slack its last tile may read past the end) and `out` holds its `c_out · h · w` outputs.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn forward(conv: &Int8Conv3x3, input: &[u8], h: usize, w: usize, in_scale: f32, out: &mut [f32]) -> f32 {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let mut max = _mm512_setzero_ps();
        for &(co0, lanes, offset) in &conv.blocks {
            let weights = conv.packed.as_ptr().add(offset);
            max = match lanes {
                4 => block::<4>(conv, input, h, w, in_scale, co0, weights, out, max),
                2 => block::<2>(conv, input, h, w, in_scale, co0, weights, out, max),
                _ => block::<1>(conv, input, h, w, in_scale, co0, weights, out, max),
            };
        }
        _mm512_reduce_max_ps(max)
    }
}

/// `d[i] = round(max of the four rows at i · inv)`, saturated to 255; as the portable code.
///
/// # Safety
///
/// The CPU has AVX-512 F and BW; each row holds at least `d.len()` values.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn max4_quantize(rows: [&[f32]; 4], inv: f32, d: &mut [u8]) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let (inv, half) = (_mm512_set1_ps(inv), _mm512_set1_ps(0.5));
        let limit = _mm512_set1_ps(255.0);
        for i in (0..d.len()).step_by(16) {
            let load = |r: &[f32]| _mm512_loadu_ps(r.as_ptr().add(i));
            let v = _mm512_max_ps(_mm512_max_ps(load(rows[0]), load(rows[1])), _mm512_max_ps(load(rows[2]), load(rows[3])));
            let v = _mm512_min_ps(_mm512_add_ps(_mm512_mul_ps(v, inv), half), limit);
            let bytes = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v));
            _mm_storeu_si128(d.as_mut_ptr().add(i) as *mut __m128i, bytes);
        }
    }
}

one_channel_conv!(
    "avx512f",
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_max_ps,
    _mm512_storeu_ps,
    _mm512_reduce_max_ps
);

/// One block of `16·L` output channels over the whole image, `TILE_PIXELS` pixels at a time:
/// `TILE_PIXELS·L` i32 accumulators stay in registers for the whole 3x3xC_in reduction.
///
/// # Safety
///
/// As [`forward`]'s, for this block of channels.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // register tiles: indexed on purpose
unsafe fn block<const L: usize>(
    conv: &Int8Conv3x3,
    input: &[u8],
    h: usize,
    w: usize,
    in_scale: f32,
    co0: usize,
    weights: *const i8,
    out: &mut [f32],
    mut max: __m512,
) -> __m512 {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let (c_in, c_out) = (conv.c_in, conv.c_out);
        let row = (w + 2) * c_in;
        let groups = c_in / 4;
        let mut scale = [_mm512_setzero_ps(); L];
        let mut bias = [_mm512_setzero_ps(); L];
        for l in 0..L {
            let ch = co0 + l * 16;
            scale[l] = _mm512_mul_ps(_mm512_set1_ps(in_scale), _mm512_loadu_ps(conv.weight_scale.as_ptr().add(ch)));
            bias[l] = _mm512_loadu_ps(conv.bias.as_ptr().add(ch));
        }
        let zero = _mm512_setzero_ps();
        for y in 0..h {
            let mut x0 = 0;
            while x0 < w {
                let mut acc = [[_mm512_setzero_si512(); L]; TILE_PIXELS];
                let mut wp = weights as *const __m512i;
                for tap in 0..9 {
                    let base = input.as_ptr().add((y + tap / 3) * row + (x0 + tap % 3) * c_in);
                    for g in 0..groups {
                        let mut wv = [_mm512_setzero_si512(); L];
                        for l in 0..L {
                            wv[l] = _mm512_loadu_si512(wp.add(l));
                        }
                        wp = wp.add(L);
                        let a = base.add(g * 4);
                        for p in 0..TILE_PIXELS {
                            let pixels = _mm512_set1_epi32((a.add(p * c_in) as *const i32).read_unaligned());
                            for l in 0..L {
                                acc[p][l] = _mm512_dpbusd_epi32(acc[p][l], pixels, wv[l]);
                            }
                        }
                    }
                }
                for (p, acc) in acc.iter().enumerate().take(w - x0) {
                    let dst = out.as_mut_ptr().add((y * w + x0 + p) * c_out + co0);
                    for l in 0..L {
                        let v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[l]), scale[l], bias[l]);
                        let v = _mm512_max_ps(v, zero);
                        _mm512_storeu_ps(dst.add(l * 16), v);
                        max = _mm512_max_ps(max, v);
                    }
                }
                x0 += TILE_PIXELS;
            }
        }
        max
    }
}
