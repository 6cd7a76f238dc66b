//! FER2013 data: class-folder layout (`DIR/<class>/*.jpg|png`) or the Kaggle `fer2013.csv`
//! (`FILE.csv:Training|PublicTest|PrivateTest`), and the training-time augmentation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::Rng;
use rayon::prelude::*;

use crate::emotion::{InputContract, CLASS_NAMES, NUM_CLASSES};

const SIZE: usize = InputContract::SIZE;
const PIXELS: usize = InputContract::PIXELS;

/// Images as 48x48 u8 grayscale, row-major, one after another, with their labels.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    /// Images that could not be read (skipped) and ones that were not 48x48 (resized).
    pub skipped: usize,
    pub resized: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }

    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// `DIR` in class-folder layout, or `FILE.csv[:Usage]`.
    pub fn load(spec: &str) -> Result<Self> {
        let (path, usage) = match spec.rsplit_once(':') {
            Some((p, u)) if p.to_ascii_lowercase().ends_with(".csv") => (p, Some(u)),
            _ => (spec, None),
        };
        let path = Path::new(path);
        let data = if path.is_dir() {
            Self::load_folders(path)?
        } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            Self::load_csv(path, usage)?
        } else {
            bail!(
                "'{spec}' is neither a directory of class folders nor a fer2013.csv[:Usage] file"
            );
        };
        if data.skipped + data.resized > 0 {
            eprintln!(
                "warning: {spec}: {} unreadable images/rows skipped, {} images not {SIZE}x{SIZE} resized",
                data.skipped, data.resized
            );
        }
        if data.is_empty() {
            bail!("'{spec}' holds no usable images");
        }
        Ok(data)
    }

    fn load_folders(dir: &Path) -> Result<Self> {
        let mut files: Vec<(PathBuf, u8)> = Vec::new();
        let mut found = [false; NUM_CLASSES];
        let mut unknown = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_lowercase();
            let Some(label) = CLASS_NAMES.iter().position(|c| *c == name) else {
                unknown.push(name);
                continue;
            };
            found[label] = true;
            let mut class_files: Vec<PathBuf> = std::fs::read_dir(entry.path())?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|e| {
                        let e = e.to_string_lossy().to_lowercase();
                        e == "jpg" || e == "jpeg" || e == "png"
                    })
                })
                .collect();
            class_files.sort();
            files.extend(class_files.into_iter().map(|p| (p, label as u8)));
        }
        let missing: Vec<&str> = CLASS_NAMES
            .iter()
            .zip(found)
            .filter(|(_, f)| !f)
            .map(|(c, _)| *c)
            .collect();
        if !missing.is_empty() {
            bail!(
                "{}: missing class folders {missing:?}{}; expected one folder per class: {}",
                dir.display(),
                if unknown.is_empty() {
                    String::new()
                } else {
                    format!(" (unknown folders: {unknown:?})")
                },
                CLASS_NAMES.join(", ")
            );
        }
        files.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        let decoded: Vec<Option<(Vec<u8>, bool)>> =
            files.par_iter().map(|(p, _)| read_gray48(p)).collect();
        let mut data = Dataset::default();
        for ((_, label), image) in files.iter().zip(decoded) {
            match image {
                Some((pixels, resized)) => {
                    data.images.extend_from_slice(&pixels);
                    data.labels.push(*label);
                    data.resized += resized as usize;
                }
                None => data.skipped += 1,
            }
        }
        Ok(data)
    }

    fn load_csv(path: &Path, usage: Option<&str>) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default().to_ascii_lowercase();
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        let col = |name: &str| columns.iter().position(|c| *c == name);
        let (Some(emotion_col), Some(pixels_col)) = (col("emotion"), col("pixels")) else {
            bail!("{}: expected a header with columns emotion,pixels[,Usage]", path.display());
        };
        let usage_col = col("usage");
        if usage.is_some() && usage_col.is_none() {
            bail!("{}: no Usage column to select {:?} from", path.display(), usage);
        }
        let mut data = Dataset::default();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if let (Some(wanted), Some(c)) = (usage, usage_col) {
                if !fields.get(c).is_some_and(|u| u.eq_ignore_ascii_case(wanted)) {
                    continue;
                }
            }
            let label = fields.get(emotion_col).and_then(|e| e.parse::<u8>().ok());
            let pixels: Option<Vec<u8>> = fields.get(pixels_col).and_then(|p| {
                p.split_ascii_whitespace().map(|v| v.parse::<u8>().ok()).collect()
            });
            match (label, pixels) {
                (Some(label), Some(pixels)) if (label as usize) < NUM_CLASSES && pixels.len() == PIXELS => {
                    data.images.extend_from_slice(&pixels);
                    data.labels.push(label);
                }
                _ => data.skipped += 1,
            }
        }
        Ok(data)
    }
}

