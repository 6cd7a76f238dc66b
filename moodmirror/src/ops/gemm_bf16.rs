//! Matrix product with bf16 inputs and f32 accumulation (AVX-512 BF16 `vdpbf16ps`), as a
//! candle custom op with its backward, for training on CPUs that have it (AMD Zen 4, Intel
//! Sapphire Rapids and later).
//!
//! `vdpbf16ps` does 32 multiply-adds per instruction, twice f32 FMA's 16: the convolutions'
//! GEMMs, about half of a training step, run in about half the time. Inputs are rounded to bf16
//! (8 bits of mantissa) as they are packed; products and sums stay f32, as in mixed-precision
//! training on GPUs. Master weights, optimizer state and everything outside the GEMMs stay f32.
//!
//! Layout: the classic packed GEMM. A is packed in panels of `MR` rows, B in panels of `NR`
//! columns, both as pairs of consecutive k (`vdpbf16ps` multiplies pairs); a 6 x 64 tile of C
//! (24 zmm accumulators) stays in registers over a block of `KC_PAIRS` pairs.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const MR: usize = 6;
const NR: usize = 64;
/// Pairs of k per packed block: a B panel (`KC_PAIRS·NR` pairs, 16 KB) stays in L1.
const KC_PAIRS: usize = 64;
/// Most columns per parallel task (fewer when that leaves threads without 4 tasks each).
const NC_MAX: usize = 512;

/// Whether this CPU runs the bf16 GEMM.
pub fn available() -> bool {
    super::cpu::has_avx512_bf16()
}

/// An f32 number rounded to the nearest bf16 (ties to even), as its 16 bits.
#[inline]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of a bf16.
#[inline]
pub fn bf16_value(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// A 2-D f32 matrix in memory: element (r, c) at `data[r·row_stride + c·col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatrixView<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatrixView<'a> {
    /// The view a candle layout describes, checked to lie inside `data`.
    fn from_layout(data: &'a [f32], layout: &Layout, op: &str) -> Result<Self> {
        let (rows, cols) = layout.shape().dims2()?;
        let stride = layout.stride();
        let view = Self { data: &data[layout.start_offset().min(data.len())..], rows, cols, row_stride: stride[0], col_stride: stride[1] };
        view.check().map_err(|e| candle_core::Error::Msg(format!("{op}: layout {layout:?}: {e}")))?;
        Ok(view)
    }

    /// An error unless every element lies inside `data` (the kernels read without checks).
    fn check(&self) -> std::result::Result<(), String> {
        if self.rows == 0 || self.cols == 0 {
            return Ok(());
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .zip((self.cols - 1).checked_mul(self.col_stride))
            .and_then(|(a, b)| a.checked_add(b));
        match last {
            Some(last) if last < self.data.len() => Ok(()),
            _ => Err(format!(
                "a {}x{} matrix with strides ({}, {}) exceeds its {} values",
                self.rows,
                self.cols,
                self.row_stride,
                self.col_stride,
                self.data.len()
            )),
        }
    }

    fn transposed(&self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride }
    }

    #[inline]
    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.row_stride + c * self.col_stride]
    }

    /// The bf16 pair (k, k+1) of row r as one u32 (k in the low half); zero beyond `cols`.
    #[inline]
    fn row_pair(&self, r: usize, k: usize) -> u32 {
        let lo = bf16_bits(self.at(r, k)) as u32;
        let hi = if k + 1 < self.cols { bf16_bits(self.at(r, k + 1)) as u32 } else { 0 };
        lo | (hi << 16)
    }

    /// The bf16 pair (k, k+1) of column c; zero beyond `rows`.
    #[inline]
    fn col_pair(&self, k: usize, c: usize) -> u32 {
        let lo = bf16_bits(self.at(k, c)) as u32;
        let hi = if k + 1 < self.rows { bf16_bits(self.at(k + 1, c)) as u32 } else { 0 };
        lo | (hi << 16)
    }
}

