//! Frames as plain planes, whatever their source: the luma the detector reads (in place for
//! GRAY8/I420/NV12, converted or copied once for RGB variants and packed 4:2:2), colour sampling for the detectors, and an
//! owned copy for the background detector.

use rayon::prelude::*;

/// A borrowed 8-bit grayscale (or luma) image with a row stride.
#[derive(Debug, Clone, Copy)]
pub struct GrayImage<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub stride: usize,
}

impl GrayImage<'_> {
    #[inline]
    pub fn at(&self, x: usize, y: usize) -> u8 {
        self.data[y * self.stride + x]
    }
}

/// An RGB image, 3 bytes per pixel, rows `stride` bytes apart.
#[derive(Debug, Clone, Copy)]
pub struct RgbImage<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub stride: usize,
}

/// A picture [`crate::detect::YuNet::track_in`] samples: its size and the mean colour of a pixel block.
pub trait BlockSampler: Sync {
    fn size(&self) -> (usize, usize);
    /// Mean R, G, B of `[xs, xe) x [ys, ye)`, a non-empty block inside the picture.
    fn block_rgb(&self, xs: usize, xe: usize, ys: usize, ye: usize) -> [f32; 3];
    /// [`Self::block_rgb`] of each column span of `columns` (left to right, inside the
    /// picture; an empty one gives zeros) over the rows `[ys, ye)` (non-empty), into `out`.
    fn row_of_blocks(&self, columns: &[(usize, usize)], ys: usize, ye: usize, out: &mut [[f32; 3]]) {
        blocks_one_by_one(self, columns, ys, ye, out);
    }
}

/// [`BlockSampler::row_of_blocks`] block by block.
fn blocks_one_by_one<S: BlockSampler + ?Sized>(sampler: &S, columns: &[(usize, usize)], ys: usize, ye: usize, out: &mut [[f32; 3]]) {
    for (o, &(xs, xe)) in out.iter_mut().zip(columns) {
        *o = if xe > xs { sampler.block_rgb(xs, xe, ys, ye) } else { [0.0; 3] };
    }
}

/// Widest output [`FramePlanes::rgb_resized_region`] keeps its column spans for (on the stack).
const RESIZE_MAX_COLUMNS: usize = 1024;

/// Widest run of columns [`FramePlanes`] sums in one pass of [`BlockSampler::row_of_blocks`].
const LINE_SUM_WIDTH: usize = 512;

impl BlockSampler for RgbImage<'_> {
    fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn block_rgb(&self, xs: usize, xe: usize, ys: usize, ye: usize) -> [f32; 3] {
        let mut acc = [0f32; 3];
        for y in ys..ye {
            for px in self.data[y * self.stride + xs * 3..y * self.stride + xe * 3].chunks_exact(3) {
                acc[0] += px[0] as f32;
                acc[1] += px[1] as f32;
                acc[2] += px[2] as f32;
            }
        }
        let n = ((ye - ys) * (xe - xs)) as f32;
        acc.map(|a| a / n)
    }
}

/// How pixels are laid out in the planes of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelLayout {
    /// One plane, `bytes_per_pixel` per pixel, R/G/B at these byte offsets.
    Packed {
        r: usize,
        g: usize,
        b: usize,
        bytes_per_pixel: usize,
    },
    Gray,
    /// Y plane, then U and V planes subsampled 2x2.
    I420,
    /// Y plane, then one interleaved UV plane subsampled 2x2.
    Nv12,
    /// One plane of 4:2:2 pairs (a camera's YUY2, UYVY or YVYU): 4 bytes per 2 pixels, their
    /// luma at byte `y` and `y + 2` of the pair, the shared U and V at bytes `u` and `v`.
    Yuv422 {
        y: usize,
        u: usize,
        v: usize,
    },
}