/// Decodes an image as 48x48 grayscale; `None` when unreadable; `true` when it was resized.
fn read_gray48(path: &Path) -> Option<(Vec<u8>, bool)> {
    let img = image::open(path).ok()?.into_luma8();
    if img.width() as usize == SIZE && img.height() as usize == SIZE {
        return Some((img.into_raw(), false));
    }
    let resized = image::imageops::resize(&img, SIZE as u32, SIZE as u32, image::imageops::FilterType::Triangle);
    Some((resized.into_raw(), true))
}

/// Random geometric and photometric changes, as the seed's Keras ImageDataGenerator plus crops.
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
        }
    }
}

impl Augment {
    /// Writes the augmented, normalised version of `src` (48x48 u8) into `dst` (48x48 f32).
    pub fn apply(&self, src: &[u8], dst: &mut [f32], rng: &mut impl Rng) {
        let c = (SIZE as f32 - 1.0) / 2.0;
        let angle = rng.random_range(-self.max_rotation_deg..=self.max_rotation_deg).to_radians();
        // Random crop of side `crop` placed anywhere, then zoom: the sampled window's scale.
        let crop_scale = self.crop as f32 / SIZE as f32;
        let zoom = crop_scale * rng.random_range(1.0 - self.max_zoom..=1.0 + self.max_zoom);
        let slack = (1.0 - crop_scale) * SIZE as f32 / 2.0;
        let tx = rng.random_range(-self.max_shift..=self.max_shift) * SIZE as f32
            + rng.random_range(-slack..=slack);
        let ty = rng.random_range(-self.max_shift..=self.max_shift) * SIZE as f32
            + rng.random_range(-slack..=slack);
        let flip = if self.flip && rng.random_bool(0.5) { -1.0 } else { 1.0 };
        let brightness = rng.random_range(-self.max_brightness..=self.max_brightness);
        let contrast = 1.0 + rng.random_range(-self.max_contrast..=self.max_contrast);
        let (sin, cos) = angle.sin_cos();
        for y in 0..SIZE {
            for x in 0..SIZE {
                // Output pixel → source pixel: inverse of (flip, rotate, zoom, shift).
                let u = (x as f32 - c) * flip;
                let v = y as f32 - c;
                let sx = zoom * (cos * u - sin * v) + c + tx;
                let sy = zoom * (sin * u + cos * v) + c + ty;
                let p = bilinear_clamped(src, sx, sy) / 255.0;
                let p = ((p - 0.5) * contrast + 0.5 + brightness).clamp(0.0, 1.0);
                dst[y * SIZE + x] = (p - InputContract::MEAN) / InputContract::STD;
            }
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

/// Bilinear sample of a 48x48 image with edge replication (as Keras' `fill_mode="nearest"`).
fn bilinear_clamped(src: &[u8], x: f32, y: f32) -> f32 {
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
}

impl View {
    /// The central `scale` of the frame, not shifted.
    pub fn centred(scale: f32, mirror: bool) -> Self {
        Self { mirror, scale, dx: 0.0, dy: 0.0 }
    }
}

/// Normalised, un-augmented pixels of one 48x48 image as the network sees it at inference:
/// the central `view_scale` of the frame resampled to 48x48 (bilinear, as in training; see
/// [`InputContract::view_scale`]), optionally mirrored (TTA).
pub fn normalize_into(src: &[u8], dst: &mut [f32], mirror: bool, view_scale: f32) {
    normalize_view_into(src, dst, View::centred(view_scale, mirror));
}

/// [`normalize_into`] for any [`View`]; the whole unshifted frame is a plain copy.
pub fn normalize_view_into(src: &[u8], dst: &mut [f32], view: View) {
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
        normalize_view_into(&img, &mut shifted, View { mirror: false, scale: 1.0, dx: 2.0, dy: -1.0 });
        // Inside the frame, output (x, y) is source (x + 2, y - 1); past the edge it replicates.
        for y in 1..SIZE {
            for x in 0..SIZE - 2 {
                assert_eq!(shifted[y * SIZE + x], InputContract::normalize(img[(y - 1) * SIZE + x + 2]), "({x}, {y})");
            }
        }
        assert_eq!(shifted[SIZE - 1], InputContract::normalize(img[SIZE - 1]));
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
}
