//! Drawing face boxes and emotion labels onto video frames of every supported format: packed
//! RGB variants, GRAY8, and planar/semi-planar YUV (I420, NV12), clipped at the frame edges.

use std::fmt::Write;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};

use crate::face::FaceResult;
use crate::image::PixelLayout;

/// DejaVu Sans Bold (Bitstream Vera license; see assets/README.md), embedded so labels render
/// with no system fonts.
pub static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans-Bold.ttf");

/// One colour per emotion, in FER2013 class order (RGB).
pub const EMOTION_COLORS: [(u8, u8, u8); 7] = [
    (230, 40, 40),   // angry: red
    (120, 170, 30),  // disgust: olive green
    (150, 60, 200),  // fear: purple
    (255, 200, 0),   // happy: yellow
    (40, 110, 230),  // sad: blue
    (255, 120, 20),  // surprise: orange
    (200, 200, 200), // neutral: light grey
];

/// Mutable view of a frame's planes.
pub struct Canvas<'a> {
    pub planes: [&'a mut [u8]; 3],
    pub strides: [usize; 3],
    pub width: usize,
    pub height: usize,
    pub layout: PixelLayout,
    /// YUV with luma 16..=235 (video range) rather than 0..=255.
    pub video_range: bool,
}

fn rgb_to_yuv((r, g, b): (u8, u8, u8), video_range: bool) -> (f32, f32, f32) {
    let (r, g, b) = (r as f32, g as f32, b as f32);
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    let u = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
    let v = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
    if video_range {
        (16.0 + y * 219.0 / 255.0, 128.0 + (u - 128.0) * 224.0 / 255.0, 128.0 + (v - 128.0) * 224.0 / 255.0)
    } else {
        (y, u, v)
    }
}

#[inline]
fn mix(dst: &mut u8, src: f32, alpha: f32) {
    *dst = (*dst as f32 + (src - *dst as f32) * alpha).round().clamp(0.0, 255.0) as u8;
}

