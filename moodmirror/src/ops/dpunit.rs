//! YuNet's layers on plain `f32` slices, one image in CHW order, for inference on the CPU.
//!
//! A detector pass runs ~60 small layers; as candle ops each allocated and zeroed a fresh
//! multi-megabyte output (a fifth of the time went to page faults and memset) and the pointwise
//! convolutions went through a general GEMM. Here every layer writes into buffers the caller
//! keeps, the pointwise convolution is an AVX2/FMA register-tiled kernel (4 output channels x 16
//! pixels in eight registers, bias and ReLU on the way out), and the depthwise, pooling and
//! upsampling loops are compiled for AVX2 so that they vectorise. Each kernel checks the CPU at
//! run time and has a portable version, which is also the tests' reference.

/// Which code runs the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// AVX2 with FMA: every x86-64 CPU since Haswell / Zen 1.
    Avx2,
    Portable,
}

impl SimdLevel {
    pub fn detect() -> Self {
        if super::cpu::has_avx2_fma() {
            return SimdLevel::Avx2;
        }
        SimdLevel::Portable
    }
}

/// Runs `$body` compiled for AVX2+FMA when `$level` says so (checked at run time), portable
/// otherwise. The body is the same code: the AVX2 copy lets the compiler vectorise it.
macro_rules! dispatch {
    ($level:expr, $body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2<T>(f: impl FnOnce() -> T) -> T {
                f()
            }
            if $level == SimdLevel::Avx2 {
                // SAFETY: `SimdLevel::Avx2` is only produced where the CPU has AVX2 and FMA.
                unsafe { avx2(|| $body) }
            } else {
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $body
        }
    }};
}