impl PixelLayout {
    /// Byte of pixel `x`'s luma in its row (packed 4:2:2: pair `x / 2`, its luma `y` or `y + 2`).
    #[inline]
    pub(crate) fn luma_422(x: usize, y: usize) -> usize {
        2 * x + y
    }
}

/// The grayscale image of a frame's first plane: borrowed for luma/gray formats, converted into
/// `scratch` (reused between frames) for packed RGB (BT.601 weights, as OpenCV's RGB2GRAY).
pub fn luma<'a>(
    plane0: &'a [u8],
    stride: usize,
    width: usize,
    height: usize,
    layout: PixelLayout,
    scratch: &'a mut Vec<u8>,
) -> GrayImage<'a> {
    match layout {
        PixelLayout::Gray | PixelLayout::I420 | PixelLayout::Nv12 => GrayImage { data: plane0, width, height, stride },
        PixelLayout::Yuv422 { y: luma_byte, .. } => {
            scratch.resize(width * height, 0);
            scratch.par_chunks_mut(width.max(1)).enumerate().for_each(|(y, row)| {
                // Every other byte from `luma_byte`: all pixels but the last, then the last
                // alone (its row may end at its luma byte).
                let src = &plane0[y * stride + luma_byte..];
                let Some((last, rest)) = row.split_last_mut() else { return };
                let n = rest.len();
                every_other_byte(&src[..2 * n], rest);
                *last = src[2 * n];
            });
            GrayImage { data: scratch, width, height, stride: width }
        }
        PixelLayout::Packed { r, g, b, bytes_per_pixel } => {
            scratch.resize(width * height, 0);
            scratch.par_chunks_mut(width.max(1)).enumerate().for_each(|(y, row)| {
                let src = &plane0[y * stride..];
                for (x, out) in row.iter_mut().enumerate() {
                    let p = &src[x * bytes_per_pixel..];
                    let v = 19_595 * p[r] as u32 + 38_470 * p[g] as u32 + 7_471 * p[b] as u32;
                    *out = ((v + 32_768) >> 16) as u8;
                }
            });
            GrayImage { data: scratch, width, height, stride: width }
        }
    }
}

/// `out[i] = src[2 * i]` (`src`: twice `out`'s length), the luma of a packed 4:2:2 row. Byte
/// by byte the compiler gathers (0.35 ms a 720p frame); SSE2, part of every x86-64, narrows 16
/// pixels at a time.
fn every_other_byte(src: &[u8], out: &mut [u8]) {
    let done = {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{__m128i, _mm_and_si128, _mm_loadu_si128, _mm_packus_epi16, _mm_set1_epi16, _mm_storeu_si128};
            let blocks = out.len() / 16;
            for (o, s) in out.chunks_exact_mut(16).zip(src.chunks_exact(32)) {
                // SAFETY: SSE2 is in every x86-64 CPU; the unaligned loads read the 32 bytes of
                // `s` and the store writes the 16 bytes of `o`, both whole chunks.
                unsafe {
                    let low_bytes = _mm_set1_epi16(0xff);
                    let a = _mm_and_si128(_mm_loadu_si128(s.as_ptr().cast::<__m128i>()), low_bytes);
                    let b = _mm_and_si128(_mm_loadu_si128(s.as_ptr().add(16).cast::<__m128i>()), low_bytes);
                    _mm_storeu_si128(o.as_mut_ptr().cast::<__m128i>(), _mm_packus_epi16(a, b));
                }
            }
            blocks * 16
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            0
        }
    };
    for (o, pair) in out[done..].iter_mut().zip(src[2 * done..].chunks_exact(2)) {
        *o = pair[0];
    }
}

/// Read-only view of a frame's planes, enough to sample colour from any supported layout.
#[derive(Debug, Clone, Copy)]
pub struct FramePlanes<'a> {
    pub planes: [&'a [u8]; 3],
    pub strides: [usize; 3],
    pub width: usize,
    pub height: usize,
    pub layout: PixelLayout,
    /// YUV with luma 16..=235.
    pub video_range: bool,
}