impl Canvas<'_> {
    /// Blends `color` over pixel (x, y) with opacity `alpha`; outside the frame does nothing.
    pub fn blend(&mut self, x: i32, y: i32, color: (u8, u8, u8), alpha: f32) {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height || alpha <= 0.0 {
            return;
        }
        let (x, y) = (x as usize, y as usize);
        let alpha = alpha.min(1.0);
        match self.layout {
            PixelLayout::Packed { r, g, b, bytes_per_pixel } => {
                let p = y * self.strides[0] + x * bytes_per_pixel;
                let px = &mut self.planes[0][p..p + bytes_per_pixel];
                mix(&mut px[r], color.0 as f32, alpha);
                mix(&mut px[g], color.1 as f32, alpha);
                mix(&mut px[b], color.2 as f32, alpha);
            }
            PixelLayout::Gray => {
                let (luma, _, _) = rgb_to_yuv(color, false);
                mix(&mut self.planes[0][y * self.strides[0] + x], luma, alpha);
            }
            PixelLayout::I420 | PixelLayout::Nv12 => {
                let (luma, u, v) = rgb_to_yuv(color, self.video_range);
                mix(&mut self.planes[0][y * self.strides[0] + x], luma, alpha);
                // Chroma is shared by a 2x2 block: blend it once, from the block's top-left pixel.
                if x % 2 == 0 && y % 2 == 0 {
                    let (cx, cy) = (x / 2, y / 2);
                    if self.layout == PixelLayout::I420 {
                        mix(&mut self.planes[1][cy * self.strides[1] + cx], u, alpha);
                        mix(&mut self.planes[2][cy * self.strides[2] + cx], v, alpha);
                    } else {
                        let p = cy * self.strides[1] + 2 * cx;
                        mix(&mut self.planes[1][p], u, alpha);
                        mix(&mut self.planes[1][p + 1], v, alpha);
                    }
                }
            }
            PixelLayout::Yuv422 { y: luma_byte, u: u_byte, v: v_byte } => {
                let (luma, u, v) = rgb_to_yuv(color, self.video_range);
                let row = &mut self.planes[0][y * self.strides[0]..];
                mix(&mut row[PixelLayout::luma_422(x, luma_byte)], luma, alpha);
                // Chroma is shared by a pair: blend it once, from the pair's left pixel.
                if x % 2 == 0 {
                    mix(&mut row[x / 2 * 4 + u_byte], u, alpha);
                    mix(&mut row[x / 2 * 4 + v_byte], v, alpha);
                }
            }
        }
    }

    pub fn fill_rect(&mut self, x: i32, y: i32, w: i32, h: i32, color: (u8, u8, u8), alpha: f32) {
        let x0 = x.max(0);
        let y0 = y.max(0);
        let x1 = (x + w).min(self.width as i32);
        let y1 = (y + h).min(self.height as i32);
        if x1 <= x0 || y1 <= y0 {
            return;
        }
        if alpha >= 1.0 {
            self.fill_opaque((x0 as usize, y0 as usize, x1 as usize, y1 as usize), color);
            return;
        }
        for yy in y0..y1 {
            for xx in x0..x1 {
                self.blend(xx, yy, color, alpha);
            }
        }
    }

    /// An opaque fill of `[x0, x1) x [y0, y1)` (inside the frame): the colour converted once
    /// and written row by row (box outlines); the same pixels as blending at full opacity.
    fn fill_opaque(&mut self, (x0, y0, x1, y1): (usize, usize, usize, usize), color: (u8, u8, u8)) {
        let byte = |v: f32| v.round().clamp(0.0, 255.0) as u8;
        match self.layout {
            PixelLayout::Packed { r, g, b, bytes_per_pixel } => {
                for yy in y0..y1 {
                    let row = &mut self.planes[0][yy * self.strides[0]..];
                    for px in row[x0 * bytes_per_pixel..x1 * bytes_per_pixel].chunks_exact_mut(bytes_per_pixel) {
                        (px[r], px[g], px[b]) = color;
                    }
                }
            }
            PixelLayout::Gray | PixelLayout::I420 | PixelLayout::Nv12 => {
                let video_range = self.video_range && self.layout != PixelLayout::Gray;
                let (luma, u, v) = rgb_to_yuv(color, video_range);
                let (luma, u, v) = (byte(luma), byte(u), byte(v));
                for yy in y0..y1 {
                    self.planes[0][yy * self.strides[0] + x0..yy * self.strides[0] + x1].fill(luma);
                }
                if self.layout == PixelLayout::Gray {
                    return;
                }
                // Chroma is shared by a 2x2 block: set from blocks whose top-left pixel is inside.
                for cy in (y0.div_ceil(2)..y1.div_ceil(2)).filter(|cy| 2 * cy < y1) {
                    for cx in (x0.div_ceil(2)..x1.div_ceil(2)).filter(|cx| 2 * cx < x1) {
                        if self.layout == PixelLayout::I420 {
                            self.planes[1][cy * self.strides[1] + cx] = u;
                            self.planes[2][cy * self.strides[2] + cx] = v;
                        } else {
                            let p = cy * self.strides[1] + 2 * cx;
                            self.planes[1][p] = u;
                            self.planes[1][p + 1] = v;
                        }
                    }
                }
            }
            PixelLayout::Yuv422 { y: luma_byte, u: u_byte, v: v_byte } => {
                let (luma, u, v) = rgb_to_yuv(color, self.video_range);
                let (luma, u, v) = (byte(luma), byte(u), byte(v));
                for yy in y0..y1 {
                    let row = &mut self.planes[0][yy * self.strides[0]..];
                    for x in x0..x1 {
                        row[PixelLayout::luma_422(x, luma_byte)] = luma;
                    }
                    // Chroma is shared by a pair: set from pairs whose left pixel is inside.
                    for pair in x0.div_ceil(2)..x1.div_ceil(2) {
                        row[pair * 4 + u_byte] = u;
                        row[pair * 4 + v_byte] = v;
                    }
                }
            }
        }
    }

    /// A rectangle outline `thickness` pixels wide, drawn inside the box.
    pub fn stroke_rect(&mut self, x: i32, y: i32, w: i32, h: i32, thickness: i32, color: (u8, u8, u8)) {
        let t = thickness.min(w / 2).min(h / 2).max(1);
        self.fill_rect(x, y, w, t, color, 1.0);
        self.fill_rect(x, y + h - t, w, t, color, 1.0);
        self.fill_rect(x, y + t, t, h - 2 * t, color, 1.0);
        self.fill_rect(x + w - t, y + t, t, h - 2 * t, color, 1.0);
    }
}