/// `out[co][p] = act(bias[co] + Σ_ci w[co][ci] · x[ci][p])` for `p < n`: a 1x1 convolution of
/// a CHW image (`x`: `c_in` planes of `n` pixels), `w` row-major `(c_out, c_in)`.
#[allow(clippy::too_many_arguments)] // a kernel's operands, each named at the call site
pub fn pointwise(level: SimdLevel, x: &[f32], c_in: usize, n: usize, w: &[f32], bias: &[f32], relu: bool, out: &mut [f32]) {
    let c_out = bias.len();
    assert!(x.len() >= c_in * n && w.len() == c_out * c_in && out.len() >= c_out * n, "pointwise: buffer sizes");
    let mut co = 0;
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx2 {
        co = c_out / 4 * 4;
        // SAFETY: AVX2 and FMA are present (SimdLevel::Avx2); the assert above bounds every
        // access the kernel makes.
        unsafe { avx2::pointwise(x, c_in, n, &w[..co * c_in], &bias[..co], relu, &mut out[..co * n]) };
    }
    for c in co..c_out {
        let row = &mut out[c * n..(c + 1) * n];
        row.fill(bias[c]);
        for ci in 0..c_in {
            let wv = w[c * c_in + ci];
            for (o, v) in row.iter_mut().zip(&x[ci * n..(ci + 1) * n]) {
                *o += wv * v;
            }
        }
        if relu {
            row.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// The largest plane side [`depthwise_plane`] copies into its padded buffer.
    pub(super) const SMALL_PLANE: usize = 64;

    /// Floats of the padded copy of an `h` x `w` plane: a zero border, and slack on the right
    /// for the vector loop's reads.
    pub(super) fn padded_len(h: usize, w: usize) -> usize {
        (h + 2) * (w + 10)
    }

    /// All lanes below `n` (≤ 8) set: the mask of a row's last, partial vector.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2.
    #[inline(always)]
    unsafe fn first_lanes(n: usize) -> __m256i {
        // SAFETY: plain register arithmetic (the caller upholds the CPU requirement).
        unsafe { _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)) }
    }

    /// [`super::max_pool2`] over `rows` output rows of `w / 2`, eight outputs per vector
    /// (two row pairs maxed, then even and odd lanes), the rest in scalar.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2; `x` holds `2 · rows · w` values and `out` `rows · w / 2`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn max_pool2_rows(x: &[f32], rows: usize, w: usize, out: &mut [f32]) {
        let ow = w / 2;
        for r in 0..rows {
            let (r0, r1) = (&x[2 * r * w..][..w], &x[(2 * r + 1) * w..][..w]);
            let dst = &mut out[r * ow..][..ow];
            let mut o = 0;
            // SAFETY: outputs o..o + 8 read inputs 2o..2o + 16 of both rows, within `w`.
            unsafe {
                while o + 8 <= ow {
                    let (a, b) = (r0.as_ptr().add(2 * o), r1.as_ptr().add(2 * o));
                    let m0 = _mm256_max_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(b));
                    let m1 = _mm256_max_ps(_mm256_loadu_ps(a.add(8)), _mm256_loadu_ps(b.add(8)));
                    // Even and odd lanes of each 128-bit half: outputs 0 1 4 5 | 2 3 6 7.
                    let pairs = _mm256_max_ps(_mm256_shuffle_ps::<0b10_00_10_00>(m0, m1), _mm256_shuffle_ps::<0b11_01_11_01>(m0, m1));
                    let ordered = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(pairs)));
                    _mm256_storeu_ps(dst.as_mut_ptr().add(o), ordered);
                    o += 8;
                }
            }
            super::max_pool2_row(&r0[2 * o..], &r1[2 * o..], &mut dst[o..]);
        }
    }

    /// [`super::pointwise`] for a multiple of 4 output channels. Pixel tiles outermost: a
    /// 16-pixel tile of every input channel (4 KiB for 64 channels) stays in L1 while each
    /// block of 4 output channels runs over it in eight accumulators; a partial last tile goes
    /// through a zero-padded copy.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA; `x` holds `c_in · n` values, `w` `c_out · c_in` and `out`
    /// `c_out · n`, where `c_out = bias.len()` is a multiple of 4.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn pointwise(x: &[f32], c_in: usize, n: usize, w: &[f32], bias: &[f32], relu: bool, out: &mut [f32]) {
        // SAFETY: the caller upholds this function's contract (its `# Safety` section).
        unsafe {
            // On the stack for up to 64 input channels (all of YuNet's layers), and only when there
            // is a partial tile: no allocation, no 4 KiB of zeroing per call otherwise.
            let mut stack;
            let mut heap = Vec::new();
            let tail: &mut [f32] = if n.is_multiple_of(16) {
                &mut []
            } else if c_in <= 64 {
                stack = [0f32; 64 * 16];
                &mut stack[..c_in * 16]
            } else {
                heap.resize(c_in * 16, 0.0);
                &mut heap
            };
            let mut p = 0;
            while p < n {
                let full = p + 16 <= n;
                // The tile's rows: in place, or the padded copy (row stride 16).
                let (src, stride) = if full {
                    (x.as_ptr().add(p), n)
                } else {
                    for ci in 0..c_in {
                        tail[ci * 16..ci * 16 + n - p].copy_from_slice(&x[ci * n + p..ci * n + n]);
                    }
                    (tail.as_ptr(), 16)
                };
                // Six output channels at a time (twelve accumulators), four for the rest (`c_out` is
                // a multiple of 4: as many blocks of six as leave one).
                let c_out = bias.len();
                let sixes = (0..=c_out / 6).rev().find(|k| (c_out - 6 * k).is_multiple_of(4)).unwrap_or(0);
                let mut co = 0;
                while co < 6 * sixes {
                    channels_tile::<6>(src, stride, c_in, w.as_ptr().add(co * c_in), &bias[co..co + 6], relu, out, n, p, co, full);
                    co += 6;
                }
                while co < c_out {
                    channels_tile::<4>(src, stride, c_in, w.as_ptr().add(co * c_in), &bias[co..co + 4], relu, out, n, p, co, full);
                    co += 4;
                }
                p += 16;
            }
        }
    }

    /// `CO` output channels from `co` of one 16-pixel tile at `p` of [`pointwise`]: `2·CO`
    /// accumulators over the whole reduction, the tile's two input vectors loaded once per
    /// input channel and each weight broadcast once.
    ///
    /// # Safety
    ///
    /// As [`pointwise`]'s, with `co + CO` output channels at most.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn channels_tile<const CO: usize>(
        src: *const f32,
        stride: usize,
        c_in: usize,
        wb: *const f32,
        bias: &[f32],
        relu: bool,
        out: &mut [f32],
        n: usize,
        p: usize,
        co: usize,
        full: bool,
    ) {
        // SAFETY: the caller upholds this function's contract (its `# Safety` section).
        unsafe {
            let zero = _mm256_setzero_ps();
            let mut acc = [[zero; 2]; CO];
            for (j, a) in acc.iter_mut().enumerate() {
                *a = [_mm256_set1_ps(bias[j]); 2];
            }
            for ci in 0..c_in {
                let row = src.add(ci * stride);
                let (x0, x1) = (_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8)));
                for (j, a) in acc.iter_mut().enumerate() {
                    let wv = _mm256_broadcast_ss(&*wb.add(j * c_in + ci));
                    a[0] = _mm256_fmadd_ps(wv, x0, a[0]);
                    a[1] = _mm256_fmadd_ps(wv, x1, a[1]);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                let (v0, v1) = if relu { (_mm256_max_ps(a[0], zero), _mm256_max_ps(a[1], zero)) } else { (a[0], a[1]) };
                let dst = &mut out[(co + j) * n + p..];
                if full {
                    _mm256_storeu_ps(dst.as_mut_ptr(), v0);
                    _mm256_storeu_ps(dst.as_mut_ptr().add(8), v1);
                } else {
                    let mut t = [0f32; 16];
                    _mm256_storeu_ps(t.as_mut_ptr(), v0);
                    _mm256_storeu_ps(t.as_mut_ptr().add(8), v1);
                    dst[..n - p].copy_from_slice(&t[..n - p]);
                }
            }
        }
    }

    /// One channel's plane of [`super::depthwise3x3`]. Planes one or two pixels wide run in
    /// scalar; others up to 64x64 (YuNet on track crops) are copied with their zero border into
    /// `padded` and run eight outputs at a time, edges included; larger ones run their interior eight pixels at a time (the
    /// last chunk overlapping the one before rather than leaving a tail: outputs are computed
    /// from scratch, so writing one twice is harmless) and their two edge pixels in scalar.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA; `src` and `dst` hold `h · w` values, `taps` nine, and
    /// `padded` [`padded_len`] of a small plane's size, zero but for interiors written here.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)] // a kernel's operands, each named at the call site
    pub(super) unsafe fn depthwise_plane(
        src: &[f32],
        h: usize,
        w: usize,
        taps: &[f32],
        bias: f32,
        relu: bool,
        dst: &mut [f32],
        padded: &mut [f32],
    ) {
        // SAFETY: the caller upholds this function's contract (its `# Safety` section).
        unsafe {
            let zero = _mm256_setzero_ps();
            let t: [__m256; 9] = std::array::from_fn(|i| _mm256_set1_ps(taps[i]));
            let finish = |acc: __m256| if relu { _mm256_max_ps(acc, zero) } else { acc };
            if w <= 2 {
                // One or two columns (the coarse levels of a track crop): lane by lane, the
                // taps in the vector path's order (bit for bit its result) without its copy.
                for oy in 0..h {
                    for ox in 0..w {
                        let mut acc = bias;
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = ((oy + ky).wrapping_sub(1), (ox + kx).wrapping_sub(1));
                                if iy < h && ix < w {
                                    acc = taps[ky * 3 + kx].mul_add(src[iy * w + ix], acc);
                                }
                            }
                        }
                        dst[oy * w + ox] = if relu { acc.max(0.0) } else { acc };
                    }
                }
                return;
            }
            if w <= SMALL_PLANE && h <= SMALL_PLANE {
                // Small planes (track crops): copied with their zero border into `padded`, so
                // every output, edges included, is a vector lane. Rows move in vectors, the
                // last one masked (short copies through memmove cost more than the arithmetic
                // on the 1x1 to 8x8 planes of a 32-pixel crop).
                let ps = w + 10; // row stride: the border, and slack for the last chunk's reads
                let tail = first_lanes(w % 8);
                // The caller zeroed the buffer once per layer; only the interior is written
                // here, so the border stays zero for every channel.
                for y in 0..h {
                    let (from, to) = (src.as_ptr().add(y * w), padded.as_mut_ptr().add((y + 1) * ps + 1));
                    for x0 in (0..w).step_by(8) {
                        if x0 + 8 <= w {
                            _mm256_storeu_ps(to.add(x0), _mm256_loadu_ps(from.add(x0)));
                        } else {
                            _mm256_maskstore_ps(to.add(x0), tail, _mm256_maskload_ps(from.add(x0), tail));
                        }
                    }
                }
                for oy in 0..h {
                    for x0 in (0..w).step_by(8) {
                        let mut acc = _mm256_set1_ps(bias);
                        for ky in 0..3 {
                            let p = padded.as_ptr().add((oy + ky) * ps + x0);
                            acc = _mm256_fmadd_ps(t[ky * 3], _mm256_loadu_ps(p), acc);
                            acc = _mm256_fmadd_ps(t[ky * 3 + 1], _mm256_loadu_ps(p.add(1)), acc);
                            acc = _mm256_fmadd_ps(t[ky * 3 + 2], _mm256_loadu_ps(p.add(2)), acc);
                        }
                        let at = dst.as_mut_ptr().add(oy * w + x0);
                        if x0 + 8 <= w {
                            _mm256_storeu_ps(at, finish(acc));
                        } else {
                            _mm256_maskstore_ps(at, tail, finish(acc));
                        }
                    }
                }
                return;
            }
            for oy in 0..h {
                let rows = super::rows_around(src, h, w, oy);
                let out = &mut dst[oy * w..(oy + 1) * w];
                let mut scalar_from = 1;
                if w >= 10 {
                    let mut x = 1;
                    loop {
                        x = x.min(w - 9);
                        let mut acc = _mm256_set1_ps(bias);
                        for (ky, row) in rows.iter().enumerate() {
                            if let Some(r) = row {
                                let p = r.as_ptr().add(x);
                                acc = _mm256_fmadd_ps(t[ky * 3], _mm256_loadu_ps(p.sub(1)), acc);
                                acc = _mm256_fmadd_ps(t[ky * 3 + 1], _mm256_loadu_ps(p), acc);
                                acc = _mm256_fmadd_ps(t[ky * 3 + 2], _mm256_loadu_ps(p.add(1)), acc);
                            }
                        }
                        _mm256_storeu_ps(out.as_mut_ptr().add(x), finish(acc));
                        if x == w - 9 {
                            break;
                        }
                        x += 8;
                    }
                    scalar_from = w - 1;
                }
                for x in std::iter::once(0).chain(scalar_from.max(1)..w) {
                    out[x] = super::depthwise_pixel(&rows, taps, bias, relu, x, w);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// [`depthwise3x3`]'s padded copy of a small plane, per thread (track crops run on several).
    static PADDED_PLANE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `act(bias[c] + depthwise3x3(x)[c])`, stride 1, zero padding 1, of `channels` x `batch`
/// planes of `h` x `w` (CBHW: each channel's planes of the batch together); `taps` `(C, 9)`.
#[allow(clippy::too_many_arguments)]
pub fn depthwise3x3(
    level: SimdLevel,
    x: &[f32],
    channels: usize,
    batch: usize,
    h: usize,
    w: usize,
    taps: &[f32],
    bias: &[f32],
    relu: bool,
    out: &mut [f32],
) {
    let plane = h * w;
    let planes = channels * batch;
    assert!(x.len() >= planes * plane && out.len() >= planes * plane && taps.len() >= channels * 9 && bias.len() >= channels);
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx2 {
        // The padded copy of small planes: its used part zeroed once per layer, reused by
        // every channel (see `avx2::depthwise_plane`).
        return super::with_scratch(&PADDED_PLANE, |padded| {
            let small = h <= avx2::SMALL_PLANE && w <= avx2::SMALL_PLANE;
            let used = if small { avx2::padded_len(h, w) } else { 0 };
            padded.clear();
            padded.resize(used, 0.0);
            for p in 0..planes {
                let c = p / batch.max(1);
                // SAFETY: AVX2 and FMA are present; `src` and `dst` are `h * w` long, the
                // padded buffer holds a small plane with its border, and the kernel reads
                // x-1..x+9 of a row of a large plane only for 1 <= x <= w - 9.
                unsafe {
                    avx2::depthwise_plane(
                        &x[p * plane..(p + 1) * plane],
                        h,
                        w,
                        &taps[c * 9..c * 9 + 9],
                        bias[c],
                        relu,
                        &mut out[p * plane..(p + 1) * plane],
                        padded,
                    )
                };
            }
        });
    }
    for p in 0..planes {
        let c = p / batch.max(1);
        let src = &x[p * plane..(p + 1) * plane];
        let dst = &mut out[p * plane..(p + 1) * plane];
        let t = &taps[c * 9..c * 9 + 9];
        for oy in 0..h {
            let rows = rows_around(src, h, w, oy);
            for x in 0..w {
                dst[oy * w + x] = depthwise_pixel(&rows, t, bias[c], relu, x, w);
            }
        }
    }
}

/// The input rows above, at and below output row `oy` (`None` in the zero padding).
fn rows_around(src: &[f32], h: usize, w: usize, oy: usize) -> [Option<&[f32]>; 3] {
    std::array::from_fn(|ky| (oy + ky).checked_sub(1).filter(|&iy| iy < h).map(|iy| &src[iy * w..(iy + 1) * w]))
}

/// One output pixel of the depthwise convolution, zero padding included.
#[inline]
fn depthwise_pixel(rows: &[Option<&[f32]>; 3], taps: &[f32], bias: f32, relu: bool, x: usize, w: usize) -> f32 {
    let mut v = bias;
    for (ky, row) in rows.iter().enumerate() {
        if let Some(r) = row {
            for kx in 0..3 {
                let ix = (x + kx).wrapping_sub(1);
                if ix < w {
                    v += taps[ky * 3 + kx] * r[ix];
                }
            }
        }
    }
    if relu {
        v.max(0.0)
    } else {
        v
    }
}

/// 2x2 max pooling, stride 2, of `channels` planes of `h` x `w` (both even).
pub fn max_pool2(level: SimdLevel, x: &[f32], channels: usize, h: usize, w: usize, out: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    assert!(x.len() >= channels * h * w && out.len() >= channels * oh * ow);
    // Planes of even height stack into one column of row pairs: output row r reads input rows
    // 2r and 2r + 1, whatever plane it is in (no loop per plane: a track crop's have 1 to 8).
    let rows = channels * oh;
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx2 {
        // SAFETY: AVX2 is present; the assert above bounds every row the kernel reads and writes.
        unsafe { avx2::max_pool2_rows(x, rows, w, out) };
        return;
    }
    for r in 0..rows {
        max_pool2_row(&x[2 * r * w..][..w], &x[(2 * r + 1) * w..][..w], &mut out[r * ow..][..ow]);
    }
}

/// One output row of [`max_pool2`] from its two input rows.
#[inline]
fn max_pool2_row(r0: &[f32], r1: &[f32], dst: &mut [f32]) {
    for (i, o) in dst.iter_mut().enumerate() {
        *o = max2(max2(r0[2 * i], r0[2 * i + 1]), max2(r1[2 * i], r1[2 * i + 1]));
    }
}

/// The larger of two activations, as one `maxss` (`f32::max`'s NaN rule costs three more
/// instructions per value; activations are finite).
#[inline]
fn max2(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// `fine += nearest-upsample-2x(coarse)`: `channels` planes, `fine` `2h x 2w`, `coarse` `h x w`.
pub fn add_upsampled2(level: SimdLevel, fine: &mut [f32], coarse: &[f32], channels: usize, h: usize, w: usize) {
    assert!(fine.len() >= channels * 4 * h * w && coarse.len() >= channels * h * w);
    dispatch!(level, {
        for c in 0..channels {
            for y in 0..2 * h {
                let src = &coarse[(c * h + y / 2) * w..][..w];
                let dst = &mut fine[(c * 2 * h + y) * 2 * w..][..2 * w];
                for (d, s) in dst.chunks_exact_mut(2).zip(src) {
                    d[0] += s;
                    d[1] += s;
                }
            }
        }
    })
}

/// The `(C·9, B · H/2 · W/2)` column matrix of a 3x3, stride 2, padding 1 convolution of a
/// CBHW batch (`h`, `w` even): the stem then runs as one [`pointwise`] product.
pub fn im2col3x3_stride2(x: &[f32], channels: usize, batch: usize, h: usize, w: usize, cols: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    let n = oh * ow;
    let total = batch * n;
    assert!(x.len() >= channels * batch * h * w && cols.len() >= channels * 9 * total);
    for c in 0..channels {
        for ky in 0..3 {
            for kx in 0..3 {
                for b in 0..batch {
                    let dst = &mut cols[((c * 3 + ky) * 3 + kx) * total + b * n..][..n];
                    let image = &x[(c * batch + b) * h * w..][..h * w];
                    for oy in 0..oh {
                        let row = &mut dst[oy * ow..(oy + 1) * ow];
                        let iy = (2 * oy + ky).wrapping_sub(1);
                        if iy >= h {
                            row.fill(0.0);
                            continue;
                        }
                        // Input column 2·ox + kx - 1: only the first output of kx = 0 is
                        // padding (w is even), the rest a stride-2 copy with no test per value.
                        let src = &image[iy * w..][..w];
                        if let Some((first, rest)) = row.split_first_mut() {
                            *first = if kx == 0 { 0.0 } else { src[kx - 1] };
                            for (v, s) in rest.iter_mut().zip(src.get(kx + 1..).unwrap_or(&[]).iter().step_by(2)) {
                                *v = *s;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn avx2_kernels_match_the_portable_ones() {
        if SimdLevel::detect() != SimdLevel::Avx2 {
            eprintln!("no AVX2 here: nothing to compare");
            return;
        }
        // Pixel counts with and without a partial 16-pixel tile; channel counts with a rest.
        for (c_in, c_out, n) in [(16, 16, 64), (64, 64, 37), (27, 16, 5), (64, 18, 200), (8, 8, 16), (5, 20, 33), (3, 4, 7)] {
            let (x, w, b) = (values(c_in * n, 1), values(c_out * c_in, 2), values(c_out, 3));
            let mut fast = vec![0f32; c_out * n];
            let mut slow = vec![0f32; c_out * n];
            pointwise(SimdLevel::Avx2, &x, c_in, n, &w, &b, true, &mut fast);
            pointwise(SimdLevel::Portable, &x, c_in, n, &w, &b, true, &mut slow);
            assert!(fast.iter().zip(&slow).all(|(a, b)| (a - b).abs() < 1e-4), "pointwise {c_in}->{c_out} x {n}");
        }
        for (h, w) in
            [(1, 1), (2, 2), (5, 1), (7, 2), (1, 5), (4, 4), (3, 8), (2, 9), (2, 7), (9, 15), (8, 16), (8, 33), (64, 64), (65, 20), (3, 70)]
        {
            let (x, t, b) = (values(3 * h * w, 4), values(27, 5), values(3, 6));
            let mut fast = vec![0f32; 3 * h * w];
            let mut slow = vec![0f32; 3 * h * w];
            depthwise3x3(SimdLevel::Avx2, &x, 3, 1, h, w, &t, &b, false, &mut fast);
            depthwise3x3(SimdLevel::Portable, &x, 3, 1, h, w, &t, &b, false, &mut slow);
            assert!(fast.iter().zip(&slow).all(|(a, b)| (a - b).abs() < 1e-5));
        }
    }

    #[test]
    fn depthwise_matches_a_direct_sum() {
        let (h, w) = (5, 6);
        let (x, t) = (values(h * w, 7), values(9, 8));
        let mut out = vec![0f32; h * w];
        depthwise3x3(SimdLevel::detect(), &x, 1, 1, h, w, &t, &[0.25], false, &mut out);
        for y in 0..h as isize {
            for xx in 0..w as isize {
                let mut s = 0.25;
                for ky in -1..=1isize {
                    for kx in -1..=1isize {
                        let (iy, ix) = (y + ky, xx + kx);
                        if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                            s += t[((ky + 1) * 3 + kx + 1) as usize] * x[(iy * w as isize + ix) as usize];
                        }
                    }
                }
                assert!((out[(y * w as isize + xx) as usize] - s).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn pooling_and_upsampling() {
        let x = [1., 5., 2., 0., 3., 4., 9., 1.];
        let mut out = [0f32; 2];
        max_pool2(SimdLevel::detect(), &x, 1, 2, 4, &mut out);
        assert_eq!(out, [5., 9.]);
        let mut fine = [1f32; 16];
        add_upsampled2(SimdLevel::detect(), &mut fine, &[1., 2., 3., 4.], 1, 2, 2);
        assert_eq!(&fine[..8], &[2., 2., 3., 3., 2., 2., 3., 3.]);
        assert_eq!(&fine[8..], &[4., 4., 5., 5., 4., 4., 5., 5.]);
        // Both kernels against the definition: planes of 2 to 40 columns (vectors of eight
        // outputs and a scalar rest), several channels stacked.
        for (c, h, w) in [(3, 2, 2), (2, 4, 4), (5, 8, 16), (2, 6, 34), (1, 2, 40)] {
            let x = values(c * h * w, 9);
            let want: Vec<f32> = (0..c * (h / 2) * (w / 2))
                .map(|i| {
                    let (ch, oy, ox) = (i / ((h / 2) * (w / 2)), i / (w / 2) % (h / 2), i % (w / 2));
                    let at = |y: usize, x_: usize| x[(ch * h + y) * w + x_];
                    at(2 * oy, 2 * ox).max(at(2 * oy, 2 * ox + 1)).max(at(2 * oy + 1, 2 * ox)).max(at(2 * oy + 1, 2 * ox + 1))
                })
                .collect();
            for level in [SimdLevel::detect(), SimdLevel::Portable] {
                let mut out = vec![0f32; want.len()];
                max_pool2(level, &x, c, h, w, &mut out);
                assert_eq!(out, want, "{level:?} {c}x{h}x{w}");
            }
        }
    }

    #[test]
    fn stride_2_columns_match_the_definition() {
        for (c, b, h, w) in [(3, 1, 4, 2), (3, 2, 6, 8), (2, 3, 8, 10)] {
            let x = values(c * b * h * w, 10);
            let (oh, ow) = (h / 2, w / 2);
            let total = b * oh * ow;
            let mut cols = vec![f32::NAN; c * 9 * total];
            im2col3x3_stride2(&x, c, b, h, w, &mut cols);
            for ch in 0..c {
                for (ky, kx) in (0..3).flat_map(|ky| (0..3).map(move |kx| (ky, kx))) {
                    for (item, oy, ox) in (0..b).flat_map(|i| (0..oh).flat_map(move |y| (0..ow).map(move |x_| (i, y, x_)))) {
                        let (iy, ix) = ((2 * oy + ky) as isize - 1, (2 * ox + kx) as isize - 1);
                        let want = if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            0.0
                        } else {
                            x[((ch * b + item) * h + iy as usize) * w + ix as usize]
                        };
                        let got = cols[((ch * 3 + ky) * 3 + kx) * total + (item * oh + oy) * ow + ox];
                        assert_eq!(got, want, "{c}x{b}x{h}x{w}: channel {ch} tap {ky},{kx} at {item},{oy},{ox}");
                    }
                }
            }
        }
    }
}
