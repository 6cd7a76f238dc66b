//! Training augmentation: random geometric and photometric changes of each 48x48 face and what
//! cameras do to one (gamma, blur, sensor noise, JPEG), and mixup across a batch.

use anyhow::Result;
use rand::Rng;

use moodmirror::emotion::{bilinear_clamped, InputContract, Preprocess, NUM_CLASSES};

const SIZE: usize = InputContract::SIZE;
const PIXELS: usize = InputContract::PIXELS;

/// Random geometric and photometric changes: the seed's Keras ImageDataGenerator plus crops,
/// and what cameras do to a face (exposure, contrast, gamma, blur, sensor noise, JPEG), then
/// the model's [`Preprocess`] (as at inference).
#[derive(Debug, Clone, Copy)]
pub struct Augment {
    pub max_rotation_deg: f32,
    pub max_shift: f32,
    pub max_zoom: f32,
    pub max_brightness: f32,
    pub max_contrast: f32,
    pub flip: bool,
    /// Side of a random crop (e.g. 44 of 48) scaled back to 48.
    pub crop: usize,
    /// Share of images framed looser than the data (faces from other sources: more background,
    /// hair, shoulders): instead of the crop and zoom, the sampled window is 1 ..= 1 + `zoom_out`
    /// frames wide, its border the edge pixels. 0 reproduces the earlier models' augmentation.
    pub zoom_out_probability: f32,
    pub max_zoom_out: f32,
    /// Camera-like degradations; off reproduces the older models' augmentation.
    pub camera: CameraAugment,
    pub preprocess: Preprocess,
}

/// Photometric changes that cover cameras, each drawn per image with its own probability.
#[derive(Debug, Clone, Copy)]
pub struct CameraAugment {
    pub enabled: bool,
    /// Gamma drawn log-uniformly in `1/max_gamma ..= max_gamma`.
    pub max_gamma: f32,
    /// Probability and largest sigma (pixels) of a Gaussian blur (defocus, motion, upscaled crops).
    pub blur_probability: f32,
    pub max_blur_sigma: f32,
    /// Probability and largest standard deviation (0..1 units) of Gaussian sensor noise.
    pub noise_probability: f32,
    pub max_noise: f32,
    /// Probability and quality range of a JPEG round trip (compression artefacts).
    pub jpeg_probability: f32,
    pub jpeg_quality: (u8, u8),
    /// Probability of a low-resolution face (a small face in a large frame): down to 16..=32 px
    /// (area average) and back up to 48 (bilinear).
    pub low_res_probability: f32,
    /// Probability of a sharpened face (a large face downscaled to 48 px is sharper than FER's
    /// upscaled ones): unsharp mask of amount 0.5..=1.5 at sigma 1.
    pub sharpen_probability: f32,
}

impl Default for CameraAugment {
    fn default() -> Self {
        Self {
            enabled: true,
            max_gamma: 1.5,
            blur_probability: 0.25,
            max_blur_sigma: 1.2,
            noise_probability: 0.3,
            max_noise: 0.04,
            jpeg_probability: 0.3,
            jpeg_quality: (25, 90),
            low_res_probability: 0.0,
            sharpen_probability: 0.0,
        }
    }
}

impl CameraAugment {
    pub fn off() -> Self {
        Self { enabled: false, ..Self::default() }
    }
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            max_rotation_deg: 10.0,
            max_shift: 0.1,
            max_zoom: 0.1,
            max_brightness: 0.2,
            max_contrast: 0.2,
            flip: true,
            crop: 44,
            zoom_out_probability: 0.0,
            max_zoom_out: 0.3,
            camera: CameraAugment::off(),
            preprocess: Preprocess::None,
        }
    }
}

