//! How often YuNet's track-crop re-detection finds a face again between full detections, per
//! face size, on real photos placed on a 720p canvas (greyscale, soft or colour), still or drifting.
//!
//!     cargo run --release -p moodmirror --example track_refind -- PHOTO_DIR [--count N] [--grey]
//!         [--offset N] [--size-bias W,H] [--retry SIDE:CONTEXT] [--soft F] [--drift PX] [--sizes 100,200,400] [--config CONTEXT:SMALL_FACE:THRESHOLD[:retry] ...]
//!
//! PHOTO_DIR holds images/ (e.g. wild-dev). Each photo is shown at each size; the full detector
//! (at 512 px wide, as the element runs it on 720p) gives the first box, then 9 frames are
//! tracked from it as between two full detections at the default interval.

use candle_core::Device;
use image::{imageops, GrayImage as Luma8, RgbImage as Rgb8};
use moodmirror::detect::{DetectParams, Face, RgbImage, YuNet};

const W: u32 = 1280;
const H: u32 = 720;

fn canvas(photo: &Rgb8, x: i64, y: i64) -> Rgb8 {
    let mut c = Rgb8::from_pixel(W, H, image::Rgb([70, 70, 70]));
    imageops::overlay(&mut c, photo, x, y);
    c
}

fn view(img: &Rgb8) -> RgbImage<'_> {
    RgbImage { data: img.as_raw(), width: img.width() as usize, height: img.height() as usize, stride: img.width() as usize * 3 }
}