thread_local! {
    /// Packing buffers, kept per thread ([`super::with_scratch`]): fresh ones on every product
    /// cost a tenth of a training step in page faults and zeroing.
    static PACKED_A: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    static PACKED_B: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A packed in `MR`-row panels: `[panel][k pair][MR]`, zero-padded rows.
fn pack_a(a: &MatrixView, k_pairs: usize, packed: &mut Vec<u32>) {
    let panels = a.rows.div_ceil(MR);
    packed.clear();
    packed.resize(panels * k_pairs * MR, 0);
    packed.par_chunks_mut(k_pairs * MR).enumerate().for_each(|(p, panel)| {
        let rows = MR.min(a.rows - p * MR);
        #[cfg(target_arch = "x86_64")]
        if a.col_stride == 1 {
            // Row-major A: the pairs (k, k+1) of a row are adjacent.
            let lines: Vec<&[f32]> = (0..rows).map(|r| &a.data[(p * MR + r) * a.row_stride..]).collect();
            // SAFETY: `available()` was checked; each row holds `a.cols` values from its start.
            unsafe { avx512::pack_lines_transposed(&lines, a.cols, 0, k_pairs, panel, 0, MR) };
            return;
        }
        for r in 0..rows {
            let row = p * MR + r;
            for kp in 0..k_pairs {
                panel[kp * MR + r] = a.row_pair(row, 2 * kp);
            }
        }
    });
}

/// Columns `c0..c0+n` and pairs `kp0..kp0+kpn` of B packed in `NR`-column panels:
/// `[panel][k pair][NR]`, zero-padded columns.
fn pack_b(b: &MatrixView, kp0: usize, kpn: usize, c0: usize, n: usize, packed: &mut Vec<u32>) {
    let panels = n.div_ceil(NR);
    packed.clear();
    packed.resize(panels * kpn * NR, 0);
    for p in 0..panels {
        let cols = NR.min(n - p * NR);
        let panel = &mut packed[p * kpn * NR..(p + 1) * kpn * NR];
        #[cfg(target_arch = "x86_64")]
        if b.col_stride == 1 {
            // SAFETY: `available()` was checked by the caller; the reads stay inside the view
            // (masked loads for the last columns, the last odd row read only when present).
            unsafe { avx512::pack_b_panel_row_major(b, kp0, kpn, c0 + p * NR, cols, panel) };
            continue;
        }
        #[cfg(target_arch = "x86_64")]
        if b.row_stride == 1 {
            // Column-major B (a transposed operand): the pairs (k, k+1) of a column are adjacent.
            for j0 in (0..cols).step_by(16) {
                let lines: Vec<&[f32]> = (j0..cols.min(j0 + 16)).map(|j| &b.data[(c0 + p * NR + j) * b.col_stride..]).collect();
                // SAFETY: as above; each column holds `b.rows` values from its start.
                unsafe { avx512::pack_lines_transposed(&lines, b.rows, kp0, kpn, panel, j0, NR) };
            }
            continue;
        }
        for kp in 0..kpn {
            let dst = &mut panel[kp * NR..kp * NR + cols];
            for (j, d) in dst.iter_mut().enumerate() {
                *d = b.col_pair(2 * (kp0 + kp), c0 + p * NR + j);
            }
        }
    }
}

/// Raw pointer to C, shared by tasks that write disjoint tiles.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint column ranges (or their own buffers).
unsafe impl Send for SharedOut {}
// SAFETY: as for Send: no two tasks touch the same element.
unsafe impl Sync for SharedOut {}

/// `c[i·ldc + j] (+)= Σ_k a[i,k]·b[k,j]` for columns `c0..c0+n` and k pairs `kp0..kp0+kpn`
/// (overwriting when `accumulate` is false in the first block).
#[allow(clippy::too_many_arguments)]
fn multiply_columns(
    a_packed: &[u32],
    k_pairs: usize,
    m: usize,
    b: &MatrixView,
    kp0: usize,
    kpn: usize,
    c0: usize,
    n: usize,
    out: SharedOut,
    ldc: usize,
) {
    super::with_scratch(&PACKED_B, |buffer| multiply_columns_with(buffer, a_packed, k_pairs, m, b, kp0, kpn, c0, n, out, ldc))
}

#[allow(clippy::too_many_arguments)]
fn multiply_columns_with(
    b_packed: &mut Vec<u32>,
    a_packed: &[u32],
    k_pairs: usize,
    m: usize,
    b: &MatrixView,
    kp0: usize,
    kpn: usize,
    c0: usize,
    n: usize,
    out: SharedOut,
    ldc: usize,
) {
    let panels_a = m.div_ceil(MR);
    let mut kb = 0;
    while kb < kpn {
        let block = KC_PAIRS.min(kpn - kb);
        pack_b(b, kp0 + kb, block, c0, n, b_packed);
        // Rows of A outside, columns inside: C is written in bands of MR rows along the row,
        // not down a column with a (often 4 KB-aliasing) row stride.
        for p in 0..panels_a {
            let ap = &a_packed[(p * k_pairs + kp0 + kb) * MR..];
            let rows = MR.min(m - p * MR);
            for q in 0..n.div_ceil(NR) {
                let bp = &b_packed[q * block * NR..(q + 1) * block * NR];
                let cols = NR.min(n - q * NR);
                // SAFETY: the tile (rows x cols at row p·MR, column c0 + q·NR) lies inside C, which
                // only this task writes in these columns; ap/bp hold `block` pairs.
                unsafe {
                    let c = out.0.add(p * MR * ldc + c0 + q * NR);
                    #[cfg(target_arch = "x86_64")]
                    avx512::kernel(block, ap.as_ptr(), bp.as_ptr(), c, ldc, rows, cols, kb > 0);
                }
            }
        }
        kb += block;
    }
}

/// `a · b` (`(m, k) · (k, n)`, any strides) into the row-major `(m, n)` `out`, with bf16
/// inputs and f32 accumulation. Needs [`available`].
pub fn matmul_into(a: &MatrixView, b: &MatrixView, out: &mut [f32]) -> Result<()> {
    // SAFETY: `out` is initialised memory of `out.len()` values.
    unsafe { matmul_raw(a, b, out.as_mut_ptr(), out.len()) }
}

/// `a · b` as a new row-major vector, not zeroed first (every value is written once).
pub fn matmul_new(a: &MatrixView, b: &MatrixView) -> Result<Vec<f32>> {
    let len = a.rows * b.cols;
    let mut out: Vec<std::mem::MaybeUninit<f32>> = Vec::with_capacity(len);
    // SAFETY: `matmul_raw` writes all `len` values (or fails, and the vector is dropped
    // without being read); the pointer has room for `len` values.
    unsafe {
        out.set_len(len);
        matmul_raw(a, b, out.as_mut_ptr() as *mut f32, len)?;
    }
    let mut out = std::mem::ManuallyDrop::new(out);
    // SAFETY: same allocation, every element initialised above, MaybeUninit<f32> has f32's layout.
    Ok(unsafe { Vec::from_raw_parts(out.as_mut_ptr() as *mut f32, out.len(), out.capacity()) })
}

/// The product into `len` values at `out`, writing every one of them before reading any.
///
/// # Safety
/// `out` must be valid for writes of `len` f32 values and not aliased.
unsafe fn matmul_raw(a: &MatrixView, b: &MatrixView, out: *mut f32, len: usize) -> Result<()> {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        if b.rows != k || len != m * n {
            candle_core::bail!("bf16 matmul: ({m}, {k}) · ({}, {n}) into {len} values", b.rows);
        }
        for (name, view) in [("a", a), ("b", b)] {
            view.check().map_err(|e| candle_core::Error::Msg(format!("bf16 matmul: {name} is {e}")))?;
        }
        if !available() {
            candle_core::bail!("bf16 matmul: this CPU lacks AVX-512 BF16");
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            std::ptr::write_bytes(out, 0, len);
            return Ok(());
        }
        if n < NR / 2 && m > n {
            // Few columns (the first layer's weight gradient): most of each NR-wide tile would be
            // padding; Cᵀ = Bᵀ·Aᵀ has the wide side as its columns.
            let transposed = matmul_new(&b.transposed(), &a.transposed())?;
            for (j, column) in transposed.chunks_exact(m).enumerate() {
                for (i, &v) in column.iter().enumerate() {
                    out.add(i * n + j).write(v);
                }
            }
            return Ok(());
        }
        let k_pairs = k.div_ceil(2);
        super::with_scratch(&PACKED_A, |buffer| multiply_packed(buffer, a, b, k_pairs, SharedOut(out)));
        Ok(())
    }
}