/// A copy of a frame's planes that outlives the buffer (a full detection's input, handed to
/// the worker thread); its vectors are reused from frame to frame.
#[derive(Debug, Default)]
pub struct OwnedFrame {
    planes: [Vec<u8>; 3],
    strides: [usize; 3],
    width: usize,
    height: usize,
    layout: Option<PixelLayout>,
    video_range: bool,
}

impl OwnedFrame {
    pub fn copy_from(&mut self, f: &FramePlanes) {
        for (dst, src) in self.planes.iter_mut().zip(f.planes) {
            dst.clear();
            dst.extend_from_slice(src);
        }
        self.strides = f.strides;
        (self.width, self.height) = (f.width, f.height);
        self.layout = Some(f.layout);
        self.video_range = f.video_range;
    }

    pub fn view(&self) -> FramePlanes<'_> {
        FramePlanes {
            planes: [&self.planes[0], &self.planes[1], &self.planes[2]],
            strides: self.strides,
            width: self.width,
            height: self.height,
            layout: self.layout.unwrap_or(PixelLayout::Gray),
            video_range: self.video_range,
        }
    }
}

/// YuNet's tracker samples its crops from the frame itself, in the frame's own format.
impl BlockSampler for FramePlanes<'_> {
    fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn block_rgb(&self, xs: usize, xe: usize, ys: usize, ye: usize) -> [f32; 3] {
        FramePlanes::block_rgb(self, xs, xe, ys, ye)
    }

    /// On luma layouts the rows are first summed column by column across the whole run (one
    /// vectorised pass over the pixels), then each block adds its columns: the same sums as
    /// block by block (integers, exact), at a fraction of the per-block overhead (a block of a
    /// 32-pixel track crop spans only 4 or 5 pixels a row).
    fn row_of_blocks(&self, columns: &[(usize, usize)], ys: usize, ye: usize, out: &mut [[f32; 3]]) {
        if matches!(self.layout, PixelLayout::Packed { .. }) {
            return blocks_one_by_one(self, columns, ys, ye, out);
        }
        let mut line = [0u32; LINE_SUM_WIDTH];
        // Packed 4:2:2: the luma is every other byte of the row (decided once, not per row).
        let packed_luma = match self.layout {
            PixelLayout::Yuv422 { y, .. } => Some(y),
            _ => None,
        };
        let n = columns.len().min(out.len());
        let mut i = 0;
        while i < n {
            // The longest run of columns from i that fits the line.
            let x0 = columns[i].0;
            let mut x1 = x0;
            let mut j = i;
            while j < n && columns[j].0 >= x0 && columns[j].1.max(x1) - x0 <= LINE_SUM_WIDTH {
                x1 = x1.max(columns[j].1);
                j += 1;
            }
            if j == i {
                // One block wider than the line.
                blocks_one_by_one(self, &columns[i..=i], ys, ye, &mut out[i..=i]);
                i += 1;
                continue;
            }
            let line = &mut line[..x1 - x0];
            for (k, y) in (ys..ye).enumerate() {
                if let Some(luma_byte) = packed_luma {
                    let row = &self.planes[0][y * self.strides[0]..];
                    let luma = (x0..x1).map(|x| row[PixelLayout::luma_422(x, luma_byte)] as u32);
                    if k == 0 {
                        line.iter_mut().zip(luma).for_each(|(l, p)| *l = p);
                    } else {
                        line.iter_mut().zip(luma).for_each(|(l, p)| *l += p);
                    }
                    continue;
                }
                let row = &self.planes[0][y * self.strides[0] + x0..][..x1 - x0];
                if k == 0 {
                    line.iter_mut().zip(row).for_each(|(l, &p)| *l = p as u32);
                } else {
                    line.iter_mut().zip(row).for_each(|(l, &p)| *l += p as u32);
                }
            }
            for k in i..j {
                let (xs, xe) = columns[k];
                out[k] = if xe > xs {
                    let sum: u32 = line[xs - x0..xe - x0].iter().sum();
                    self.luma_block_rgb(sum as f32 / ((ye - ys) * (xe - xs)) as f32, xs, xe, ys, ye)
                } else {
                    [0.0; 3]
                };
            }
            i = j;
        }
    }
}

