//! `moodmirror image`: the element's detect + classify core on still images, one JSON object per
//! image, optionally writing annotated copies.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;

use moodmirror::analysis::FaceAnalyzer;
use moodmirror::detect::{DetectParams, Detector, DetectorKind};
use moodmirror::draw::{Canvas, Painter};
use moodmirror::emotion::{select_device, DeviceKind, EmotionClassifier, CLASS_NAMES};
use moodmirror::face::FaceResult;
use moodmirror::image::{luma, FramePlanes, PixelLayout};

#[derive(Debug, Clone, clap::Args)]
pub struct ImageArgs {
    /// Image files (JPEG, PNG, WebP, BMP, TIFF, GIF: told apart by content, not by name), or
    /// folders: the pictures in them (by extension, sorted; not their subfolders).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write JSON lines here ('-' = standard output, the default).
    #[arg(long, default_value = "-")]
    pub jsonl: String,
    #[arg(long, value_enum, default_value = "yunet")]
    pub detector: DetectorArg,
    /// Smallest face side in pixels [default: 20 with yunet, whose cost does not depend on it;
    /// 40 with mtcnn and haar].
    #[arg(long)]
    pub min_face_size: Option<usize>,
    #[arg(long, default_value_t = 1.1)]
    pub scale_factor: f64,
    #[arg(long, default_value_t = 3)]
    pub min_neighbors: usize,
    #[arg(long, default_value_t = 16)]
    pub max_faces: usize,
    /// Emotion model weights; the embedded default when omitted.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Arithmetic of the emotion CNN (the element's `precision`): auto, f32 or int8.
    #[arg(long, default_value = "auto")]
    pub precision: moodmirror::emotion::Precision,
    /// Write annotated copies of the images (PNG, named after each image; never over an input)
    /// into this directory.
    #[arg(long)]
    pub annotate: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DetectorArg {
    Haar,
    Mtcnn,
    Yunet,
}

impl DetectorArg {
    pub fn name(self) -> &'static str {
        DetectorKind::from(self).nick()
    }
}

impl From<DetectorArg> for DetectorKind {
    fn from(d: DetectorArg) -> Self {
        match d {
            DetectorArg::Haar => DetectorKind::Haar,
            DetectorArg::Mtcnn => DetectorKind::Mtcnn,
            DetectorArg::Yunet => DetectorKind::Yunet,
        }
    }
}

/// The JSON object of one face (shared with other exporters).
pub fn face_json(r: &FaceResult) -> serde_json::Value {
    let probabilities: serde_json::Map<String, serde_json::Value> =
        CLASS_NAMES.iter().zip(r.probabilities).map(|(c, p)| (c.to_string(), json!(round4(p)))).collect();
    let mut v = json!({
        "x": r.face.x, "y": r.face.y, "width": r.face.width, "height": r.face.height,
        "score": r.face.score, "emotion": r.label(), "confidence": round4(r.confidence),
        "probabilities": probabilities,
    });
    if let Some(points) = r.face.landmarks {
        v["landmarks"] = json!(points.iter().map(|p| [round4(p[0]), round4(p[1])]).collect::<Vec<_>>());
    }
    v
}

/// The element's detect + classify core on an RGB picture (`gray`: reused luma buffer).
fn analyze_rgb(analyzer: &mut FaceAnalyzer, rgb: &image::RgbImage, params: &DetectParams, gray: &mut Vec<u8>) -> Result<Vec<FaceResult>> {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let layout = PixelLayout::Packed { r: 0, g: 1, b: 2, bytes_per_pixel: 3 };
    let image = luma(rgb.as_raw(), w * 3, w, h, layout, gray);
    let planes = FramePlanes { planes: [rgb.as_raw(), &[], &[]], strides: [w * 3, 0, 0], width: w, height: h, layout, video_range: false };
    Ok(analyzer.analyze(&image, Some(&planes), params, 0, 255)?.to_vec())
}

