//! The int8 kernels on 256-bit registers: plain AVX2 (`vpmaddubsw` + `vpmaddwd`) and AVX-VNNI.

use super::Int8Conv3x3;
use std::arch::x86_64::*;

/// Pixels per register tile: 4 pixels x 16 channels in eight accumulators, with two weight
/// vectors, the broadcast pixels and the AVX2 path's temporaries: 13 of 16 registers.
const PIXELS: usize = 4;

/// The AVX-VNNI int8 convolution (256-bit `vpdpbusd`).
///
/// # Safety
///
/// The CPU has AVX2, FMA and AVX-VNNI; buffers as the AVX-512 kernel's `forward` needs them.
#[target_feature(enable = "avx2,fma,avxvnni")]
pub(super) unsafe fn forward_vnni(conv: &Int8Conv3x3, input: &[u8], h: usize, w: usize, in_scale: f32, out: &mut [f32]) -> f32 {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe { forward::<true>(conv, input, h, w, in_scale, out) }
}

/// The AVX2 int8 convolution (`vpmaddubsw` + `vpmaddwd`).
///
/// # Safety
///
/// The CPU has AVX2 and FMA; buffers as the AVX-512 kernel's `forward` needs them.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn forward_madd(conv: &Int8Conv3x3, input: &[u8], h: usize, w: usize, in_scale: f32, out: &mut [f32]) -> f32 {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe { forward::<false>(conv, input, h, w, in_scale, out) }
}

/// `acc + Σ of four u8·s8 products` per i32 lane: `vpdpbusd` with AVX-VNNI, else
/// `vpmaddubsw` + `vpmaddwd` (exact while |w| ≤ 64).
///
/// # Safety
///
/// Only from code compiled for AVX2 (and AVX-VNNI when `VNNI`).
#[inline(always)]
unsafe fn dot4<const VNNI: bool>(acc: __m256i, pixels: __m256i, weights: __m256i, ones: __m256i) -> __m256i {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        if VNNI {
            _mm256_dpbusd_avx_epi32(acc, pixels, weights)
        } else {
            _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(pixels, weights), ones))
        }
    }
}