impl Augment {
    /// Writes the augmented, normalised, preprocessed version of `src` (48x48 u8) into `dst`
    /// (48x48 f32).
    pub fn apply(&self, src: &[u8], dst: &mut [f32], rng: &mut impl Rng) {
        let c = (SIZE as f32 - 1.0) / 2.0;
        let angle = rng.random_range(-self.max_rotation_deg..=self.max_rotation_deg).to_radians();
        // Random crop of side `crop` placed anywhere, then zoom: the sampled window's scale.
        let crop_scale = self.crop as f32 / SIZE as f32;
        let mut zoom = crop_scale * rng.random_range(1.0 - self.max_zoom..=1.0 + self.max_zoom);
        let mut slack = (1.0 - crop_scale) * SIZE as f32 / 2.0;
        if self.zoom_out_probability > 0.0 && rng.random::<f32>() < self.zoom_out_probability {
            zoom = rng.random_range(1.0..=1.0 + self.max_zoom_out.max(0.0));
            slack = 0.0;
        }
        let tx = rng.random_range(-self.max_shift..=self.max_shift) * SIZE as f32 + rng.random_range(-slack..=slack);
        let ty = rng.random_range(-self.max_shift..=self.max_shift) * SIZE as f32 + rng.random_range(-slack..=slack);
        let flip = if self.flip && rng.random_bool(0.5) { -1.0 } else { 1.0 };
        let brightness = rng.random_range(-self.max_brightness..=self.max_brightness);
        let contrast = 1.0 + rng.random_range(-self.max_contrast..=self.max_contrast);
        let (sin, cos) = angle.sin_cos();
        let dst = &mut dst[..PIXELS];
        for y in 0..SIZE {
            for x in 0..SIZE {
                // Output pixel → source pixel: inverse of (flip, rotate, zoom, shift).
                let u = (x as f32 - c) * flip;
                let v = y as f32 - c;
                let sx = zoom * (cos * u - sin * v) + c + tx;
                let sy = zoom * (sin * u + cos * v) + c + ty;
                let p = bilinear_clamped(src, sx, sy) / 255.0;
                dst[y * SIZE + x] = ((p - 0.5) * contrast + 0.5 + brightness).clamp(0.0, 1.0);
            }
        }
        if self.camera.enabled {
            self.camera.apply(dst, rng);
        }
        for v in dst.iter_mut() {
            *v = (*v - InputContract::MEAN) / InputContract::STD;
        }
        self.preprocess.apply(dst);
    }
}

impl CameraAugment {
    /// Degrades one 48x48 image of 0..1 values in place.
    fn apply(&self, img: &mut [f32], rng: &mut impl Rng) {
        let gamma = self.max_gamma.ln();
        let gamma = rng.random_range(-gamma..=gamma).exp();
        for v in img.iter_mut() {
            *v = v.powf(gamma);
        }
        if rng.random::<f32>() < self.blur_probability {
            gaussian_blur(img, rng.random_range(0.4..=self.max_blur_sigma));
        }
        if self.low_res_probability > 0.0 && rng.random::<f32>() < self.low_res_probability {
            low_resolution(img, rng.random_range(16..=32));
        }
        if self.sharpen_probability > 0.0 && rng.random::<f32>() < self.sharpen_probability {
            let mut blurred = [0f32; PIXELS];
            blurred.copy_from_slice(&img[..PIXELS]);
            gaussian_blur(&mut blurred, 1.0);
            let amount = rng.random_range(0.5..=1.5);
            for (v, b) in img.iter_mut().zip(blurred) {
                *v = (*v + amount * (*v - b)).clamp(0.0, 1.0);
            }
        }
        if rng.random::<f32>() < self.noise_probability {
            let sigma = rng.random_range(0.0..=self.max_noise);
            for v in img.iter_mut() {
                let z: f32 = rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng);
                *v = (*v + sigma * z).clamp(0.0, 1.0);
            }
        }
        if rng.random::<f32>() < self.jpeg_probability {
            let (lo, hi) = self.jpeg_quality;
            jpeg_round_trip(img, rng.random_range(lo..=hi.max(lo)));
        }
    }
}

