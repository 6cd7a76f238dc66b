//! The `moodmirror` command: train and evaluate the emotion model, benchmark it, and run the
//! face + emotion pipeline on still images.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

// Training allocates and frees large tensors every step; glibc returns them to the kernel
// and pays page faults on every reuse (a third of the step time), mimalloc keeps them.
// MOODMIRROR_ALLOCATOR=system selects the system allocator instead (the stock baseline of
// `moodmirror bench`); the choice is made at the first allocation and never changes.
#[global_allocator]
static ALLOCATOR: SwitchableAllocator = SwitchableAllocator;

struct SwitchableAllocator;

static USE_SYSTEM: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn use_system_allocator() -> bool {
    use std::sync::atomic::Ordering;
    match USE_SYSTEM.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            // SAFETY: getenv does not allocate; the string is NUL-terminated.
            let value = unsafe { libc::getenv(c"MOODMIRROR_ALLOCATOR".as_ptr()) };
            // SAFETY: a non-null getenv result is a NUL-terminated string that lives as long as the
            // environment is not changed (nothing changes it before `main`'s first statements).
            let system = !value.is_null() && unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() == b"system";
            USE_SYSTEM.store(if system { 2 } else { 1 }, Ordering::Relaxed);
            system
        }
    }
}

// SAFETY: every call forwards to the same allocator for the whole life of the process.
unsafe impl std::alloc::GlobalAlloc for SwitchableAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if use_system_allocator() {
            // SAFETY: the caller's guarantees for this call, forwarded to the system allocator.
            unsafe { std::alloc::System.alloc(layout) }
        } else {
            // SAFETY: the caller's guarantees for this call, forwarded to mimalloc.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if use_system_allocator() {
            // SAFETY: the caller's guarantees for this call, forwarded to the system allocator.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        } else {
            // SAFETY: the caller's guarantees for this call, forwarded to mimalloc.
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if use_system_allocator() {
            // SAFETY: the caller's guarantees for this call, forwarded to the system allocator.
            unsafe { std::alloc::System.alloc_zeroed(layout) }
        } else {
            // SAFETY: the caller's guarantees for this call, forwarded to mimalloc.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if use_system_allocator() {
            // SAFETY: the caller's guarantees for this call, forwarded to the system allocator.
            unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
        } else {
            // SAFETY: the caller's guarantees for this call, forwarded to mimalloc.
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

extern "C" {
    fn mi_option_set(option: std::os::raw::c_int, value: std::os::raw::c_long);
    fn mi_reserve_os_memory(size: usize, commit: bool, allow_large: bool) -> std::os::raw::c_int;
}

/// Keep freed memory mapped: tensors of the same sizes come back every step (~30 % faster).
fn keep_freed_memory() {
    // `mi_option_purge_delay` in mimalloc v3's enum (libmimalloc-sys 0.1.49, pinned in Cargo.lock).
    const MI_OPTION_ALLOW_LARGE_OS_PAGES: std::os::raw::c_int = 6;
    const MI_OPTION_PURGE_DELAY: std::os::raw::c_int = 15;
    // SAFETY: sets global options; mimalloc allows it at any time.
    unsafe {
        mi_option_set(MI_OPTION_ALLOW_LARGE_OS_PAGES, 1);
        mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        // One large arena (address space only, committed on use) so that the big im2col buffers
        // are recycled from it instead of being mapped fresh: another ~20 % per training step.
        mi_reserve_os_memory(4 << 30, false, true);
    }
}

mod annotate;
mod image_cmd;
mod outputs;
mod video_eval;

use moodmirror::emotion;
use moodmirror_train::{average, bench, crop_fit, dataset, dataset::Dataset, evaluate, plots, train};

#[derive(Parser)]
#[command(name = "moodmirror", version, about = "Facial emotion estimation: train, evaluate, benchmark, annotate images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train an emotion CNN on FER2013 (class folders or fer2013.csv:Usage).
    Train(train::TrainArgs),
    /// Average the weights of checkpoints from one run (SWA) and re-estimate batch norm.
    Average(average::AverageArgs),
    /// Evaluate an emotion model: accuracy, loss, per-class P/R/F1, confusion matrix, ROC AUC.
    Evaluate(EvaluateArgs),
    /// Time training steps and inference with moodmirror's ops against stock candle.
    Bench(bench::BenchArgs),
    /// Time full face detection on one frame (median), with MTCNN's stages.
    BenchDetect(bench::DetectBenchArgs),
    /// Detect faces and classify their emotions in image files; one JSON object per image.
    Image(image_cmd::ImageArgs),
    /// Annotate a video file: H.264/MP4 with boxes and labels, and JSON lines per frame.
    Annotate(annotate::AnnotateArgs),
    /// Convert facenet-pytorch's MTCNN weights (legacy torch format) to weights/mtcnn.safetensors.
    ConvertMtcnn(ConvertMtcnnArgs),
    /// Emotions of a recording at a glance from its JSON lines: per-face timelines, share bars,
    /// summary.csv and an overview.
    Report(moodmirror_train::report::ReportArgs),
    /// Convert YuNet-n's ONNX export (libfacedetection.train) to weights/yunet.safetensors.
    ConvertYunet(ConvertYunetArgs),
    /// Measure where FER2013's frame sits relative to MTCNN's eyes; check re-cut crops.
    FitCrop(crop_fit::FitCropArgs),
}

#[derive(clap::Args)]
struct ConvertMtcnnArgs {
    /// Folder with pnet.pt, rnet.pt and onet.pt: `facenet_pytorch/data` of the facenet-pytorch
    /// 2.6.0 wheel (`pip download --no-deps facenet-pytorch==2.6.0`, then unzip).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value = "weights/mtcnn.safetensors")]
    out: PathBuf,
}

fn convert_mtcnn(args: &ConvertMtcnnArgs) -> Result<()> {
    use moodmirror_train::convert::torch_legacy::read_state_dict;
    let mut tensors = std::collections::HashMap::new();
    for net in ["pnet", "rnet", "onet"] {
        let path = args.dir.join(format!("{net}.pt"));
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let dict = read_state_dict(&bytes).with_context(|| format!("parsing {}", path.display()))?;
        println!("{}: {} tensors", path.display(), dict.len());
        for (name, t) in dict {
            tensors.insert(format!("{net}.{name}"), t);
        }
    }
    let meta = std::collections::HashMap::from([
        ("source".to_string(), "facenet-pytorch 2.6.0 (PyPI): facenet_pytorch/data/{pnet,rnet,onet}.pt".to_string()),
        ("license".to_string(), "MIT (facenet-pytorch, Copyright (c) 2019 Timothy Esler)".to_string()),
        ("converted_by".to_string(), "moodmirror convert-mtcnn".to_string()),
    ]);
    moodmirror_train::checkpoint::save_safetensors(&tensors, &meta, &args.out)?;
    println!("wrote {} ({} tensors)", args.out.display(), tensors.len());
    Ok(())
}

#[derive(clap::Args)]
struct ConvertYunetArgs {
    /// `yunet_n_dynamic.onnx` (or `yunet_n_640_640.onnx`: the same weights) from
    /// libfacedetection.train's `onnx/` folder.
    #[arg(long)]
    onnx: PathBuf,
    #[arg(long, default_value = "weights/yunet.safetensors")]
    out: PathBuf,
}

fn convert_yunet(args: &ConvertYunetArgs) -> Result<()> {
    use moodmirror::detect::yunet;
    use moodmirror_train::convert::{onnx, yunet::convert_onnx};
    let bytes = std::fs::read(&args.onnx).with_context(|| format!("reading {}", args.onnx.display()))?;
    let graph = onnx::read_graph(&bytes).with_context(|| format!("parsing {}", args.onnx.display()))?;
    let named = convert_onnx(&graph).map_err(anyhow::Error::msg).with_context(|| format!("converting {}", args.onnx.display()))?;
    let mut tensors = std::collections::HashMap::new();
    for (name, init) in named {
        let t = candle_core::Tensor::from_vec(init.data, init.dims, &candle_core::Device::Cpu)?;
        tensors.insert(name, t);
    }
    // Loading the result checks every tensor the detector needs is there, with its shape.
    let meta = std::collections::HashMap::from([
        ("source".to_string(), "libfacedetection.train @ 0047ac24afb1a50a0c6105001c89d1b5b805dbf1: onnx/yunet_n_dynamic.onnx (batch norm folded by the exporter)".to_string()),
        ("license".to_string(), "Apache-2.0 (libfacedetection.train, (c) OpenMMLab and Shiqi Yu)".to_string()),
        ("converted_by".to_string(), "moodmirror convert-yunet".to_string()),
    ]);
    let tmp = args.out.with_extension("safetensors.partial");
    moodmirror_train::checkpoint::save_safetensors(&tensors, &meta, &tmp)?;
    let check = std::fs::read(&tmp)?;
    if let Err(e) = yunet::YuNet::load(&check, &candle_core::Device::Cpu) {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!("{} does not hold YuNet-n: {e}", args.onnx.display());
    }
    std::fs::rename(&tmp, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {} ({} tensors)", args.out.display(), tensors.len());
    Ok(())
}

#[derive(clap::Args)]
struct EvaluateArgs {
    /// Directory with one folder per class, fer2013.csv:PublicTest (:Training, :PrivateTest), or
    /// the originals' labels.csv:val (scored on FER2013's labels and on FER+'s majority).
    #[arg(long, required_unless_present = "video", conflicts_with = "video")]
    data: Option<String>,
    /// A labelled video instead: the element's own pipeline runs on it and is scored per frame
    /// against --segments (present, fresh, frame and settled accuracy, frames to the right label).
    #[arg(long, requires = "segments")]
    video: Option<PathBuf>,
    /// The video's truth: CSV with first_frame,last_frame,x,y,size,label per labelled region
    /// (the format of make_face_clip.py).
    #[arg(long, requires = "video")]
    segments: Option<PathBuf>,
    /// Labelled regions move this many pixels per frame to the right (make_face_clip.py --drift).
    #[arg(long, default_value_t = 0, requires = "video")]
    drift: i64,
    /// Face detector for --video.
    #[arg(long, value_enum, default_value = "yunet")]
    detector: image_cmd::DetectorArg,
    /// Smallest face side in pixels for --video [default: the element's].
    #[arg(long)]
    min_face_size: Option<u32>,
    #[command(flatten)]
    video_settings: annotate::VideoSettings,
    /// The label set of the main report when the data has several [default: fer2013]; the
    /// others follow it, and report.json holds all under `by_labels`.
    #[arg(long, value_enum)]
    labels: Option<dataset::LabelSet>,
    /// Weights (.safetensors); the embedded default when omitted. Give it several times to
    /// evaluate the ensemble (class probabilities averaged over the models), e.g. a set of
    /// distillation teachers.
    #[arg(long)]
    model: Vec<PathBuf>,
    /// Where to write report.json, confusion_matrix.png and roc_curves.png.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Test-time augmentation: average the predictions of several views of each image
    /// (`--tta` alone: the image and its mirror).
    #[arg(long, value_enum, num_args = 0..=1, default_value_t = evaluate::Tta::None, default_missing_value = "mirror")]
    tta: evaluate::Tta,
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Arithmetic of the CNN: auto, f32 or int8; auto is int8 on x86-64 CPUs with AVX2, as in the element.
    #[arg(long, default_value = "auto")]
    precision: emotion::Precision,
    /// Show the network this central part of each 48x48 image instead of the model's own
    /// `view_scale` (metadata; 1.0 = the whole image).
    #[arg(long)]
    view_scale: Option<f32>,
    /// Leave out the model's logit bias (metadata `logit_bias`, which undoes the class weighting
    /// of training): the raw network, which favours rare classes.
    #[arg(long)]
    no_logit_bias: bool,
}

fn evaluate(args: &EvaluateArgs) -> Result<()> {
    if let (Some(video), Some(segments)) = (&args.video, &args.segments) {
        if args.model.len() > 1 {
            anyhow::bail!("--video runs the element, which takes one --model");
        }
        let run = video_eval::VideoRun {
            video,
            element: annotate::ElementStage {
                detector: args.detector,
                min_face_size: args.min_face_size,
                precision: None,
                model: args.model.first().map(PathBuf::as_path),
                draw: false,
                video: &args.video_settings,
            },
        };
        video_eval::evaluate(&run, segments, args.drift, args.report.as_deref())?;
        return Ok(());
    }
    let Some(data_arg) = &args.data else { anyhow::bail!("--data or --video is needed") };
    let device = candle_core::Device::Cpu;
    let mut classifiers = Vec::new();
    if args.model.is_empty() {
        classifiers.push(emotion::EmotionClassifier::embedded(&device)?);
    }
    for path in &args.model {
        classifiers.push(emotion::EmotionClassifier::from_file(path, &device)?);
    }
    if let Some(scale) = args.view_scale {
        if !(0.5..=1.0).contains(&scale) {
            anyhow::bail!("--view-scale {scale}: expected a number in 0.5..=1");
        }
    }
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        outputs::check_folder_writable(dir, "--report", dir)?;
    }
    let data = Dataset::load(data_arg)?;
    let view_scale_of = |c: &emotion::EmotionClassifier| args.view_scale.unwrap_or(c.view_scale);
    let mut described = Vec::new();
    for classifier in &mut classifiers {
        classifier.set_precision(args.precision)?;
        classifier.set_logit_bias_enabled(!args.no_logit_bias);
        let view_scale = view_scale_of(classifier);
        described.push(format!(
            "arch {}, {}, view scale {view_scale:.4}, {}",
            classifier.arch.name(),
            classifier.arithmetic(),
            if classifier.logit_bias().is_some() { "logit bias" } else { "no logit bias" }
        ));
    }
    let views_of = |c: &emotion::EmotionClassifier| args.tta.views(view_scale_of(c), c.preprocess);
    let view_count = views_of(&classifiers[0]).len();
    let probs = evaluate::predict_ensemble(&mut classifiers, views_of, &data, &device, args.batch.max(1))?;
    evaluate::check_finite(&probs).map_err(anyhow::Error::msg)?;
    // Every label set the data has is scored; the first (or --labels) is the main report.
    let mut sets = data.label_sets();
    if let Some(wanted) = args.labels {
        if !sets.contains(&wanted) {
            anyhow::bail!("--labels {}: {} has no such labels", wanted.name(), data_arg);
        }
        sets.retain(|s| *s != wanted);
        sets.insert(0, wanted);
    }
    let reports: Vec<(dataset::LabelSet, evaluate::Report)> =
        sets.iter().filter_map(|&set| data.scored(set).map(|(i, l)| (set, evaluate::Report::compute_subset(&probs, &i, &l)))).collect();
    let Some((main_set, report)) = reports.first().cloned() else {
        anyhow::bail!("{}: no labels to score", data_arg);
    };
    let names: Vec<String> = args.model.iter().map(|p| p.display().to_string()).collect();
    if names.len() > 1 {
        println!("ensemble of {} models (probabilities averaged){}", names.len(), args.tta.describe());
        for (name, about) in names.iter().zip(&described) {
            println!("  model: {name} ({about})");
        }
    } else {
        let name = names.first().cloned().unwrap_or_else(|| "embedded default".into());
        println!("model: {name} ({}){}", described.join(""), args.tta.describe());
    }
    if reports.len() > 1 {
        println!("labels: {} ({} images scored)", main_set.name(), report.n);
    }
    print!("{}", report.to_text());
    for (set, other) in &reports[1..] {
        println!("\nlabels: {} ({} images scored)", set.name(), other.n);
        print!("{}", other.to_text());
    }
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut json = serde_json::to_value(&report)?;
        json["model"] = match names.len() {
            0 => serde_json::Value::Null,
            1 => serde_json::json!(names[0]),
            _ => serde_json::json!(names),
        };
        json["tta"] = serde_json::json!(args.tta != evaluate::Tta::None);
        json["tta_views"] = serde_json::json!(view_count);
        json["precision"] = serde_json::json!(classifiers[0].precision_name());
        json["view_scale"] = serde_json::json!(args.view_scale.unwrap_or(classifiers[0].view_scale));
        json["logit_bias"] = serde_json::json!(classifiers.iter().all(|c| c.logit_bias().is_some()));
        json["data"] = serde_json::json!(data_arg);
        json["labels"] = serde_json::json!(main_set.name());
        json["absent_classes"] = serde_json::json!(report.absent_classes());
        let mut by_labels = serde_json::Map::new();
        for (set, r) in &reports {
            by_labels.insert(set.name().into(), serde_json::to_value(r)?);
        }
        json["by_labels"] = serde_json::Value::Object(by_labels);
        let path = dir.join("report.json");
        std::fs::write(&path, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", path.display()))?;
        plots::confusion_heatmap(&report, &dir.join("confusion_matrix.png"))?;
        plots::roc_curves(&report, &dir.join("roc_curves.png"))?;
        for (set, r) in &reports[1..] {
            plots::confusion_heatmap(r, &dir.join(format!("confusion_matrix_{}.png", set.name())))?;
        }
        println!("\nreport written to {}", dir.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    // The stock-candle baseline of `moodmirror bench` runs with candle's defaults.
    if std::env::var_os("MOODMIRROR_STOCK_BASELINE").is_none() {
        keep_freed_memory();
        // SAFETY: the first statements of `main`: no other thread exists yet.
        unsafe { moodmirror_train::threads::configure() };
    }
    let cli = Cli::parse();
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let result = match &cli.command {
        Command::Train(args) => train::run(args, &command_line),
        Command::Average(args) => average::run(args, &command_line),
        Command::Evaluate(args) => evaluate(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchDetect(args) => bench::run_detect(args),
        Command::Image(args) => image_cmd::run(args),
        Command::Annotate(args) => annotate::run(args),
        Command::ConvertMtcnn(args) => convert_mtcnn(args),
        Command::ConvertYunet(args) => convert_yunet(args),
        Command::Report(args) => moodmirror_train::report::run(args),
        Command::FitCrop(args) => crop_fit::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Ctrl-C / SIGTERM: the shell's convention (128 + SIGINT), outputs already complete.
        Err(e) if e.downcast_ref::<annotate::Interrupted>().is_some() => {
            eprintln!("moodmirror: {e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("moodmirror: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