/// Detects on `rgb` with half its longer side of replicated edge added all round and a
/// minimum face size that fits the picture; boxes come back in `rgb`'s coordinates, clipped.
fn padded_retry(analyzer: &mut FaceAnalyzer, rgb: &image::RgbImage, params: &DetectParams) -> Result<Vec<FaceResult>> {
    let (w, h) = (rgb.width() as i64, rgb.height() as i64);
    // Half the shorter side: the padded picture is at most 4 times the original's pixels,
    // whatever its shape (half the longer side made a 100000x1 strip 20 G pixels).
    let pad = (w.min(h) / 2).max(8);
    let (pw, ph) = ((w + 2 * pad) as usize, (h + 2 * pad) as usize);
    let padded = image::RgbImage::from_fn(pw as u32, ph as u32, |x, y| {
        let sx = (x as i64 - pad).clamp(0, w - 1) as u32;
        let sy = (y as i64 - pad).clamp(0, h - 1) as u32;
        *rgb.get_pixel(sx, sy)
    });
    let small = DetectParams { min_size: params.min_size.min((w.min(h) as usize / 2).max(12)), ..*params };
    let found = analyze_rgb(analyzer, &padded, &small, &mut Vec::new())?;
    Ok(found
        .into_iter()
        .filter_map(|r| {
            let mut moved = r.face;
            moved.x -= pad as i32;
            moved.y -= pad as i32;
            if let Some(points) = moved.landmarks.as_mut() {
                points.iter_mut().for_each(|p| *p = [p[0] - pad as f32, p[1] - pad as f32]);
            }
            let face = moved.clipped_to(w as i32, h as i32)?;
            Some(FaceResult { face, ..r })
        })
        .collect())
}

/// Pictures too small or too thin to hold a face: reported as an error line, not analysed.
const MIN_SIDE: u32 = 8;
const MAX_ASPECT: u32 = 64;

fn degenerate(w: u32, h: u32) -> Option<String> {
    if w.min(h) < MIN_SIDE || w.max(h) / w.min(h).max(1) > MAX_ASPECT {
        Some(format!(
            "the picture is {w}x{h} pixels: too small or too thin to hold a face (sides of at least {MIN_SIDE} px, at most {MAX_ASPECT}:1)"
        ))
    } else {
        None
    }
}

