//! `moodmirror fit-crop`: measures where FER2013's 48x48 frame sits relative to the eyes MTCNN
//! finds, so that crops cut from camera frames look like the training crops, and checks the
//! classifier on crops re-cut that way against the original FER crops.
//!
//! Each FER image is upscaled 4x onto a mid-grey canvas, MTCNN runs on it, and the FER frame
//! (its centre and side) is expressed in units of the eye distance in the face's own axes.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;

use crate::dataset::Dataset;
use moodmirror::analysis::{crop_region, CropRegion, EyeCrop};
use moodmirror::detect::{DetectParams, GrayImage, Mtcnn, RgbImage};
use moodmirror::emotion::{argmax, EmotionClassifier, InputContract};
use moodmirror::image::resize_bilinear;

#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct FitCropArgs {
    /// FER2013 images (class folders or fer2013.csv:PublicTest).
    #[cfg_attr(feature = "clap", arg(long))]
    pub data: String,
    /// Use N images spread evenly over the set, so every class is represented (0 = all).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1000))]
    pub limit: usize,
    /// Emotion model for the accuracy check; the embedded default when omitted.
    #[cfg_attr(feature = "clap", arg(long))]
    pub model: Option<PathBuf>,
}

const UPSCALE: usize = 4;
const PAD: usize = 96;

fn median(v: &mut [f32]) -> f32 {
    v.sort_by(f32::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f32::NAN)
}

/// Upscales a 48x48 FER image `UPSCALE` times into the middle of the grey `canvas`.
fn paint_canvas(image: &[u8], up: &mut [u8], canvas: &mut [u8]) {
    let s = InputContract::SIZE;
    let big = s * UPSCALE;
    let side_px = big + 2 * PAD;
    resize_bilinear(&GrayImage { data: image, width: s, height: s, stride: s }, up, big, big);
    for y in 0..big {
        canvas[(PAD + y) * side_px + PAD..][..big].copy_from_slice(&up[y * big..][..big]);
    }
}

pub fn run(args: &FitCropArgs) -> Result<()> {
    let device = Device::Cpu;
    let data = Dataset::load(&args.data)?;
    let n = if args.limit == 0 { data.len() } else { args.limit.min(data.len()) };
    let mut mtcnn = Mtcnn::embedded(&device)?;
    let mut classifier = match &args.model {
        Some(p) => EmotionClassifier::from_file(p, &device)?,
        None => EmotionClassifier::embedded(&device)?,
    };
    let s = InputContract::SIZE;
    let big = s * UPSCALE;
    let side_px = big + 2 * PAD;
    let mut up = vec![0u8; big * big];
    let mut canvas = vec![128u8; side_px * side_px];
    let mut rgb = vec![0u8; side_px * side_px * 3];
    let params = DetectParams { min_size: 40, max_faces: 4, ..Default::default() };
    let mut faces = Vec::new();
    // Per detected image: (index, landmarks in canvas pixels).
    let mut found = Vec::new();
    let (mut sides, mut belows) = (Vec::new(), Vec::new());
    for i in (0..n).map(|k| k * data.len() / n) {
        paint_canvas(data.image(i), &mut up, &mut canvas);
        for (p, &g) in rgb.chunks_exact_mut(3).zip(&canvas) {
            p.fill(g);
        }
        let img = RgbImage { data: &rgb, width: side_px, height: side_px, stride: side_px * 3 };
        mtcnn.detect(&img, &params, &mut faces)?;
        let Some(l) = faces.first().and_then(|f| f.landmarks) else { continue };
        // In FER pixels.
        let fer = |p: [f32; 2]| [(p[0] - PAD as f32) / UPSCALE as f32, (p[1] - PAD as f32) / UPSCALE as f32];
        let (a, b) = (fer(l[0]), fer(l[1]));
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let d = (dx * dx + dy * dy).sqrt();
        if d < 4.0 {
            continue;
        }
        let (sin, cos) = dy.atan2(dx).sin_cos();
        let (ex, ey) = ((a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0);
        let (vx, vy) = (s as f32 / 2.0 - ex, s as f32 / 2.0 - ey);
        sides.push(s as f32 / d);
        belows.push((-sin * vx + cos * vy) / d);
        found.push((i, l));
    }
    let fitted = EyeCrop { side: median(&mut sides.clone()), below: median(&mut belows.clone()) };
    println!(
        "MTCNN found a face with landmarks in {}/{n} upscaled FER images ({:.1}%)",
        found.len(),
        100.0 * found.len() as f64 / n.max(1) as f64
    );
    let q = |v: &mut Vec<f32>, p: f64| {
        v.sort_by(f32::total_cmp);
        v[((v.len() as f64 - 1.0) * p) as usize]
    };
    println!(
        "FER frame side = {:.3} eye distances (quartiles {:.3}..{:.3}); centre {:.3} eye distances below the eyes (quartiles {:.3}..{:.3})",
        fitted.side,
        q(&mut sides, 0.25),
        q(&mut sides, 0.75),
        fitted.below,
        q(&mut belows, 0.25),
        q(&mut belows, 0.75)
    );

    // Classifier accuracy on the detected images: original crops vs crops re-cut from the
    // canvas with the fitted geometry (aligned on the eyes).
    let mut originals = Vec::with_capacity(found.len() * s * s);
    let mut recut = vec![0u8; found.len() * s * s];
    let mut unrotated = vec![0u8; found.len() * s * s];
    for (k, &(i, l)) in found.iter().enumerate() {
        originals.extend_from_slice(data.image(i));
        paint_canvas(data.image(i), &mut up, &mut canvas);
        let mut face = moodmirror::detect::Face::new(0, 0, 1, 1, 1.0);
        face.landmarks = Some(l);
        let geometry = moodmirror::analysis::CropGeometry { eyes: Some(fitted), ..Default::default() };
        let region = CropRegion::of(&face, geometry);
        let canvas_img = GrayImage { data: &canvas, width: side_px, height: side_px, stride: side_px };
        crop_region(&canvas_img, region, 0, 255, &mut recut[k * s * s..][..s * s]);
        let level = CropRegion { angle: 0.0, ..region };
        crop_region(&canvas_img, level, 0, 255, &mut unrotated[k * s * s..][..s * s]);
    }
    let accuracy = |crops: &[u8], classifier: &mut EmotionClassifier| -> Result<f64> {
        let mut correct = 0;
        let mut probs = Vec::new();
        for (chunk_i, chunk) in crops.chunks(256 * s * s).enumerate() {
            classifier.classify(chunk, &mut probs)?;
            for (j, p) in probs.iter().enumerate() {
                let (i, _) = found[chunk_i * 256 + j];
                correct += (argmax(p).0 == data.labels[i] as usize) as usize;
            }
        }
        Ok(correct as f64 / found.len().max(1) as f64)
    };
    let original_acc = accuracy(&originals, &mut classifier)?;
    let recut_acc = accuracy(&recut, &mut classifier)?;
    let unrotated_acc = accuracy(&unrotated, &mut classifier)?;
    println!(
        "classifier accuracy on those {} images: original FER crops {:.4}; re-cut from detections with the fitted geometry: eyes levelled {:.4}, not rotated {:.4}",
        found.len(),
        original_acc,
        recut_acc,
        unrotated_acc
    );
    Ok(())
}