/// The 48x48 image as a `side`-px one shows it: area-averaged down, bilinear back up.
fn low_resolution(img: &mut [f32], side: usize) {
    let mut small = vec![0f32; side * side];
    let scale = SIZE as f32 / side as f32;
    for (i, v) in small.iter_mut().enumerate() {
        let (sx, sy) = ((i % side) as f32 * scale, (i / side) as f32 * scale);
        let (x0, x1) = (sx.floor() as usize, ((sx + scale).ceil() as usize).min(SIZE));
        let (y0, y1) = (sy.floor() as usize, ((sy + scale).ceil() as usize).min(SIZE));
        let (mut sum, mut n) = (0.0, 0.0);
        for y in y0..y1 {
            for x in x0..x1 {
                sum += img[y * SIZE + x];
                n += 1.0;
            }
        }
        *v = sum / f32::max(n, 1.0);
    }
    for y in 0..SIZE {
        for x in 0..SIZE {
            let fx = ((x as f32 + 0.5) / scale - 0.5).clamp(0.0, (side - 1) as f32);
            let fy = ((y as f32 + 0.5) / scale - 0.5).clamp(0.0, (side - 1) as f32);
            let (ix, iy) = (fx as usize, fy as usize);
            let (ix1, iy1) = ((ix + 1).min(side - 1), (iy + 1).min(side - 1));
            let (wx, wy) = (fx - ix as f32, fy - iy as f32);
            let top = small[iy * side + ix] * (1.0 - wx) + small[iy * side + ix1] * wx;
            let bottom = small[iy1 * side + ix] * (1.0 - wx) + small[iy1 * side + ix1] * wx;
            img[y * SIZE + x] = top * (1.0 - wy) + bottom * wy;
        }
    }
}

/// Separable Gaussian blur of a 48x48 image (edges replicated).
fn gaussian_blur(img: &mut [f32], sigma: f32) {
    let radius = (2.5 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let norm: f32 = kernel.iter().sum();
    let mut tmp = [0f32; PIXELS];
    let at = |i: isize| i.clamp(0, SIZE as isize - 1) as usize;
    for y in 0..SIZE {
        for x in 0..SIZE {
            let sum: f32 = kernel.iter().enumerate().map(|(k, w)| w * img[y * SIZE + at(x as isize + k as isize - radius)]).sum();
            tmp[y * SIZE + x] = sum / norm;
        }
    }
    for y in 0..SIZE {
        for x in 0..SIZE {
            let sum: f32 = kernel.iter().enumerate().map(|(k, w)| w * tmp[at(y as isize + k as isize - radius) * SIZE + x]).sum();
            img[y * SIZE + x] = sum / norm;
        }
    }
}

/// Encodes the image as a JPEG of `quality` and decodes it again (blocking and ringing).
fn jpeg_round_trip(img: &mut [f32], quality: u8) {
    let bytes: Vec<u8> = img.iter().map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8).collect();
    let mut encoded = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, quality);
    if image::ImageEncoder::write_image(encoder, &bytes, SIZE as u32, SIZE as u32, image::ExtendedColorType::L8).is_err() {
        return; // an encoder failure only skips this degradation
    }
    if let Ok(decoded) = image::load_from_memory_with_format(&encoded, image::ImageFormat::Jpeg) {
        for (v, p) in img.iter_mut().zip(decoded.into_luma8().into_raw()) {
            *v = p as f32 / 255.0;
        }
    }
}

/// Mixup within a batch: sample `i` becomes `lambda[i]·image i + (1 − lambda[i])·image
/// partner[i]` (a random pairing of the batch), its target the same mix of both targets.
#[derive(Debug, Clone, Default)]
pub struct BatchMix {
    pub partner: Vec<usize>,
    pub lambda: Vec<f32>,
}

impl BatchMix {
    /// A pairing of `batch` samples with `lambda ~ Beta(alpha, alpha)` (`alpha > 0`; small
    /// values keep most samples close to one of the two images).
    pub fn sample(batch: usize, alpha: f64, rng: &mut impl Rng) -> Result<Self> {
        use rand::seq::SliceRandom;
        use rand_distr::Distribution;
        let beta = rand_distr::Beta::new(alpha, alpha).map_err(|e| anyhow::anyhow!("mixup Beta({alpha}, {alpha}): {e}"))?;
        let mut partner: Vec<usize> = (0..batch).collect();
        partner.shuffle(rng);
        let lambda = (0..batch).map(|_| beta.sample(rng) as f32).collect();
        Ok(Self { partner, lambda })
    }