impl FramePlanes<'_> {
    fn yuv_to_rgb(&self, luma: f32, u: f32, v: f32) -> [f32; 3] {
        let (l, u, v) = if self.video_range {
            ((luma - 16.0) * 255.0 / 219.0, (u - 128.0) * 255.0 / 224.0, (v - 128.0) * 255.0 / 224.0)
        } else {
            (luma, u - 128.0, v - 128.0)
        };
        [l + 1.402 * v, l - 0.344_136 * u - 0.714_136 * v, l + 1.772 * u]
    }

    /// Average colour of the source block `[xs, xe) x [ys, ye)`: averaged in the frame's own
    /// space (RGB, or Y with the block's chroma) and converted once.
    fn block_rgb(&self, xs: usize, xe: usize, ys: usize, ye: usize) -> [f32; 3] {
        let n = ((ye - ys) * (xe - xs)) as f32;
        match self.layout {
            PixelLayout::Packed { r, g, b, bytes_per_pixel } => {
                let mut acc = [0f32; 3];
                for y in ys..ye {
                    let row = &self.planes[0][y * self.strides[0]..];
                    for x in xs..xe {
                        let p = &row[x * bytes_per_pixel..];
                        acc[0] += p[r] as f32;
                        acc[1] += p[g] as f32;
                        acc[2] += p[b] as f32;
                    }
                }
                acc.map(|a| a / n)
            }
            PixelLayout::Gray | PixelLayout::I420 | PixelLayout::Nv12 => {
                let mut luma = 0f32;
                for y in ys..ye {
                    let row = &self.planes[0][y * self.strides[0]..];
                    luma += row[xs..xe].iter().map(|&v| v as f32).sum::<f32>();
                }
                self.luma_block_rgb(luma / n, xs, xe, ys, ye)
            }
            PixelLayout::Yuv422 { y: luma_byte, .. } => {
                let mut luma = 0u32;
                for y in ys..ye {
                    let row = &self.planes[0][y * self.strides[0]..];
                    luma += (xs..xe).map(|x| row[PixelLayout::luma_422(x, luma_byte)] as u32).sum::<u32>();
                }
                self.luma_block_rgb(luma as f32 / n, xs, xe, ys, ye)
            }
        }
    }

    /// The colour of a block of a luma layout whose mean luma is `luma`: with the chroma at
    /// its centre.
    fn luma_block_rgb(&self, luma: f32, xs: usize, xe: usize, ys: usize, ye: usize) -> [f32; 3] {
        let (cx, cy) = ((xs + xe) / 4, (ys + ye) / 4);
        match self.layout {
            PixelLayout::I420 => {
                self.yuv_to_rgb(luma, self.planes[1][cy * self.strides[1] + cx] as f32, self.planes[2][cy * self.strides[2] + cx] as f32)
            }
            PixelLayout::Nv12 => {
                let c = cy * self.strides[1] + cx * 2;
                self.yuv_to_rgb(luma, self.planes[1][c] as f32, self.planes[1][c + 1] as f32)
            }
            // The pair at the block's centre (4:2:2: chroma on every row).
            PixelLayout::Yuv422 { u, v, .. } => {
                let pair = &self.planes[0][(ys + ye) / 2 * self.strides[0] + cx * 4..];
                self.yuv_to_rgb(luma, pair[u] as f32, pair[v] as f32)
            }
            _ => [luma; 3],
        }
    }

    /// A grey picture as a frame (for the readers of frames, when only luma is at hand).
    pub fn gray<'a>(image: &GrayImage<'a>) -> FramePlanes<'a> {
        FramePlanes {
            planes: [image.data, &[], &[]],
            strides: [image.stride, 0, 0],
            width: image.width,
            height: image.height,
            layout: PixelLayout::Gray,
            video_range: false,
        }
    }

    /// The frame as packed RGB at `out_w` x `out_h` (area average when shrinking), into `out`
    /// (reused between frames).
    pub fn rgb_resized(&self, out_w: usize, out_h: usize, out: &mut Vec<u8>) {
        self.rgb_resized_region(out_w, out_h, (0, 0, out_w, out_h), out);
    }

    /// As [`Self::rgb_resized`], but fills only the output pixels `[x0, x1) x [y0, y1)`; the
    /// rest of `out` keeps whatever it held (for readers of a few regions, as tracking).
    pub fn rgb_resized_region(&self, out_w: usize, out_h: usize, (x0, y0, x1, y1): (usize, usize, usize, usize), out: &mut Vec<u8>) {
        out.resize(out_w * out_h * 3, 0);
        if self.width == 0 || self.height == 0 || out_w == 0 {
            return;
        }
        let (x1, y1) = (x1.min(out_w), y1.min(out_h));
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        let span = |ox: usize| {
            let xs = ox * self.width / out_w;
            (xs, (((ox + 1) * self.width).div_ceil(out_w)).clamp(xs + 1, self.width))
        };
        // The output columns' spans, once for all rows (on the stack: detection widths are at
        // most 640), then each row as runs of blocks ([`BlockSampler::row_of_blocks`]).
        let mut spans = [(0usize, 0usize); RESIZE_MAX_COLUMNS];
        let columns = x1 - x0;
        if columns <= RESIZE_MAX_COLUMNS {
            for (i, s) in spans[..columns].iter_mut().enumerate() {
                *s = span(x0 + i);
            }
        }
        let spans = &spans[..columns.min(RESIZE_MAX_COLUMNS)];
        out.par_chunks_mut(out_w * 3).enumerate().skip(y0).take(y1 - y0).for_each(|(oy, row)| {
            let ys = oy * self.height / out_h;
            let ye = (((oy + 1) * self.height).div_ceil(out_h)).clamp(ys + 1, self.height);
            // Same as round() then clamp for every value, without a libm call per channel.
            let put = |px: &mut [u8], rgb: [f32; 3]| px.iter_mut().zip(rgb).for_each(|(p, v)| *p = (v + 0.5).clamp(0.0, 255.0) as u8);
            if columns <= RESIZE_MAX_COLUMNS {
                let mut colors = [[0f32; 3]; 64];
                for (run, cols) in spans.chunks(64).enumerate() {
                    let colors = &mut colors[..cols.len()];
                    self.row_of_blocks(cols, ys, ye, colors);
                    let first = x0 + run * 64;
                    for (px, rgb) in row[first * 3..(first + cols.len()) * 3].chunks_exact_mut(3).zip(colors.iter()) {
                        put(px, *rgb);
                    }
                }
            } else {
                for ox in x0..x1 {
                    let (xs, xe) = span(ox);
                    put(&mut row[ox * 3..ox * 3 + 3], self.block_rgb(xs, xe, ys, ye));
                }
            }
        });
    }
}