/// Saves `rgb` as PNG at `target` through a `.partial` file renamed when complete, so that a
/// full disk leaves no truncated picture.
fn save_png(rgb: &image::RgbImage, target: &std::path::Path) -> Result<()> {
    let tmp = crate::outputs::partial(target);
    let written = rgb.save_with_format(&tmp, image::ImageFormat::Png).with_context(|| format!("writing {}", tmp.display()));
    let renamed = written.and_then(|()| std::fs::rename(&tmp, target).with_context(|| format!("writing {}", target.display())));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

fn round4(v: f32) -> f64 {
    (v as f64 * 1e4).round() / 1e4
}

pub fn run(args: &ImageArgs) -> Result<()> {
    let (device, warning) = select_device(DeviceKind::Auto)?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    let mut classifier = match &args.model {
        Some(p) => EmotionClassifier::from_file(p, &device)?,
        None => EmotionClassifier::embedded(&device)?,
    };
    classifier.set_precision(args.precision)?;
    let detector = Detector::new(args.detector.into(), &device)?;
    let mut analyzer = FaceAnalyzer::new(detector, classifier);
    let mut painter = Painter::new()?;
    let params = DetectParams {
        min_size: args.min_face_size.unwrap_or(match args.detector {
            DetectorArg::Yunet => 20,
            DetectorArg::Haar | DetectorArg::Mtcnn => 40,
        }),
        max_size: None,
        scale_factor: args.scale_factor.max(1.01),
        min_neighbors: args.min_neighbors,
        max_faces: args.max_faces.max(1),
    };
    // Folders stand for the pictures in them.
    let files = crate::inputs::expand_folders(&args.files, &crate::inputs::IMAGE_EXTENSIONS, |_| false)?;
    if files.is_empty() {
        anyhow::bail!(
            "no image files ({}) in {}",
            crate::inputs::IMAGE_EXTENSIONS.join(", "),
            args.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    // Every output checked before any work: none over an input, no results file named like
    // a picture (`--jsonl a.png b.jpg`: the path forgotten), folders that can be written, and
    // annotated copies not among the pictures of a folder read (a second run would take them
    // for photos).
    if let Some(dir) = &args.annotate {
        let target = crate::outputs::resolved(dir);
        if let Some(folder) = args.files.iter().find(|f| f.is_dir() && crate::outputs::resolved(f) == target) {
            anyhow::bail!("--annotate {}: the folder of the pictures read; give the copies a folder of their own", folder.display());
        }
    }
    let _lock = if args.jsonl != "-" {
        crate::outputs::check_output(std::path::Path::new(&args.jsonl), "--jsonl", &files, true)?;
        Some(crate::outputs::OutputLock::acquire(std::path::Path::new(&args.jsonl))?)
    } else {
        None
    };
    let annotated_names = match &args.annotate {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            crate::outputs::check_folder_writable(dir, "--annotate", dir)?;
            crate::outputs::distinct_names(&files, Some(dir), ".png")
        }
        None => Vec::new(),
    };
    // Each line is flushed as it is made: a batch that stops early keeps what it found.
    let mut out: Box<dyn Write> = if args.jsonl == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(&args.jsonl).with_context(|| format!("creating {}", args.jsonl))?)
    };
    let emit = |out: &mut Box<dyn Write>, record: serde_json::Value| -> Result<()> {
        writeln!(out, "{record}").and_then(|()| out.flush()).with_context(|| format!("writing {}", args.jsonl))
    };
    let layout = PixelLayout::Packed { r: 0, g: 1, b: 2, bytes_per_pixel: 3 };
    let mut gray = Vec::new();
    let (mut failures, mut write_failures) = (0, 0);
    for (k, path) in files.iter().enumerate() {
        let decoded = moodmirror::image_io::decode_file(path).map_err(anyhow::Error::from).and_then(|img| {
            match degenerate(img.width(), img.height()) {
                Some(reason) => Err(anyhow::anyhow!("{}: {reason}", path.display())),
                None => Ok(img.into_rgb8()),
            }
        });
        let mut rgb = match decoded {
            Ok(rgb) => rgb,
            Err(e) => {
                // Recorded in the output too, so a failed file is not mistaken for one without faces.
                let reason = format!("{e:#}");
                eprintln!("moodmirror image: {reason}");
                emit(&mut out, json!({ "file": path.display().to_string(), "error": reason }))?;
                failures += 1;
                continue;
            }
        };
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let mut results = analyze_rgb(&mut analyzer, &rgb, &params, &mut gray)?;
        // A face filling the picture edge to edge (datasets' tight crops) has no margin for the
        // detector's windows: look again with the edges extended around it.
        let retried = results.is_empty();
        if retried {
            results = padded_retry(&mut analyzer, &rgb, &params)?;
        }
        let mut record = json!({
            "file": path.display().to_string(),
            "width": w,
            "height": h,
            "faces": results.iter().map(face_json).collect::<Vec<_>>(),
        });
        if retried {
            record["padded_retry"] = json!(true);
        }
        emit(&mut out, record)?;
        if let Some(target) = annotated_names.get(k) {
            let mut canvas =
                Canvas { planes: [&mut *rgb, &mut [], &mut []], strides: [w * 3, 0, 0], width: w, height: h, layout, video_range: false };
            painter.draw(&mut canvas, &results);
            // A picture that cannot be written (a full disk) is reported, and the batch goes on.
            if let Err(e) = save_png(&rgb, target) {
                eprintln!("moodmirror image: {}: annotated copy not written: {e:#}", path.display());
                write_failures += 1;
            }
        }
    }
    if failures + write_failures > 0 {
        anyhow::bail!(
            "{failures} of the {} images could not be read (see their \"error\" lines){}",
            files.len(),
            if write_failures > 0 { format!(", {write_failures} annotated copies could not be written") } else { String::new() }
        );
    }
    Ok(())
}