    /// Mixes the images of `src` (`batch` x `pixels` values) into `dst`.
    pub fn mix_images(&self, src: &[f32], dst: &mut [f32], pixels: usize) {
        for (i, out) in dst.chunks_exact_mut(pixels).enumerate().take(self.lambda.len()) {
            let (l, j) = (self.lambda[i], self.partner[i]);
            let (a, b) = (&src[i * pixels..(i + 1) * pixels], &src[j * pixels..(j + 1) * pixels]);
            for ((o, &va), &vb) in out.iter_mut().zip(a).zip(b) {
                *o = l * va + (1.0 - l) * vb;
            }
        }
    }

    /// Mixes per-sample probability rows (e.g. teacher targets computed on the unmixed images).
    pub fn mix_rows(&self, rows: &mut [[f32; NUM_CLASSES]]) {
        let original = rows.to_vec();
        for (i, row) in rows.iter_mut().enumerate().take(self.lambda.len()) {
            let (l, j) = (self.lambda[i], self.partner[i]);
            for ((o, &a), &b) in row.iter_mut().zip(&original[i]).zip(&original[j]) {
                *o = l * a + (1.0 - l) * b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn batch_mix_blends_images_and_rows_with_the_same_lambda() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mix = BatchMix::sample(4, 0.4, &mut rng).expect("mixup pairing");
        let mut seen = mix.partner.clone();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2, 3], "the partners are a permutation of the batch");
        assert!(mix.lambda.iter().all(|l| (0.0..=1.0).contains(l)));
        // Image i holds the value i everywhere; row i is the one-hot of class i.
        let images: Vec<f32> = (0..4).flat_map(|i| [i as f32; 3]).collect();
        let mut mixed = vec![0f32; 12];
        mix.mix_images(&images, &mut mixed, 3);
        let mut rows = [[0f32; NUM_CLASSES]; 4];
        for (i, r) in rows.iter_mut().enumerate() {
            r[i] = 1.0;
        }
        mix.mix_rows(&mut rows);
        for i in 0..4 {
            let (l, j) = (mix.lambda[i], mix.partner[i]);
            let want = l * i as f32 + (1.0 - l) * j as f32;
            assert!(mixed[i * 3..(i + 1) * 3].iter().all(|v| (v - want).abs() < 1e-6));
            assert!((rows[i].iter().sum::<f32>() - 1.0).abs() < 1e-6);
            if i != j {
                assert!((rows[i][i] - l).abs() < 1e-6 && (rows[i][j] - (1.0 - l)).abs() < 1e-6);
            }
        }
        assert!(BatchMix::sample(4, -1.0, &mut rng).is_err());
    }

    #[test]
    fn zoom_out_shrinks_the_face_and_low_resolution_removes_fine_detail() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        // A bright 24-px square in the middle of a dark frame.
        let src: Vec<u8> =
            (0..PIXELS).map(|i| if (12..36).contains(&(i % SIZE)) && (12..36).contains(&(i / SIZE)) { 255 } else { 0 }).collect();
        let still = Augment {
            max_rotation_deg: 0.0,
            max_shift: 0.0,
            max_zoom: 0.0,
            max_brightness: 0.0,
            max_contrast: 0.0,
            flip: false,
            crop: SIZE,
            ..Augment::default()
        };
        let bright = |a: &Augment, rng: &mut rand::rngs::StdRng| {
            let mut dst = vec![0f32; PIXELS];
            a.apply(&src, &mut dst, rng);
            dst.iter().filter(|v| **v > 0.0).count()
        };
        let as_is = bright(&still, &mut rng);
        assert!((570..=580).contains(&as_is), "{as_is}");
        let looser = Augment { zoom_out_probability: 1.0, ..still };
        let smaller: Vec<usize> = (0..20).map(|_| bright(&looser, &mut rng)).collect();
        assert!(smaller.iter().all(|n| *n <= as_is) && smaller.iter().any(|n| *n < 450), "{smaller:?}");

        let mut flat = vec![0.3f32; PIXELS];
        low_resolution(&mut flat, 20);
        assert!(flat.iter().all(|v| (v - 0.3).abs() < 1e-5));
        let mut checker: Vec<f32> = (0..PIXELS).map(|i| ((i % SIZE + i / SIZE) % 2) as f32).collect();
        low_resolution(&mut checker, 16);
        assert!(checker.iter().all(|v| (v - 0.5).abs() < 0.2), "one-pixel detail averages out");
    }
}
