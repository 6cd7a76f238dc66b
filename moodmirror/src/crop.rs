//! Where the emotion CNN's 48x48 input is cut from a face: the crop's geometry (eye-aligned with
//! landmarks, else the box) and the sampling.

use crate::detect::{Face, GrayImage};
use crate::emotion::InputContract;

/// Where FER2013's 48x48 frame sits relative to the eyes, in units of the eye distance `d`:
/// a square of side `side * d` whose centre is `below * d` under the eyes' midpoint, turned so
/// that the eyes are level. Fitted on FER2013 `val` by `moodmirror fit-crop`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EyeCrop {
    pub side: f32,
    pub below: f32,
}

/// Geometry of the classifier's crop. With landmarks (MTCNN) the crop is aligned on the eyes
/// (`eyes`); otherwise it is a square of side `box side * (1 + 2 * margin)` centred on the box
/// and moved down by `offset_y` box heights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropGeometry {
    pub margin: f32,
    pub offset_y: f32,
    pub eyes: Option<EyeCrop>,
}

impl Default for CropGeometry {
    /// Box crops: FER2013 faces fill their frame about as tightly as a Haar box. Eye crops:
    /// medians measured by `moodmirror fit-crop` on FER2013 val (see weights/README.md).
    fn default() -> Self {
        Self { margin: 0.0, offset_y: 0.0, eyes: Some(EyeCrop { side: FER_SIDE_PER_EYE_DISTANCE, below: FER_CENTRE_BELOW_EYES }) }
    }
}

/// Fitted on all 3,589 FER2013 val images (`moodmirror fit-crop --limit 0`, medians): the FER
/// frame is this many eye distances wide…
pub const FER_SIDE_PER_EYE_DISTANCE: f32 = 2.69;
/// …and its centre lies this many eye distances below the eyes' midpoint.
pub const FER_CENTRE_BELOW_EYES: f32 = 0.30;

/// The square region a crop samples: centre, side and rotation (radians).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropRegion {
    pub cx: f32,
    pub cy: f32,
    pub side: f32,
    pub angle: f32,
}

impl CropRegion {
    pub fn of(face: &Face, geometry: CropGeometry) -> Self {
        if let (Some(l), Some(eyes)) = (face.landmarks, geometry.eyes) {
            let (dx, dy) = (l[1][0] - l[0][0], l[1][1] - l[0][1]);
            let d = (dx * dx + dy * dy).sqrt();
            if d > 1.0 {
                let angle = dy.atan2(dx);
                let (sin, cos) = angle.sin_cos();
                let (ex, ey) = ((l[0][0] + l[1][0]) / 2.0, (l[0][1] + l[1][1]) / 2.0);
                // "Below" along the face's own vertical axis.
                return Self { cx: ex - sin * eyes.below * d, cy: ey + cos * eyes.below * d, side: eyes.side * d, angle };
            }
        }
        Self {
            cx: face.x as f32 + face.width as f32 / 2.0,
            cy: face.y as f32 + face.height as f32 / 2.0 + geometry.offset_y * face.height as f32,
            side: face.width.max(face.height) as f32 * (1.0 + 2.0 * geometry.margin),
            angle: 0.0,
        }
    }
}

/// Cuts the crop of `face` out of `image` as 48x48 grayscale (bilinear, edges replicated),
/// upright, and maps luma `black..=white` to 0..=255 (video-range YUV is 16..=235).
pub fn crop_face(image: &GrayImage, face: &Face, geometry: CropGeometry, black: u8, white: u8, out: &mut [u8]) {
    crop_region(image, CropRegion::of(face, geometry), black, white, out);
}

pub fn crop_region(image: &GrayImage, region: CropRegion, black: u8, white: u8, out: &mut [u8]) {
    let s = InputContract::SIZE;
    let step = region.side / s as f32;
    let (sin, cos) = region.angle.sin_cos();
    let (maxx, maxy) = ((image.width - 1) as f32, (image.height - 1) as f32);
    let gain = 255.0 / (white.saturating_sub(black)).max(1) as f32;
    for (y, row) in out.chunks_exact_mut(s).take(s).enumerate() {
        let ly = (y as f32 + 0.5) * step - region.side / 2.0;
        for (x, px) in row.iter_mut().enumerate() {
            let lx = (x as f32 + 0.5) * step - region.side / 2.0;
            let fx = (region.cx + cos * lx - sin * ly - 0.5).clamp(0.0, maxx);
            let fy = (region.cy + sin * lx + cos * ly - 0.5).clamp(0.0, maxy);
            let (ix, iy) = (fx as usize, fy as usize);
            let (ix1, iy1) = ((ix + 1).min(image.width - 1), (iy + 1).min(image.height - 1));
            let (wx, wy) = (fx - ix as f32, fy - iy as f32);
            let top = image.at(ix, iy) as f32 * (1.0 - wx) + image.at(ix1, iy) as f32 * wx;
            let bottom = image.at(ix, iy1) as f32 * (1.0 - wx) + image.at(ix1, iy1) as f32 * wx;
            let v = (top * (1.0 - wy) + bottom * wy - black as f32) * gain;
            *px = v.clamp(0.0, 255.0).round() as u8;
        }
    }
}