/// Bilinear resize with pixel-centre alignment (as OpenCV's INTER_LINEAR).
pub fn resize_bilinear(src: &GrayImage, dst: &mut [u8], dw: usize, dh: usize) {
    let sx = src.width as f32 / dw as f32;
    let sy = src.height as f32 / dh as f32;
    for (y, row) in dst.chunks_exact_mut(dw).take(dh).enumerate() {
        let fy = ((y as f32 + 0.5) * sy - 0.5).max(0.0);
        let y0 = (fy as usize).min(src.height - 1);
        let y1 = (y0 + 1).min(src.height - 1);
        let wy = fy - y0 as f32;
        let r0 = &src.data[y0 * src.stride..][..src.width];
        let r1 = &src.data[y1 * src.stride..][..src.width];
        for (x, out) in row.iter_mut().enumerate() {
            let fx = ((x as f32 + 0.5) * sx - 0.5).max(0.0);
            let x0 = (fx as usize).min(src.width - 1);
            let x1 = (x0 + 1).min(src.width - 1);
            let wx = fx - x0 as f32;
            let top = r0[x0] as f32 * (1.0 - wx) + r0[x1] as f32 * wx;
            let bottom = r1[x0] as f32 * (1.0 - wx) + r1[x1] as f32 * wx;
            *out = (top * (1.0 - wy) + bottom * wy + 0.5) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizing_equals_block_by_block_sampling() {
        let (w, h) = (333usize, 201usize);
        let y: Vec<u8> = (0..w * h).map(|i| ((i * 7919) % 251) as u8).collect();
        let c: Vec<u8> = (0..w.div_ceil(2) * h.div_ceil(2) * 2).map(|i| ((i * 31) % 253) as u8).collect();
        let cw = w.div_ceil(2);
        let f = FramePlanes {
            planes: [&y, &c, &c[cw * h.div_ceil(2)..]],
            strides: [w, cw, cw],
            width: w,
            height: h,
            layout: PixelLayout::I420,
            video_range: false,
        };
        // Shrinking (blocks of 4x4 and so), enlarging (blocks of one pixel), and a region.
        for (ow, oh, region) in [(100, 60, (0, 0, 100, 60)), (500, 300, (0, 0, 500, 300)), (100, 60, (7, 5, 93, 40))] {
            let mut out = vec![9u8; ow * oh * 3];
            f.rgb_resized_region(ow, oh, region, &mut out);
            for oy in 0..oh {
                for ox in 0..ow {
                    let inside = (region.0..region.2).contains(&ox) && (region.1..region.3).contains(&oy);
                    let want = if inside {
                        let (xs, ys) = (ox * w / ow, oy * h / oh);
                        let xe = ((ox + 1) * w).div_ceil(ow).clamp(xs + 1, w);
                        let ye = ((oy + 1) * h).div_ceil(oh).clamp(ys + 1, h);
                        f.block_rgb(xs, xe, ys, ye).map(|v| (v + 0.5).clamp(0.0, 255.0) as u8)
                    } else {
                        [9; 3]
                    };
                    assert_eq!(out[(oy * ow + ox) * 3..][..3], want, "{ow}x{oh} at {ox},{oy}");
                }
            }
        }
    }

    #[test]
    fn packed_422_frames_read_as_the_same_picture_in_planes() {
        // One picture (odd width, padded rows) as I444-like planes and packed in the three
        // 4:2:2 orders: the same luma, and the same colours where chroma is shared by a pair.
        let (w, h) = (37usize, 9usize);
        let luma: Vec<u8> = (0..w * h).map(|i| (16 + (i * 7919) % 220) as u8).collect();
        let pairs = w.div_ceil(2);
        let (cu, cv): (Vec<u8>, Vec<u8>) = (0..pairs * h).map(|i| ((40 + i * 13 % 170) as u8, (60 + i * 29 % 150) as u8)).unzip();
        for (y_at, u_at, v_at) in [(0, 1, 3), (1, 0, 2), (0, 3, 1)] {
            let stride = pairs * 4 + 6;
            let mut packed = vec![0u8; stride * h];
            for row in 0..h {
                for x in 0..pairs * 2 {
                    packed[row * stride + PixelLayout::luma_422(x, y_at)] = luma[row * w + x.min(w - 1)];
                }
                for p in 0..pairs {
                    packed[row * stride + p * 4 + u_at] = cu[row * pairs + p];
                    packed[row * stride + p * 4 + v_at] = cv[row * pairs + p];
                }
            }
            let layout = PixelLayout::Yuv422 { y: y_at, u: u_at, v: v_at };
            let mut scratch = Vec::new();
            let gray = luma_of(&packed, stride, w, h, layout, &mut scratch);
            assert_eq!(gray, luma, "luma of {layout:?}");
            let f = FramePlanes { planes: [&packed, &[], &[]], strides: [stride, 0, 0], width: w, height: h, layout, video_range: true };
            for (x, row) in [(0, 0), (5, 3), (36, 8), (17, 4)] {
                let p = row * pairs + x / 2;
                let want = f.yuv_to_rgb(luma[row * w + x] as f32, cu[p] as f32, cv[p] as f32);
                assert_eq!(f.block_rgb(x, x + 1, row, row + 1), want, "{layout:?} pixel {x},{row}");
            }
        }
    }

    #[test]
    fn every_other_byte_at_every_length() {
        for n in [0, 1, 15, 16, 17, 33, 100] {
            let src: Vec<u8> = (0..2 * n).map(|i| (i * 37 % 256) as u8).collect();
            let mut out = vec![0u8; n];
            every_other_byte(&src, &mut out);
            assert_eq!(out, src.iter().step_by(2).copied().collect::<Vec<_>>(), "{n} pixels");
        }
    }

    /// [`luma`]'s picture as rows of `width` bytes.
    fn luma_of(plane: &[u8], stride: usize, width: usize, height: usize, layout: PixelLayout, scratch: &mut Vec<u8>) -> Vec<u8> {
        let g = luma(plane, stride, width, height, layout, scratch);
        (0..height).flat_map(|y| g.data[y * g.stride..][..width].to_vec()).collect()
    }

    #[test]
    fn a_row_of_blocks_equals_its_blocks_one_by_one() {
        let (w, h) = (1400usize, 40usize);
        let y: Vec<u8> = (0..w * h).map(|i| ((i * 7919) % 251) as u8).collect();
        let c: Vec<u8> = (0..w * h / 2).map(|i| ((i * 31) % 253) as u8).collect();
        let frame =
            |layout, planes: [&'static [u8]; 3], strides| FramePlanes { planes, strides, width: w, height: h, layout, video_range: true };
        let (y, c): (&'static [u8], &'static [u8]) = (Vec::leak(y), Vec::leak(c));
        let packed: &'static [u8] = Vec::leak((0..2 * w * h).map(|i| ((i * 7877) % 247) as u8).collect());
        let frames = [
            frame(PixelLayout::I420, [y, c, &c[w * h / 4..]], [w, w / 2, w / 2]),
            frame(PixelLayout::Nv12, [y, c, &[]], [w, w, 0]),
            frame(PixelLayout::Gray, [y, &[], &[]], [w, 0, 0]),
            frame(PixelLayout::Yuv422 { y: 1, u: 0, v: 2 }, [packed, &[], &[]], [2 * w, 0, 0]),
        ];
        // Empty spans at both ends, blocks of one to seven pixels, a run wider than one line
        // sum (600-pixel blocks) and spans that leave gaps.
        let mut columns = vec![(0, 0), (0, 0)];
        let mut x = 0;
        for width in (1..=7).cycle().take(60) {
            columns.push((x, x + width));
            x += width;
        }
        assert!(x + 1100 <= w);
        columns.extend([(x + 3, x + 603), (x + 603, x + 607), (x + 700, x + 1100), (w, w)]);
        for f in &frames {
            for (ys, ye) in [(0, 1), (3, 8), (10, 40)] {
                let mut row = vec![[0f32; 3]; columns.len()];
                f.row_of_blocks(&columns, ys, ye, &mut row);
                for (&(xs, xe), got) in columns.iter().zip(&row) {
                    let want = if xe > xs { f.block_rgb(xs, xe, ys, ye) } else { [0.0; 3] };
                    assert_eq!(*got, want, "{:?} block {xs}..{xe} x {ys}..{ye}", f.layout);
                }
            }
        }
    }
}