/// The product of packed A and B into C at `out` (row-major `m x n`), every value written.
fn multiply_packed(a_packed: &mut Vec<u32>, a: &MatrixView, b: &MatrixView, k_pairs: usize, out: SharedOut) {
    let (m, n) = (a.rows, b.cols);
    pack_a(a, k_pairs, a_packed);
    let a_packed = &a_packed[..];
    let threads = rayon::current_num_threads().max(1);
    if n.div_ceil(NR) >= 4 * threads || threads == 1 || k_pairs < 2 * KC_PAIRS {
        // Enough columns: one task per NC columns, each packing its own part of B.
        let nc = n.div_ceil(4 * threads).next_multiple_of(NR).clamp(NR, NC_MAX);
        (0..n.div_ceil(nc)).into_par_iter().for_each(|t| {
            let c0 = t * nc;
            multiply_columns(a_packed, k_pairs, m, b, 0, k_pairs, c0, nc.min(n - c0), out, n);
        });
    } else {
        // Few columns and a long k (weight gradients): split k, sum the partial products.
        let parts = threads.min(k_pairs / KC_PAIRS).max(1);
        let per = k_pairs.div_ceil(parts);
        let partial: Vec<Vec<f32>> = (0..parts)
            .into_par_iter()
            .map(|t| {
                let kp0 = t * per;
                let kpn = per.min(k_pairs - kp0);
                let mut buf = vec![0f32; m * n];
                multiply_columns(a_packed, k_pairs, m, b, kp0, kpn, 0, n, SharedOut(buf.as_mut_ptr()), n);
                buf
            })
            .collect();
        // SAFETY: `out` holds m·n values (checked by the caller); the copy initialises them all
        // before the slice is formed.
        let out = unsafe {
            std::ptr::copy_nonoverlapping(partial[0].as_ptr(), out.0, m * n);
            std::slice::from_raw_parts_mut(out.0, m * n)
        };
        for p in &partial[1..] {
            out.iter_mut().zip(p).for_each(|(o, v)| *o += v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MatrixView, MR, NR};
    use std::arch::x86_64::*;

    /// One `MR x NR` tile of C over `kp` pairs; stores `rows x cols` of it (adding to C when
    /// `accumulate`).
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512 F, BW and BF16; `a` and `b` hold `kp` pairs of one packed MR-row and
    /// NR-column panel, and `c` is valid for `rows` x `cols` (≤ MR x NR) values `ldc` apart.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // register tiles: indexed on purpose
    pub(super) unsafe fn kernel(
        kp: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        accumulate: bool,
    ) {
        // SAFETY: the caller upholds this function's contract (its `# Safety` section).
        unsafe {
            const L: usize = NR / 16;
            let mut acc = [[_mm512_setzero_ps(); L]; MR];
            for k in 0..kp {
                let bk = b.add(k * NR) as *const __m512i;
                let mut bv = [_mm512_setzero_si512(); L];
                for l in 0..L {
                    bv[l] = _mm512_loadu_si512(bk.add(l));
                }
                let ak = a.add(k * MR);
                for r in 0..MR {
                    let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*ak.add(r) as i32));
                    for l in 0..L {
                        acc[r][l] = _mm512_dpbf16_ps(acc[r][l], av, std::mem::transmute::<__m512i, __m512bh>(bv[l]));
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                let row = c.add(r * ldc);
                for l in 0..L {
                    let first = l * 16;
                    if first >= cols {
                        break;
                    }
                    let mask: __mmask16 = if cols - first >= 16 { 0xFFFF } else { (1u16 << (cols - first)) - 1 };
                    let v = if accumulate { _mm512_add_ps(acc[l], _mm512_maskz_loadu_ps(mask, row.add(first))) } else { acc[l] };
                    _mm512_mask_storeu_ps(row.add(first), mask, v);
                }
            }
        }
    }

    /// Transposes the 16x16 matrix of u32 in `r` (row i → lane i of every output).
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512 F.
    #[target_feature(enable = "avx512f")]
    unsafe fn transpose16(r: &mut [__m512i; 16]) {
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        // u[4i + j], 128-bit lane l: rows 4i..4i+4 of column 4l + j.
        let mut u = [_mm512_setzero_si512(); 16];
        for i in 0..4 {
            u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        // Column 4l + j gathers lane l of u[j], u[4 + j], u[8 + j], u[12 + j].
        for j in 0..4 {
            let v0 = _mm512_shuffle_i32x4::<0x44>(u[j], u[4 + j]);
            let v1 = _mm512_shuffle_i32x4::<0xEE>(u[j], u[4 + j]);
            let v2 = _mm512_shuffle_i32x4::<0x44>(u[8 + j], u[12 + j]);
            let v3 = _mm512_shuffle_i32x4::<0xEE>(u[8 + j], u[12 + j]);
            r[j] = _mm512_shuffle_i32x4::<0x88>(v0, v2);
            r[4 + j] = _mm512_shuffle_i32x4::<0xDD>(v0, v2);
            r[8 + j] = _mm512_shuffle_i32x4::<0x88>(v1, v3);
            r[12 + j] = _mm512_shuffle_i32x4::<0xDD>(v1, v3);
        }
    }

    /// Packs up to 16 contiguous lines of `len` values (rows of A, or columns of a
    /// column-major B), pairs `kp0..kp0+kpn`: pair `kp` of line `i` goes to
    /// `dst[(kp - kp0)·stride + offset + i]`. 16 pairs of 16 lines are converted by 16
    /// `vcvtne2ps2bf16` and turned into rows of the packed layout by one register transpose.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512 F, BW and BF16; each line holds `len` values and `dst` every slot
    /// `(kp - kp0)·stride + offset + i` written.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_lines_transposed(
        lines: &[&[f32]],
        len: usize,
        kp0: usize,
        kpn: usize,
        dst: &mut [u32],
        offset: usize,
        stride: usize,
    ) {
        // SAFETY: the caller upholds this function's contract (its `# Safety` section).
        unsafe {
            let lanes: __mmask16 = if lines.len() >= 16 { 0xFFFF } else { (1u16 << lines.len()) - 1 };
            let mut kp = 0;
            while kp < kpn {
                let k = 2 * (kp0 + kp);
                let avail = len.saturating_sub(k).min(32);
                let mask = |from: usize| -> __mmask16 {
                    let n = avail.saturating_sub(from).min(16);
                    if n == 16 {
                        0xFFFF
                    } else {
                        (1u16 << n) - 1
                    }
                };
                let mut rows = [_mm512_setzero_si512(); 16];
                for (row, line) in rows.iter_mut().zip(lines) {
                    let lo = _mm512_maskz_loadu_ps(mask(0), line.as_ptr().add(k));
                    let hi = _mm512_maskz_loadu_ps(mask(16), line.as_ptr().add(k + 16.min(avail)));
                    // bf16 of values k..k+32 in order: u32 i holds the pair (k+2i, k+2i+1).
                    *row = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                }
                transpose16(&mut rows);
                let n = 16.min(kpn - kp);
                for (i, row) in rows.iter().enumerate().take(n) {
                    _mm512_mask_storeu_epi32(dst.as_mut_ptr().add((kp + i) * stride + offset) as *mut i32, lanes, *row);
                }
                kp += n;
            }
        }
    }

    /// Packs `cols` (≤ NR) columns from `c0` of a row-major B, pairs `kp0..kp0+kpn`: two rows
    /// converted by one `vcvtne2ps2bf16`, interleaved into (k, k+1) pairs by one permute.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512 F, BW and BF16; `panel` holds `kpn` rows of NR packed pairs.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_b_panel_row_major(b: &MatrixView, kp0: usize, kpn: usize, c0: usize, cols: usize, panel: &mut [u32]) {
        // SAFETY: the caller upholds this function's contract (its `# Safety` section).
        unsafe {
            let mut idx = [0u16; 32];
            for i in 0..16 {
                idx[2 * i] = i as u16;
                idx[2 * i + 1] = (i + 16) as u16;
            }
            let interleave = _mm512_loadu_si512(idx.as_ptr() as *const __m512i);
            let zero = _mm512_setzero_ps();
            for kp in 0..kpn {
                let k = 2 * (kp0 + kp);
                let row0 = b.data.as_ptr().add(k * b.row_stride + c0);
                let has_second = k + 1 < b.rows;
                let row1 = b.data.as_ptr().add(if has_second { (k + 1) * b.row_stride + c0 } else { 0 });
                for g in 0..cols.div_ceil(16) {
                    let first = g * 16;
                    let mask: __mmask16 = if cols - first >= 16 { 0xFFFF } else { (1u16 << (cols - first)) - 1 };
                    let lo = _mm512_maskz_loadu_ps(mask, row0.add(first));
                    let hi = if has_second { _mm512_maskz_loadu_ps(mask, row1.add(first)) } else { zero };
                    let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                    let pairs = _mm512_permutexvar_epi16(interleave, both);
                    _mm512_storeu_si512(panel.as_mut_ptr().add(kp * NR + first) as *mut __m512i, pairs);
                }
            }
        }
    }
}

/// `a · b` for 2-D f32 tensors on the CPU, bf16 inputs and f32 accumulation, with backward
/// (the gradients are bf16 products too).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.apply_op2(b, MatmulBf16)
}