/// A label rendered once: per pixel the colour and opacity of its background box with the
/// text over it, so drawing it again is one blend per pixel (no glyph rasterisation).
struct LabelSprite {
    width: usize,
    height: usize,
    /// RGB and alpha (0..=255) per pixel, row-major.
    pixels: Vec<[u8; 4]>,
    /// The same colours as Y, U, V: full range, and video range (16..=235).
    yuv: [Vec<[u8; 3]>; 2],
}

impl LabelSprite {
    fn new(width: usize, height: usize, pixels: Vec<[u8; 4]>) -> Self {
        let to_yuv = |video_range: bool| {
            pixels
                .iter()
                .map(|&[r, g, b, _]| {
                    let (y, u, v) = rgb_to_yuv((r, g, b), video_range);
                    [y, u, v].map(|c| c.round().clamp(0.0, 255.0) as u8)
                })
                .collect()
        };
        let yuv = [to_yuv(false), to_yuv(true)];
        Self { width, height, pixels, yuv }
    }
}

/// `d` blended toward `s` by `a`/255, rounded, in integers.
#[inline]
fn blend_u8(d: u8, s: u8, a: u32) -> u8 {
    ((d as u32 * (255 - a) + s as u32 * a + 127) / 255) as u8
}

/// Labels are `emotion percent%` at one size per frame size: at most 7 x 101 per size.
const MAX_CACHED_LABELS: usize = 4096;
const LABEL_BOX_ALPHA: f32 = 0.85;

/// Draws boxes and labels; holds the font and the label sprites made so far.
pub struct Painter {
    font: FontRef<'static>,
    text: String,
    /// Keyed by (emotion, percent, font px): made on first use, reused on every later frame.
    labels: std::collections::HashMap<(usize, u32, u32), LabelSprite>,
}

impl Painter {
    pub fn new() -> crate::Result<Self> {
        let font = FontRef::try_from_slice(FONT_BYTES).map_err(|e| crate::Error::Font(e.to_string()))?;
        Ok(Self { font, text: String::with_capacity(32), labels: std::collections::HashMap::new() })
    }

