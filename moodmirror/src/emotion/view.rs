//! The views of a 48x48 face the network is shown: the element's one view and the several that
//! test-time augmentation averages.

use super::{InputContract, Preprocess};

const SIZE: usize = InputContract::SIZE;
const PIXELS: usize = InputContract::PIXELS;

/// Bilinear sample of a 48x48 image with edge replication (as Keras' `fill_mode="nearest"`).
pub fn bilinear_clamped(src: &[u8], x: f32, y: f32) -> f32 {
    let max = (SIZE - 1) as f32;
    let x = x.clamp(0.0, max);
    let y = y.clamp(0.0, max);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(SIZE - 1), (y0 + 1).min(SIZE - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |xx: usize, yy: usize| src[yy * SIZE + xx] as f32;
    let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
    let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// One way of showing a 48x48 image to the network at inference: the `scale` part of the frame
/// around its centre moved by (`dx`, `dy`) source pixels, resampled to 48x48, optionally mirrored.
/// The element uses one view (the model's `view_scale`); test-time augmentation averages several.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    pub mirror: bool,
    pub scale: f32,
    pub dx: f32,
    pub dy: f32,
    /// The model's crop preprocessing, applied after resampling.
    pub preprocess: Preprocess,
}

impl View {
    /// The central `scale` of the frame, not shifted, without preprocessing.
    pub fn centred(scale: f32, mirror: bool) -> Self {
        Self { mirror, scale, dx: 0.0, dy: 0.0, preprocess: Preprocess::None }
    }

    /// The same view followed by `preprocess`.
    pub fn preprocessed(self, preprocess: Preprocess) -> Self {
        Self { preprocess, ..self }
    }
}

/// Normalised, un-augmented pixels of one 48x48 image as the network sees it at inference:
/// the central `view_scale` of the frame resampled to 48x48 (bilinear, as in training; see
/// [`InputContract::view_scale`]), optionally mirrored (TTA).
pub fn normalize_into(src: &[u8], dst: &mut [f32], mirror: bool, view_scale: f32) {
    normalize_view_into(src, dst, View::centred(view_scale, mirror));
}

/// [`normalize_into`] for any [`View`]; the whole unshifted frame is a plain copy. The view's
/// [`Preprocess`] follows, as in training (`Augment::apply` in moodmirror-train).
pub fn normalize_view_into(src: &[u8], dst: &mut [f32], view: View) {
    resample_view_into(src, dst, view);
    view.preprocess.apply(&mut dst[..PIXELS]);
}

fn resample_view_into(src: &[u8], dst: &mut [f32], view: View) {
    if view.scale == 1.0 && view.dx == 0.0 && view.dy == 0.0 {
        for y in 0..SIZE {
            for x in 0..SIZE {
                let sx = if view.mirror { SIZE - 1 - x } else { x };
                dst[y * SIZE + x] = InputContract::normalize(src[y * SIZE + sx]);
            }
        }
        return;
    }
    let c = (SIZE as f32 - 1.0) / 2.0;
    let flip = if view.mirror { -1.0 } else { 1.0 };
    for y in 0..SIZE {
        let sy = view.scale * (y as f32 - c) + c + view.dy;
        for x in 0..SIZE {
            let sx = view.scale * (x as f32 - c) * flip + c + view.dx;
            dst[y * SIZE + x] = (bilinear_clamped(src, sx, sy) / 255.0 - InputContract::MEAN) / InputContract::STD;
        }
    }
}

#[cfg(test)]
mod view_tests {
    use super::*;

    fn ramp() -> Vec<u8> {
        (0..SIZE * SIZE).map(|i| ((i % SIZE) * 5) as u8).collect()
    }

    #[test]
    fn whole_view_is_the_plain_normalised_image_and_mirror_flips_it() {
        let img = ramp();
        let (mut plain, mut mirrored) = (vec![0f32; SIZE * SIZE], vec![0f32; SIZE * SIZE]);
        normalize_into(&img, &mut plain, false, 1.0);
        normalize_into(&img, &mut mirrored, true, 1.0);
        for (i, &p) in img.iter().enumerate() {
            assert_eq!(plain[i], InputContract::normalize(p));
            assert_eq!(mirrored[i], InputContract::normalize(img[i - i % SIZE + SIZE - 1 - i % SIZE]));
        }
    }

    #[test]
    fn a_smaller_view_magnifies_the_centre() {
        // A horizontal ramp of 5 grey levels per pixel: at view scale s, neighbouring output
        // pixels are s source pixels apart, and the centre stays where it is.
        let img = ramp();
        let mut view = vec![0f32; SIZE * SIZE];
        let s = 44.0 / 48.0;
        normalize_into(&img, &mut view, false, s);
        let grey = |v: f32| (v * InputContract::STD + InputContract::MEAN) * 255.0;
        let row = &view[20 * SIZE..21 * SIZE];
        for x in 1..SIZE - 1 {
            assert!((grey(row[x + 1]) - grey(row[x]) - 5.0 * s).abs() < 1e-3, "x {x}");
        }
        let c = (SIZE as f32 - 1.0) / 2.0;
        assert!((grey(row[24]) - 5.0 * (s * (24.0 - c) + c)).abs() < 1e-3);
    }

    #[test]
    fn a_shifted_view_samples_the_frame_moved_by_dx_dy() {
        let img: Vec<u8> = (0..SIZE * SIZE).map(|i| ((i % SIZE) * 3 + (i / SIZE) * 2) as u8).collect();
        let mut shifted = vec![0f32; SIZE * SIZE];
        normalize_view_into(&img, &mut shifted, View { dx: 2.0, dy: -1.0, ..View::centred(1.0, false) });
        // Inside the frame, output (x, y) is source (x + 2, y - 1); past the edge it replicates.
        for y in 1..SIZE {
            for x in 0..SIZE - 2 {
                assert_eq!(shifted[y * SIZE + x], InputContract::normalize(img[(y - 1) * SIZE + x + 2]), "({x}, {y})");
            }
        }
        assert_eq!(shifted[SIZE - 1], InputContract::normalize(img[SIZE - 1]));
    }
}