fn full_detect(yunet: &mut YuNet, img: &Rgb8) -> Option<Face> {
    let scale = W as f32 / 512.0;
    let small = imageops::resize(img, 512, (H as f32 / scale).round() as u32, imageops::FilterType::Triangle);
    let params = DetectParams { min_size: 16, max_size: None, scale_factor: 1.1, min_neighbors: 3, max_faces: 16 };
    let mut faces = Vec::new();
    yunet.detect(&view(&small), &params, &mut faces).ok()?;
    let mut best = faces.into_iter().max_by_key(|f| f.width * f.height)?;
    best.scale(scale);
    Some(best)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().expect("PHOTO_DIR").clone();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let count: usize = flag("--count").map_or(60, |v| v.parse().expect("--count"));
    let offset: usize = flag("--offset").map_or(0, |v| v.parse().expect("--offset"));
    let grey = args.iter().any(|a| a == "--grey");
    let soft: f32 = flag("--soft").map_or(1.0, |v| v.parse().expect("--soft"));
    let drift: i64 = flag("--drift").map_or(0, |v| v.parse().expect("--drift"));
    let sizes: Vec<u32> =
        flag("--sizes").unwrap_or_else(|| "80,150,250,400,650".into()).split(',').map(|s| s.parse().expect("--sizes")).collect();
    let configs: Vec<(f32, i32, f32, bool)> = {
        let given: Vec<&String> = args.iter().enumerate().filter(|(i, _)| *i > 0 && args[i - 1] == "--config").map(|(_, a)| a).collect();
        let given = if given.is_empty() {
            vec![&"1.5:48:0.5".to_string()].into_iter().cloned().collect()
        } else {
            given.into_iter().cloned().collect::<Vec<_>>()
        };
        given
            .iter()
            .map(|c| {
                let p: Vec<&str> = c.split(':').collect();
                (
                    p[0].parse().expect("context"),
                    p[1].parse().expect("small face"),
                    p[2].parse().expect("threshold"),
                    p.get(3) == Some(&"retry"),
                )
            })
            .collect()
    };
    let mut names: Vec<_> = std::fs::read_dir(format!("{dir}/images")).expect("images/").filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    let mut yunet = YuNet::embedded(&Device::Cpu).expect("yunet");
    let retry_window = flag("--retry").map(|r| {
        let v: Vec<&str> = r.split(':').collect();
        moodmirror::detect::yunet::TrackWindow {
            side: v[0].parse().expect("--retry SIDE:CONTEXT"),
            context: v[1].parse().expect("--retry SIDE:CONTEXT"),
        }
    });
    if let Some(bias) = flag("--size-bias") {
        let v: Vec<f32> = bias.split(',').map(|v| v.parse().expect("--size-bias W,H")).collect();
        yunet.track_windows.small_size_bias = [v[0], v[1]];
    }
    let default_retries = yunet.track_windows.retries;
    for &(context, small_face, threshold, retry) in &configs {
        yunet.track_windows.small.context = context;
        yunet.track_windows.small_face = small_face;
        yunet.track_windows.retries = match (retry, retry_window) {
            (false, _) => [None, None],
            (true, Some(w)) => [Some(w), None],
            (true, None) => default_retries,
        };
        yunet.track_threshold = threshold;
        let started = std::time::Instant::now();
        let mut line = format!("context {context} small<{small_face} thr {threshold} retry {retry}:");
        let mut crops = 0usize;
        for &size in &sizes {
            let (mut found, mut tried, mut photos, mut iou_sum, mut ratio_sum, mut ghosts) = (0usize, 0usize, 0usize, 0f32, 0f32, 0usize);
            let (mut height_sum, mut dy_sum) = (0f32, 0f32);
            for path in names.iter().skip(offset).take(count) {
                let Ok(img) = image::open(path) else { continue };
                let mut rgb = img.to_rgb8();
                if grey {
                    let g: Luma8 = imageops::grayscale(&rgb);
                    rgb = image::DynamicImage::ImageLuma8(g).to_rgb8();
                }
                if soft > 1.0 {
                    let (w, h) = ((rgb.width() as f32 / soft) as u32, (rgb.height() as f32 / soft) as u32);
                    rgb = imageops::resize(
                        &imageops::resize(&rgb, w.max(8), h.max(8), imageops::FilterType::Triangle),
                        rgb.width(),
                        rgb.height(),
                        imageops::FilterType::Triangle,
                    );
                }
                let photo = imageops::resize(&rgb, size, size, imageops::FilterType::Triangle);
                let (x0, y0) = (100i64, (H as i64 - size.min(H) as i64) / 2);
                let Some(mut track) = full_detect(&mut yunet, &canvas(&photo, x0, y0)) else { continue };
                photos += 1;
                for frame in 1..10 {
                    let img = canvas(&photo, x0 + drift * frame, y0);
                    let mut faces = Vec::new();
                    yunet.track_in(&view(&img), &[track], &mut faces).expect("track");
                    crops += 1;
                    tried += 1;
                    if let Some(f) = faces.first() {
                        found += 1;
                        if let Some(truth) = full_detect(&mut yunet, &img) {
                            iou_sum += moodmirror::tracking::iou(f, &truth);
                            ratio_sum += f.width as f32 / truth.width.max(1) as f32;
                            height_sum += f.height as f32 / truth.height.max(1) as f32;
                            dy_sum += ((f.y * 2 + f.height) - (truth.y * 2 + truth.height)) as f32 * 0.5 / truth.height.max(1) as f32;
                        }
                        track = *f;
                    } else {
                        track.x += drift as i32;
                    }
                }
                // The face leaves: an empty canvas must not re-find it.
                let mut faces = Vec::new();
                yunet.track_in(&view(&canvas(&Rgb8::new(1, 1), -10, -10)), &[track], &mut faces).expect("track");
                ghosts += faces.len();
            }
            line += &format!(
                "  {size}px {:.3} (iou {:.2}, w/w {:.3}, h/h {:.3}, dy/h {:+.3}, n {photos}, ghosts {ghosts})",
                found as f32 / tried.max(1) as f32,
                iou_sum / found.max(1) as f32,
                ratio_sum / found.max(1) as f32,
                height_sum / found.max(1) as f32,
                dy_sum / found.max(1) as f32
            );
        }
        println!("{line}  [{:.2} ms per track crop incl. full detections]", started.elapsed().as_secs_f64() * 1e3 / crops.max(1) as f64);
    }
}