struct MatmulBf16;

impl CustomOp2 for MatmulBf16 {
    fn name(&self) -> &'static str {
        "moodmirror-matmul-bf16"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(d1), CpuStorage::F32(d2)) = (s1, s2) else {
            candle_core::bail!("{}: only f32 is supported", self.name());
        };
        let a = MatrixView::from_layout(d1, l1, self.name())?;
        let b = MatrixView::from_layout(d2, l2, self.name())?;
        // Not zeroed first: a zeroing pass was 5 % of a training step.
        let out = matmul_new(&a, &b)?;
        Ok((CpuStorage::F32(out), Shape::from((a.rows, b.cols))))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(matmul(grad, &b.t()?)?), Some(matmul(&a.t()?, grad)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    fn random(rows: usize, cols: usize, seed: u64) -> Tensor {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let v: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    /// Σ_k bf16(a)·bf16(b) in f64: what the kernel computes, up to f32 rounding of the sums.
    fn reference(a: &Tensor, b: &Tensor) -> Vec<f32> {
        let round = |t: &Tensor| -> Vec<Vec<f64>> {
            t.to_vec2::<f32>().unwrap().iter().map(|r| r.iter().map(|&x| bf16_value(bf16_bits(x)) as f64).collect()).collect()
        };
        let (a, b) = (round(a), round(b));
        let (m, k, n) = (a.len(), b.len(), b[0].len());
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i][p] * b[p][j]).sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        assert_eq!(bf16_value(bf16_bits(1.0 + 1.0 / 256.0)), 1.0, "a tie rounds to the even 1.0");
        assert_eq!(bf16_value(bf16_bits(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0, "a tie rounds up to even");
        assert_eq!(bf16_value(bf16_bits(-2.5)), -2.5);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_value(bf16_bits(f32::INFINITY)), f32::INFINITY);
    }

    #[test]
    fn products_match_the_bf16_reference_for_odd_shapes_and_strides() {
        if !available() {
            eprintln!("skipped: no AVX-512 BF16 on this CPU");
            return;
        }
        // Tails in every dimension, odd k, the column-split and the k-split paths, and
        // transposed (strided) operands as the backward pass passes them.
        for (i, &(m, k, n)) in
            [(1, 1, 1), (7, 9, 65), (32, 9, 1000), (13, 301, 70), (64, 2000, 9), (6, 4096, 64), (130, 257, 600)].iter().enumerate()
        {
            let a = random(m, k, 2 * i as u64);
            let b = random(k, n, 2 * i as u64 + 1);
            let expected = reference(&a, &b);
            let cases = [
                ("plain", matmul(&a, &b).unwrap()),
                ("a transposed", matmul(&a.t().unwrap().contiguous().unwrap().t().unwrap(), &b).unwrap()),
                ("b transposed", matmul(&a, &b.t().unwrap().contiguous().unwrap().t().unwrap()).unwrap()),
            ];
            for (name, got) in cases {
                let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for (g, e) in got.iter().zip(&expected) {
                    let tolerance = 1e-5 * (k as f32).sqrt() * 4.0 + 1e-5 * e.abs();
                    assert!((g - e).abs() <= tolerance, "({m},{k},{n}) {name}: {g} vs {e}");
                }
            }
        }
    }

    #[test]
    fn views_outside_their_data_and_mismatched_shapes_are_errors() {
        let data = [1f32; 12];
        let a = MatrixView { data: &data, rows: 3, cols: 4, row_stride: 4, col_stride: 1 };
        let too_long = MatrixView { rows: 4, ..a };
        let mut out = [0f32; 9];
        let err = matmul_into(&a, &too_long, &mut out).unwrap_err().to_string();
        assert!(err.contains("exceeds its 12 values") || err.contains("(4, 4)"), "{err}");
        let b = MatrixView { data: &data, rows: 4, cols: 3, row_stride: 3, col_stride: 1 };
        let err = matmul_into(&a, &b, &mut [0f32; 8]).unwrap_err().to_string();
        assert!(err.contains("into 8 values"), "{err}");
        let overflow = MatrixView { row_stride: usize::MAX, ..b };
        assert!(matmul_into(&a, &overflow, &mut out).is_err());
        if available() {
            matmul_into(&a, &b, &mut out).unwrap();
            assert_eq!(out, [4.0; 9]);
        }
    }

    #[test]
    fn gradients_match_candles_matmul_within_bf16_error() {
        if !available() {
            eprintln!("skipped: no AVX-512 BF16 on this CPU");
            return;
        }
        let (a, b) = (Var::from_tensor(&random(37, 150, 7)).unwrap(), Var::from_tensor(&random(150, 90, 8)).unwrap());
        let upstream = random(37, 90, 9);
        let ours = (matmul(a.as_tensor(), b.as_tensor()).unwrap() * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let theirs = (a.as_tensor().matmul(b.as_tensor()).unwrap() * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        for var in [&a, &b] {
            let (g, r) = (ours.get(var).unwrap(), theirs.get(var).unwrap());
            let err = (g - r).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let scale = r.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            // bf16 keeps 8 bits: relative error of a few 2^-8 at most.
            assert!(err <= 0.02 * scale, "gradient error {err} vs scale {scale}");
            assert!(err > 0.0, "the bf16 path should differ from f32 at all");
        }
    }
}
