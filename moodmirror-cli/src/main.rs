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
mod evaluate_cmd;
mod image_cmd;
mod inputs;
mod listen;
mod outputs;
mod signals;
mod stall;
mod video_eval;

use moodmirror_train::{average, bench, calibrate, crop_fit, train};

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
    Evaluate(evaluate_cmd::EvaluateArgs),
    /// Fit the temperature that makes a model's probabilities honest on validation images and
    /// write the model with it (metadata `temperature`).
    Calibrate(calibrate::CalibrateArgs),
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
    /// Subscribe to the MQTT topics moodmirrorjson publishes to and keep a live summary of every
    /// camera and track (fleet.csv and a report per camera).
    Listen(listen::ListenArgs),
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
        Command::Evaluate(args) => evaluate_cmd::run(args),
        Command::Calibrate(args) => calibrate::run(args, &command_line),
        Command::Bench(args) => bench::run(args),
        Command::BenchDetect(args) => bench::run_detect(args),
        Command::Image(args) => image_cmd::run(args),
        Command::Annotate(args) => annotate::run(args),
        Command::ConvertMtcnn(args) => convert_mtcnn(args),
        Command::ConvertYunet(args) => convert_yunet(args),
        Command::Report(args) => moodmirror_train::report::run(args),
        Command::Listen(args) => listen::run(args),
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