    /// Width in pixels of `text` at `scale`.
    fn text_width(&self, text: &str, scale: PxScale) -> f32 {
        let font = self.font.as_scaled(scale);
        let mut width = 0.0;
        let mut previous = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = previous {
                width += font.kern(p, id);
            }
            width += font.h_advance(id);
            previous = Some(id);
        }
        width
    }

    /// Renders `text` on a box of `color` into a sprite (text in black or white, whichever
    /// reads better on the colour).
    fn render_label(&self, text: &str, font_px: f32, color: (u8, u8, u8)) -> LabelSprite {
        let scale = PxScale::from(font_px);
        let pad = (font_px * 0.2).round();
        let width = (self.text_width(text, scale) + 2.0 * pad).ceil().max(1.0) as usize;
        let height = (font_px * 1.2).ceil().max(1.0) as usize;
        let mut coverage = vec![0f32; width * height];
        let scaled = self.font.as_scaled(scale);
        let baseline = font_px * 0.05 + scaled.ascent();
        let mut pen = pad;
        let mut previous = None;
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = previous {
                pen += scaled.kern(p, id);
            }
            let glyph = id.with_scale_and_position(scale, ab_glyph::point(pen, baseline));
            pen += scaled.h_advance(id);
            previous = Some(id);
            if let Some(outline) = self.font.outline_glyph(glyph) {
                let bounds = outline.px_bounds();
                outline.draw(|gx, gy, c| {
                    let (x, y) = (bounds.min.x as i32 + gx as i32, bounds.min.y as i32 + gy as i32);
                    if x >= 0 && y >= 0 && (x as usize) < width && (y as usize) < height {
                        let cell = &mut coverage[y as usize * width + x as usize];
                        *cell = (*cell + c).min(1.0);
                    }
                });
            }
        }
        let luminance = 0.299 * color.0 as f32 + 0.587 * color.1 as f32 + 0.114 * color.2 as f32;
        let ink = if luminance > 140.0 { (0f32, 0f32, 0f32) } else { (255f32, 255f32, 255f32) };
        // Box at LABEL_BOX_ALPHA, then ink at coverage c over it: one colour and opacity.
        let pixels = coverage
            .iter()
            .map(|&c| {
                let alpha = 1.0 - (1.0 - LABEL_BOX_ALPHA) * (1.0 - c);
                let part = |box_value: u8, ink_value: f32| {
                    ((LABEL_BOX_ALPHA * (1.0 - c) * box_value as f32 + c * ink_value) / alpha).round().clamp(0.0, 255.0) as u8
                };
                [part(color.0, ink.0), part(color.1, ink.1), part(color.2, ink.2), (alpha * 255.0).round() as u8]
            })
            .collect();
        LabelSprite::new(width, height, pixels)
    }

    /// Draws every face's box and a label such as `happy 87%`, sized to the frame.
    pub fn draw(&mut self, canvas: &mut Canvas, results: &[FaceResult]) {
        let short_side = canvas.width.min(canvas.height) as f32;
        // ~16 px text on 360p, ~64 px on 4K; boxes 2..8 px thick.
        let font_px = (short_side / 22.0).clamp(12.0, 96.0).round();
        let thickness = (short_side / 180.0).round().clamp(2.0, 8.0) as i32;
        for result in results {
            let f = result.face;
            let color = EMOTION_COLORS[result.emotion];
            canvas.stroke_rect(f.x, f.y, f.width, f.height, thickness, color);
            let percent = (result.confidence * 100.0).round().clamp(0.0, 100.0) as u32;
            let key = (result.emotion, percent, font_px as u32);
            if !self.labels.contains_key(&key) {
                if self.labels.len() >= MAX_CACHED_LABELS {
                    self.labels.clear();
                }
                self.text.clear();
                let _ = write!(self.text, "{} {percent}%", result.label());
                let sprite = self.render_label(&self.text, font_px, color);
                self.labels.insert(key, sprite);
            }
            let Some(sprite) = self.labels.get(&key) else { continue };
            // Above the box when it fits, else just inside its top edge.
            let mut ly = f.y - sprite.height as i32;
            if ly < 0 {
                ly = f.y + thickness;
            }
            let lx = f.x.clamp(0, (canvas.width as i32 - sprite.width as i32).max(0));
            canvas.blend_sprite(lx, ly, sprite);
        }
    }
}