/// Every 16-channel block over the whole image, `PIXELS` pixels at a time (the VNNI
/// kernel's scheme on 8-lane registers).
///
/// # Safety
///
/// As [`forward_vnni`] (`VNNI`) or [`forward_madd`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register tiles: indexed on purpose
unsafe fn forward<const VNNI: bool>(conv: &Int8Conv3x3, input: &[u8], h: usize, w: usize, in_scale: f32, out: &mut [f32]) -> f32 {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let (c_in, c_out) = (conv.c_in, conv.c_out);
        let row = (w + 2) * c_in;
        let groups = c_in / 4;
        let ones = _mm256_set1_epi16(1);
        let zero = _mm256_setzero_ps();
        let mut max = zero;
        for &(co0, _, offset) in &conv.blocks {
            let weights = conv.packed.as_ptr().add(offset) as *const __m256i;
            let mut scale = [zero; 2];
            let mut bias = [zero; 2];
            for l in 0..2 {
                let ch = co0 + l * 8;
                scale[l] = _mm256_mul_ps(_mm256_set1_ps(in_scale), _mm256_loadu_ps(conv.weight_scale.as_ptr().add(ch)));
                bias[l] = _mm256_loadu_ps(conv.bias.as_ptr().add(ch));
            }
            // Tiles of PIXELS consecutive pixels in raster order, across row ends: no tile is
            // partial but the image's last (on the 6x6 maps of the last stage, tiles within a
            // row wasted a quarter of the work).
            let pixels_total = h * w;
            let mut q0 = 0;
            while q0 < pixels_total {
                // Each tile pixel's offset in the padded input (past the end: the last pixel,
                // read and discarded).
                let offsets: [usize; PIXELS] = std::array::from_fn(|p| {
                    let q = (q0 + p).min(pixels_total - 1);
                    (q / w) * row + (q % w) * c_in
                });
                let mut acc = [[_mm256_setzero_si256(); 2]; PIXELS];
                let mut wp = weights;
                for tap in 0..9 {
                    let tap_offset = (tap / 3) * row + (tap % 3) * c_in;
                    let bases: [*const u8; PIXELS] = std::array::from_fn(|p| input.as_ptr().add(offsets[p] + tap_offset));
                    let mut g = 0;
                    // Without VNNI, two groups' `vpmaddubsw` products add in i16 before one
                    // `vpmaddwd` (exact: activations ≤ 127, weights ±64).
                    if !VNNI {
                        while g + 2 <= groups {
                            let (w0, w1) = (_mm256_loadu_si256(wp), _mm256_loadu_si256(wp.add(1)));
                            let (v0, v1) = (_mm256_loadu_si256(wp.add(2)), _mm256_loadu_si256(wp.add(3)));
                            wp = wp.add(4);
                            for p in 0..PIXELS {
                                let a = _mm256_set1_epi32((bases[p].add(g * 4) as *const i32).read_unaligned());
                                let b = _mm256_set1_epi32((bases[p].add(g * 4 + 4) as *const i32).read_unaligned());
                                let s0 = _mm256_add_epi16(_mm256_maddubs_epi16(a, w0), _mm256_maddubs_epi16(b, v0));
                                let s1 = _mm256_add_epi16(_mm256_maddubs_epi16(a, w1), _mm256_maddubs_epi16(b, v1));
                                acc[p][0] = _mm256_add_epi32(acc[p][0], _mm256_madd_epi16(s0, ones));
                                acc[p][1] = _mm256_add_epi32(acc[p][1], _mm256_madd_epi16(s1, ones));
                            }
                            g += 2;
                        }
                    }
                    while g < groups {
                        let w0 = _mm256_loadu_si256(wp);
                        let w1 = _mm256_loadu_si256(wp.add(1));
                        wp = wp.add(2);
                        for p in 0..PIXELS {
                            let pixels = _mm256_set1_epi32((bases[p].add(g * 4) as *const i32).read_unaligned());
                            acc[p][0] = dot4::<VNNI>(acc[p][0], pixels, w0, ones);
                            acc[p][1] = dot4::<VNNI>(acc[p][1], pixels, w1, ones);
                        }
                        g += 1;
                    }
                }
                for (p, acc) in acc.iter().enumerate().take(pixels_total - q0) {
                    let dst = out.as_mut_ptr().add((q0 + p) * c_out + co0);
                    for l in 0..2 {
                        let v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[l]), scale[l], bias[l]);
                        let v = _mm256_max_ps(v, zero);
                        _mm256_storeu_ps(dst.add(l * 8), v);
                        max = _mm256_max_ps(max, v);
                    }
                }
                q0 += PIXELS;
            }
        }
        horizontal_max(max)
    }
}

/// The largest of the eight lanes.
///
/// # Safety
///
/// Only from code compiled for AVX.
#[inline(always)]
unsafe fn horizontal_max(v: __m256) -> f32 {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), v);
        lanes.iter().fold(0f32, |m, x| m.max(*x))
    }
}

/// `d[i] = round(max of the four rows at i · inv)`, saturated to `limit` (≤ 255); as the
/// portable code.
///
/// # Safety
///
/// The CPU has AVX2; each row holds at least `d.len()` values.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn max4_quantize(rows: [&[f32]; 4], inv: f32, limit: f32, d: &mut [u8]) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let (inv, half) = (_mm256_set1_ps(inv), _mm256_set1_ps(0.5));
        let limit = _mm256_set1_ps(limit);
        for i in (0..d.len()).step_by(8) {
            let load = |r: &[f32]| _mm256_loadu_ps(r.as_ptr().add(i));
            let v = _mm256_max_ps(_mm256_max_ps(load(rows[0]), load(rows[1])), _mm256_max_ps(load(rows[2]), load(rows[3])));
            let v = _mm256_min_ps(_mm256_add_ps(_mm256_mul_ps(v, inv), half), limit);
            // 0..=255 in i32 lanes → bytes: pack within each 128-bit half, then take the low
            // four bytes of each half.
            let words = _mm256_packus_epi32(_mm256_cvttps_epi32(v), _mm256_setzero_si256());
            let bytes = _mm256_packus_epi16(words, _mm256_setzero_si256());
            let lo = _mm256_extract_epi32::<0>(bytes) as u32;
            let hi = _mm256_extract_epi32::<4>(bytes) as u32;
            d[i..i + 4].copy_from_slice(&lo.to_le_bytes());
            d[i + 4..i + 8].copy_from_slice(&hi.to_le_bytes());
        }
    }
}

one_channel_conv!(
    "avx2,fma",
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_max_ps,
    _mm256_storeu_ps,
    horizontal_max
);