impl Canvas<'_> {
    /// Blends a label sprite with its top-left corner at (x, y), clipped at the frame edges;
    /// packed RGB rows in integer arithmetic, other layouts pixel by pixel.
    fn blend_sprite(&mut self, x: i32, y: i32, sprite: &LabelSprite) {
        let x0 = x.max(0);
        let x1 = (x + sprite.width as i32).min(self.width as i32);
        let y0 = y.max(0);
        let y1 = (y + sprite.height as i32).min(self.height as i32);
        if x1 <= x0 || y1 <= y0 {
            return;
        }
        for yy in y0..y1 {
            let row = &sprite.pixels[(yy - y) as usize * sprite.width..][..sprite.width];
            match self.layout {
                PixelLayout::Packed { r, g, b, bytes_per_pixel } => {
                    let line = &mut self.planes[0][yy as usize * self.strides[0]..];
                    for xx in x0..x1 {
                        let [sr, sg, sb, a] = row[(xx - x) as usize];
                        let a = a as u32;
                        let px = &mut line[xx as usize * bytes_per_pixel..][..bytes_per_pixel];
                        px[r] = blend_u8(px[r], sr, a);
                        px[g] = blend_u8(px[g], sg, a);
                        px[b] = blend_u8(px[b], sb, a);
                    }
                }
                PixelLayout::Gray | PixelLayout::I420 | PixelLayout::Nv12 => {
                    // The sprite's own Y, U, V: integer blends, chroma once per 2x2 block.
                    let yuv = &sprite.yuv[usize::from(self.video_range && self.layout != PixelLayout::Gray)]
                        [(yy - y) as usize * sprite.width..][..sprite.width];
                    let luma = &mut self.planes[0][yy as usize * self.strides[0]..];
                    for xx in x0..x1 {
                        let i = (xx - x) as usize;
                        luma[xx as usize] = blend_u8(luma[xx as usize], yuv[i][0], row[i][3] as u32);
                    }
                    if self.layout == PixelLayout::Gray || yy % 2 != 0 {
                        continue;
                    }
                    let cy = yy as usize / 2;
                    for xx in (x0 + x0 % 2..x1).step_by(2) {
                        let i = (xx - x) as usize;
                        let (a, cx) = (row[i][3] as u32, xx as usize / 2);
                        if self.layout == PixelLayout::I420 {
                            let u = &mut self.planes[1][cy * self.strides[1] + cx];
                            *u = blend_u8(*u, yuv[i][1], a);
                            let v = &mut self.planes[2][cy * self.strides[2] + cx];
                            *v = blend_u8(*v, yuv[i][2], a);
                        } else {
                            let p = cy * self.strides[1] + 2 * cx;
                            self.planes[1][p] = blend_u8(self.planes[1][p], yuv[i][1], a);
                            self.planes[1][p + 1] = blend_u8(self.planes[1][p + 1], yuv[i][2], a);
                        }
                    }
                }
                PixelLayout::Yuv422 { y: luma_byte, u: u_byte, v: v_byte } => {
                    // As above; chroma once per pair, from its left pixel.
                    let yuv = &sprite.yuv[usize::from(self.video_range)][(yy - y) as usize * sprite.width..][..sprite.width];
                    let line = &mut self.planes[0][yy as usize * self.strides[0]..];
                    for xx in x0..x1 {
                        let (i, px) = ((xx - x) as usize, xx as usize);
                        let a = row[i][3] as u32;
                        let l = PixelLayout::luma_422(px, luma_byte);
                        line[l] = blend_u8(line[l], yuv[i][0], a);
                        if px % 2 == 0 {
                            let (cu, cv) = (px / 2 * 4 + u_byte, px / 2 * 4 + v_byte);
                            line[cu] = blend_u8(line[cu], yuv[i][1], a);
                            line[cv] = blend_u8(line[cv], yuv[i][2], a);
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
    use crate::detect::Face;

    fn result(x: i32, y: i32, w: i32, h: i32) -> FaceResult {
        FaceResult {
            face: Face::new(x, y, w, h, 5.0),
            probabilities: [0.0, 0.0, 0.0, 0.87, 0.0, 0.0, 0.13],
            raw_probabilities: [0.0, 0.0, 0.0, 0.87, 0.0, 0.0, 0.13],
            emotion: 3,
            confidence: 0.87,
            track_id: None,
            carried: false,
        }
    }

    #[test]
    fn draws_box_in_emotion_colour_and_clips_at_edges() {
        let (w, h) = (64usize, 48usize);
        let mut data = vec![0u8; w * h * 3];
        let mut painter = Painter::new().expect("font");
        {
            let mut canvas = Canvas {
                planes: [&mut data, &mut [], &mut []],
                strides: [w * 3, 0, 0],
                width: w,
                height: h,
                layout: PixelLayout::Packed { r: 0, g: 1, b: 2, bytes_per_pixel: 3 },
                video_range: false,
            };
            // Partly outside the frame on every side: must not panic.
            painter.draw(&mut canvas, &[result(10, 20, 30, 20), result(-20, -20, 200, 200)]);
        }
        // The box edge at (10, 39) (bottom-left, away from the label) is happy-yellow.
        let p = (39 * w + 10) * 3;
        assert_eq!(&data[p..p + 3], &[255, 200, 0]);
    }

    /// 16 faces at 720p, the labels drawn once before (as on every frame after the first).
    fn draw_sixteen_at_720p(painter: &mut Painter, data: &mut [u8]) -> std::time::Duration {
        let (w, h) = (1280usize, 720usize);
        let faces: Vec<FaceResult> = (0..16).map(|i| result(40 + (i % 8) * 150, 120 + (i / 8) * 300, 110, 130)).collect();
        let mut canvas = Canvas {
            planes: [data, &mut [], &mut []],
            strides: [w * 3, 0, 0],
            width: w,
            height: h,
            layout: PixelLayout::Packed { r: 0, g: 1, b: 2, bytes_per_pixel: 3 },
            video_range: false,
        };
        let started = std::time::Instant::now();
        painter.draw(&mut canvas, &faces);
        started.elapsed()
    }

    #[test]
    fn labels_are_rendered_once_and_reused() {
        let mut painter = Painter::new().expect("font");
        let mut first = vec![0u8; 1280 * 720 * 3];
        let cold = draw_sixteen_at_720p(&mut painter, &mut first);
        assert_eq!(painter.labels.len(), 1, "one text and size: one sprite");
        let mut second = vec![0u8; 1280 * 720 * 3];
        draw_sixteen_at_720p(&mut painter, &mut second);
        assert!(first == second, "a reused sprite draws the same pixels");
        let warm = (0..20).map(|_| draw_sixteen_at_720p(&mut painter, &mut second)).min().expect("runs");
        eprintln!("16 labels at 720p: first frame {cold:?}, later frames {warm:?}");
        // The label's text is there: the sprite has both box-coloured and ink pixels.
        let sprite = painter.labels.values().next().expect("sprite");
        assert!(sprite.pixels.iter().any(|p| p[..3] == [0, 0, 0]) && sprite.pixels.iter().any(|p| p[..3] == [255, 200, 0]));
        // Generous bound for a loaded CI machine; the README quotes the measured figure.
        assert!(warm < std::time::Duration::from_millis(5), "{warm:?}");
    }

    #[test]
    fn draws_on_nv12_and_i420_planes() {
        let (w, h) = (32usize, 32usize);
        for layout in [PixelLayout::Nv12, PixelLayout::I420] {
            let mut y = vec![16u8; w * h];
            let mut u = vec![128u8; w * h / 2];
            let mut v = vec![128u8; w * h / 4];
            {
                let mut canvas = Canvas {
                    planes: [&mut y, &mut u, &mut v],
                    strides: [w, if layout == PixelLayout::Nv12 { w } else { w / 2 }, w / 2],
                    width: w,
                    height: h,
                    layout,
                    video_range: true,
                };
                canvas.fill_rect(0, 0, 4, 4, (255, 200, 0), 1.0);
            }
            let (luma, cb, _) = rgb_to_yuv((255, 200, 0), true);
            assert_eq!(y[0], luma.round() as u8);
            assert_eq!(u[0], cb.round() as u8);
            assert_eq!(y[5 * w + 5], 16, "outside the rectangle untouched");
        }
    }

    #[test]
    fn opaque_fills_set_the_pixels_full_opacity_blending_sets() {
        let (w, h) = (21usize, 13usize);
        let layouts = [
            PixelLayout::Packed { r: 2, g: 1, b: 0, bytes_per_pixel: 4 },
            PixelLayout::Gray,
            PixelLayout::I420,
            PixelLayout::Nv12,
            PixelLayout::Yuv422 { y: 0, u: 1, v: 3 },
            PixelLayout::Yuv422 { y: 1, u: 0, v: 2 },
        ];
        for layout in layouts {
            let planes = || -> [Vec<u8>; 3] {
                let n = w * h * 4;
                [
                    (0..n).map(|i| (i * 7 % 251) as u8).collect(),
                    (0..n).map(|i| (i * 3 % 253) as u8).collect(),
                    (0..n).map(|i| (i * 5 % 241) as u8).collect(),
                ]
            };
            let strides = match layout {
                PixelLayout::Packed { .. } => [w * 4, 0, 0],
                PixelLayout::Nv12 => [w, w + 1, 0],
                PixelLayout::Yuv422 { .. } => [w.div_ceil(2) * 4 + 4, 0, 0],
                _ => [w, w.div_ceil(2), w.div_ceil(2)],
            };
            let (mut fast, mut slow) = (planes(), planes());
            for (planes, opaque) in [(&mut fast, true), (&mut slow, false)] {
                let [p0, p1, p2] = planes;
                let mut canvas = Canvas { planes: [p0, p1, p2], strides, width: w, height: h, layout, video_range: true };
                // Odd corners and sizes, and a rectangle reaching past the frame.
                for (x, y, rw, rh) in [(3, 1, 7, 5), (-2, 8, 6, 9), (15, 0, 10, 3)] {
                    if opaque {
                        canvas.fill_rect(x, y, rw, rh, (40, 200, 90), 1.0);
                    } else {
                        for yy in y..y + rh {
                            for xx in x..x + rw {
                                canvas.blend(xx, yy, (40, 200, 90), 1.0);
                            }
                        }
                    }
                }
            }
            assert_eq!(fast, slow, "{layout:?}");
        }
    }
}
