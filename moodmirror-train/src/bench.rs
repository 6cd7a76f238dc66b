//! `moodmirror bench`: training-step and inference throughput of an emotion architecture with
//! moodmirror's CPU ops against stock candle, measured in the same run.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::optim::{Optimizer, OptimizerKind};
use crate::train::{class_weights, smoothed_weighted_ce};
use moodmirror::emotion::{Arch, EmotionNet, InputContract, NUM_CLASSES};
use moodmirror::layers::SeededInit;

#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct BenchArgs {
    /// Architecture: vgg, vgg-large, vgg-small, basic or xception.
    #[cfg_attr(feature = "clap", arg(long, default_value = "vgg"))]
    pub arch: Arch,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 64))]
    pub batch: usize,
    /// Timed training steps (median reported, after one warm-up step).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 7))]
    pub steps: usize,
    /// Timed steps for stock candle (slow).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 3))]
    pub stock_steps: usize,
    /// Inference batch (faces per call).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 32))]
    pub infer_batch: usize,
    /// Skip the stock-candle baseline.
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_stock: bool,
    /// Where to time moodmirror's variant; with `cuda` the CPU is timed too, as the baseline.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value = "cpu"))]
    pub device: crate::train::ComputeDevice,
    /// Arithmetic of moodmirror's convolution GEMMs in the training step (as `train`); with
    /// bf16 the f32 step is timed too, in the same run.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value = "bf16"))]
    pub conv_precision: crate::train::ConvPrecision,
    /// Internal: time only stock candle and print a machine-readable line.
    #[cfg_attr(feature = "clap", arg(long, hide = true))]
    pub stock_only: bool,
}

const TRAIN_IMAGES: f64 = 28_709.0;

/// The default `vgg` architecture written the way a candle user would: NCHW, `candle_nn`'s
/// conv2d, BatchNorm, max-pool and dropout. The baseline of the training-speed comparison.
struct StockVgg {
    stages: Vec<Vec<(candle_nn::Conv2d, candle_nn::BatchNorm)>>,
    fc1: candle_nn::Linear,
    fc2: candle_nn::Linear,
}

impl StockVgg {
    fn load(vb: VarBuilder) -> candle_core::Result<Self> {
        let conv_cfg = candle_nn::Conv2dConfig { padding: 1, ..Default::default() };
        let mut stages = Vec::new();
        let mut c_in = 1;
        for (i, &(c, convs)) in moodmirror::emotion::model::VggNet::STAGES.iter().enumerate() {
            let vb = vb.pp(format!("stage{i}"));
            let mut stage = Vec::new();
            for j in 0..convs {
                let conv = candle_nn::conv2d_no_bias(c_in, c, 3, conv_cfg, vb.pp(format!("{j}.conv")))?;
                let bn = candle_nn::batch_norm(c, 1e-5, vb.pp(format!("{j}.bn")))?;
                stage.push((conv, bn));
                c_in = c;
            }
            stages.push(stage);
        }
        Ok(Self { stages, fc1: candle_nn::linear(c_in * 9, 256, vb.pp("fc1"))?, fc2: candle_nn::linear(256, NUM_CLASSES, vb.pp("fc2"))? })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        use candle_nn::{Module, ModuleT};
        let mut x = x.clone();
        for (i, stage) in self.stages.iter().enumerate() {
            for (conv, bn) in stage {
                x = bn.forward_t(&conv.forward(&x)?, train)?.relu()?;
            }
            x = x.max_pool2d(2)?;
            if i >= 1 && train {
                x = candle_nn::ops::dropout(&x, 0.1 * i as f32)?;
            }
        }
        let x = x.flatten_from(1)?;
        let x = self.fc1.forward(&x)?.relu()?;
        let x = if train { candle_nn::ops::dropout(&x, 0.5)? } else { x };
        self.fc2.forward(&x)
    }
}

/// Which implementation a timing runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Ours,
    Stock,
}

type Forward = Box<dyn Fn(&Tensor, bool) -> candle_core::Result<Tensor>>;

/// The network of a variant as a `forward(x, train)` closure.
/// The network as a closure; `inference` freezes ours for inference, as the classifier does.
fn load_net(arch: Arch, variant: Variant, vb: VarBuilder, inference: bool) -> Result<Forward> {
    Ok(match variant {
        Variant::Ours => {
            let mut net = EmotionNet::load(vb, arch)?;
            if inference {
                net.freeze_for_inference()?;
            }
            Box::new(move |x, train| net.forward_t(x, train))
        }
        Variant::Stock => {
            if arch != Arch::Vgg {
                anyhow::bail!("the stock-candle baseline is written for --arch vgg");
            }
            let net = StockVgg::load(vb)?;
            Box::new(move |x, train| net.forward_t(x, train))
        }
    })
}

/// Seconds per training step (forward, backward, AdamW) on random data; `bf16`: the
/// convolutions' GEMMs in bf16, as `train` runs them by default.
fn time_train_steps(arch: Arch, variant: Variant, batch: usize, steps: usize, device: &Device, bf16: bool) -> Result<Vec<f64>> {
    let varmap = VarMap::new();
    let vb = SeededInit::varbuilder(&varmap, 1, device);
    let net = load_net(arch, variant, vb, false)?;
    let vars = varmap.data().lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut opt = Optimizer::new(OptimizerKind::Adamw, &vars, 1e-4)?;
    let s = InputContract::SIZE;
    let x = Tensor::randn(0f32, 1.0, (batch, 1, s, s), device)?;
    let labels: Vec<u8> = (0..batch).map(|i| (i % NUM_CLASSES) as u8).collect();
    let weights = class_weights(&[1; NUM_CLASSES], 0.0);
    let mut step = || -> Result<()> {
        let logits = net(&x, true)?;
        let loss = smoothed_weighted_ce(&logits, &labels, &weights, 0.1)?;
        let grads = loss.backward()?;
        opt.apply(&grads, 1e-3)?;
        // Reading the loss waits for the queued GPU work (one stream); free on the CPU.
        loss.to_scalar::<f32>()?;
        Ok(())
    };
    moodmirror::ops::with_bf16_matmul(bf16, || {
        step()?;
        time_runs(steps, step)
    })
}

/// Wall times of repeated runs: the median is what is compared (robust to the noisy neighbours
/// of a shared VM); the range shows how noisy the machine was.
#[derive(Debug, Clone, Copy)]
struct Timing {
    median: f64,
    min: f64,
    max: f64,
}

/// Seconds of each of `runs` calls.
fn time_runs(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times)
}

impl Timing {
    fn of(mut times: Vec<f64>) -> Self {
        times.sort_by(f64::total_cmp);
        Timing { median: times[times.len() / 2], min: times[0], max: times[times.len() - 1] }
    }
}

/// Median wall time of `runs` calls.
fn median_seconds(runs: usize, f: impl FnMut() -> Result<()>) -> Result<f64> {
    Ok(Timing::of(time_runs(runs, f)?).median)
}

/// Seconds per inference call on `batch` faces.
fn time_inference(arch: Arch, variant: Variant, batch: usize, calls: usize, device: &Device) -> Result<f64> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let net = load_net(arch, variant, vb, true)?;
    let s = InputContract::SIZE;
    let x = Tensor::randn(0f32, 1.0, (batch, 1, s, s), device)?.detach();
    let run = || -> Result<()> {
        let p = candle_nn::ops::softmax_last_dim(&net(&x, false)?.detach())?;
        let _ = p.to_vec2::<f32>()?;
        Ok(())
    };
    run()?;
    median_seconds(calls, run)
}

/// Seconds per inference call of the int8 network with `kernel` (`None`: no int8 version of
/// `arch`).
fn time_int8_inference(arch: Arch, kernel: moodmirror::ops::int8::Int8Kernel, batch: usize, calls: usize) -> Result<Option<f64>> {
    use moodmirror::emotion::int8::Int8VggNet;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut net = EmotionNet::load(vb, arch)?;
    net.freeze_for_inference()?;
    let Some(mut net) = Int8VggNet::quantize(&net, kernel)? else {
        return Ok(None);
    };
    let s = InputContract::SIZE;
    let x = Tensor::randn(0f32, 1.0, (batch, 1, s, s), &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    let mut run = || -> Result<()> {
        let p = candle_nn::ops::softmax_last_dim(&net.forward_slice(&x, batch)?)?;
        let _ = p.to_vec2::<f32>()?;
        Ok(())
    };
    run()?;
    Ok(Some(median_seconds(calls, run)?))
}

fn epoch_minutes(batch: usize, step_seconds: f64) -> f64 {
    TRAIN_IMAGES / (batch as f64 / step_seconds) / 60.0
}

fn print_row(name: &str, batch: usize, train: Timing, infer_batch: usize, infer: f64) {
    println!(
        "{name:<44} train {:7.3} s/step (range {:.3}–{:.3}) {:7.1} img/s ({:5.1} min/epoch) | inference {:7.0} faces/s",
        train.median,
        train.min,
        train.max,
        batch as f64 / train.median,
        epoch_minutes(batch, train.median),
        infer_batch as f64 / infer
    );
}

/// Times one variant; `(train seconds of each step, inference seconds per call)`.
fn time_variant(args: &BenchArgs, variant: Variant, device: &Device) -> Result<(Vec<f64>, f64)> {
    let steps = if variant == Variant::Ours { args.steps } else { args.stock_steps };
    let bf16 = variant == Variant::Ours && args.conv_precision.uses_bf16() && device.is_cpu();
    let train = time_train_steps(args.arch, variant, args.batch, steps, device, bf16)?;
    let infer = time_inference(args.arch, variant, args.infer_batch, if variant == Variant::Ours { 20 } else { 10 }, device)?;
    Ok((train, infer))
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.stock_only {
        // Child process of a full run: machine-readable result only.
        let (train, infer) = time_variant(args, Variant::Stock, &Device::Cpu)?;
        let train = Timing::of(train);
        println!("STOCK {} {} {} {infer}", train.median, train.min, train.max);
        return Ok(());
    }
    println!(
        "arch {}, batch {}, inference batch {}, {} threads",
        args.arch.name(),
        args.batch,
        args.infer_batch,
        candle_core::utils::get_num_threads()
    );
    if args.device == crate::train::ComputeDevice::Cuda {
        let gpu = args.device.device()?;
        let (gpu_train, gpu_infer) = time_variant(args, Variant::Ours, &gpu)?;
        let gpu_train = Timing::of(gpu_train);
        print_row("CUDA GPU 0 (candle kernels)", args.batch, gpu_train, args.infer_batch, gpu_infer);
        let (cpu_train, cpu_infer) = time_variant(args, Variant::Ours, &Device::Cpu)?;
        let cpu_train = Timing::of(cpu_train);
        print_row("CPU (moodmirror ops)", args.batch, cpu_train, args.infer_batch, cpu_infer);
        println!("GPU over CPU: training step {:.2}x, inference {:.2}x", cpu_train.median / gpu_train.median, cpu_infer / gpu_infer);
        return Ok(());
    }
    let (mut ours_steps, ours_infer) = time_variant(args, Variant::Ours, &Device::Cpu)?;
    let bf16 = args.conv_precision.uses_bf16();
    let ours_name = if bf16 { "moodmirror ops + settings (bf16 GEMM)" } else { "moodmirror ops + settings" };
    let ours = Timing::of(ours_steps.clone());
    print_row(ours_name, args.batch, ours, args.infer_batch, ours_infer);
    if bf16 {
        let f32_step = Timing::of(time_train_steps(args.arch, Variant::Ours, args.batch, args.steps, &Device::Cpu, false)?);
        println!(
            "{:<44} train {:7.3} s/step (range {:.3}–{:.3}): bf16 GEMM step {:.2}x faster",
            "moodmirror ops, f32 GEMM",
            f32_step.median,
            f32_step.min,
            f32_step.max,
            f32_step.median / ours.median
        );
    }
    // One row per int8 kernel this CPU runs (AVX-512 VNNI, AVX-VNNI, AVX2), same run as f32;
    // the element takes the first, or the one MOODMIRROR_INT8_KERNEL names.
    for kernel in moodmirror::ops::int8::Int8Kernel::available() {
        if let Some(int8) = time_int8_inference(args.arch, kernel, args.infer_batch, 20)? {
            println!(
                "{:<44} inference {:7.0} faces/s ({:.2}x f32, same run)",
                format!("moodmirror int8 ({})", kernel.name()),
                args.infer_batch as f64 / int8,
                ours_infer / int8
            );
        }
    }
    if args.no_stock {
        return Ok(());
    }
    // Same process, same allocator and threads: what the ops alone buy.
    let (same_alloc, same_alloc_infer) = time_variant(args, Variant::Stock, &Device::Cpu)?;
    let same_alloc = Timing::of(same_alloc);
    print_row("stock candle (same process settings)", args.batch, same_alloc, args.infer_batch, same_alloc_infer);
    // Stock candle as users run it: candle_nn layers, the system allocator and candle's own
    // thread-count lookup (a child process, since the allocator is chosen at start-up).
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe);
    child
        .args(["bench", "--stock-only", "--arch", args.arch.name()])
        .args(["--batch", &args.batch.to_string(), "--stock-steps", &args.stock_steps.to_string()])
        .args(["--infer-batch", &args.infer_batch.to_string()])
        .env("MOODMIRROR_ALLOCATOR", "system")
        .env("MOODMIRROR_STOCK_BASELINE", "1");
    if crate::threads::set_by_us() {
        child.env_remove("RAYON_NUM_THREADS");
    }
    let output = child.output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let stock = text.lines().find_map(|l| l.strip_prefix("STOCK ")).and_then(|l| {
        let v: Vec<f64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        (v.len() == 4).then(|| (Timing { median: v[0], min: v[1], max: v[2] }, v[3]))
    });
    let Some((stock, stock_infer)) = stock else {
        anyhow::bail!("stock baseline failed: {}", String::from_utf8_lossy(&output.stderr));
    };
    print_row("stock candle (as shipped: defaults)", args.batch, stock, args.infer_batch, stock_infer);
    // Ours again after the baselines: its steps then span the same minutes as stock's, so a
    // slow or fast phase of this shared VM weighs on both sides of the ratio.
    ours_steps.extend(time_train_steps(args.arch, Variant::Ours, args.batch, args.steps, &Device::Cpu, bf16)?);
    let ours = Timing::of(ours_steps);
    println!(
        "{:<44} train {:7.3} s/step (range {:.3}–{:.3}) over {} steps, before and after the baselines",
        ours_name,
        ours.median,
        ours.min,
        ours.max,
        2 * args.steps
    );
    println!(
        "speedup of a training step: {:.2}x over stock candle ({:.2}x with the same process settings); inference {:.2}x ({:.2}x)",
        stock.median / ours.median,
        same_alloc.median / ours.median,
        stock_infer / ours_infer,
        same_alloc_infer / ours_infer
    );
    println!(
        "(medians; the ranges show this machine's noise: the ratio spans {:.2}x–{:.2}x between the slowest and fastest steps)",
        stock.min / ours.max,
        stock.max / ours.min
    );
    Ok(())
}

/// `moodmirror bench-detect`: full face detection on one frame, median of repeated runs.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct DetectBenchArgs {
    /// Detector: yunet, mtcnn or haar.
    #[cfg_attr(feature = "clap", arg(long, default_value = "yunet"))]
    pub detector: moodmirror::detect::DetectorKind,
    /// Photo placed (scaled to fit, centred, black borders) in the frame.
    #[cfg_attr(feature = "clap", arg(long, default_value = "tests/fixtures/astronaut.png"))]
    pub image: std::path::PathBuf,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1280))]
    pub width: usize,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 720))]
    pub height: usize,
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 40))]
    pub min_face_size: usize,
    /// Timed runs (median reported, after one warm-up run).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 21))]
    pub runs: usize,
}

/// `image` scaled to fit a `width` x `height` frame, centred on black: what the element sees
/// after `videoscale add-borders=true`.
pub fn letterbox(image: &image::RgbImage, width: usize, height: usize) -> image::RgbImage {
    let scale = (width as f64 / image.width() as f64).min(height as f64 / image.height() as f64);
    let (w, h) = ((image.width() as f64 * scale).round() as u32, (image.height() as f64 * scale).round() as u32);
    let resized = image::imageops::resize(image, w.max(1), h.max(1), image::imageops::FilterType::Triangle);
    let mut frame = image::RgbImage::new(width as u32, height as u32);
    image::imageops::overlay(
        &mut frame,
        &resized,
        ((width as u32 - w.min(width as u32)) / 2).into(),
        ((height as u32 - h.min(height as u32)) / 2).into(),
    );
    frame
}

pub fn run_detect(args: &DetectBenchArgs) -> Result<()> {
    use moodmirror::detect::{DetectParams, Detector};
    let photo = image::open(&args.image).map_err(|e| anyhow::anyhow!("{}: {e}", args.image.display()))?.into_rgb8();
    let frame = letterbox(&photo, args.width, args.height);
    let (w, h) = (args.width, args.height);
    let mut gray_buf = Vec::new();
    let layout = moodmirror::image::PixelLayout::Packed { r: 0, g: 1, b: 2, bytes_per_pixel: 3 };
    let gray = moodmirror::image::luma(frame.as_raw(), w * 3, w, h, layout, &mut gray_buf);
    let rgb = moodmirror::detect::RgbImage { data: frame.as_raw(), width: w, height: h, stride: w * 3 };
    let mut detector = Detector::new(args.detector, &Device::Cpu)?;
    let params = DetectParams { min_size: args.min_face_size, ..Default::default() };
    let mut faces = Vec::new();
    let mut stages = Vec::new();
    let mut detect = || -> Result<()> {
        detector.detect(&gray, Some(&rgb), &params, &mut faces)?;
        if let Detector::Mtcnn(m) = &detector {
            stages.push(m.last_times);
        }
        Ok(())
    };
    detect()?;
    let median = median_seconds(args.runs, &mut detect)? * 1e3;
    println!(
        "{} on {w}x{h} (min-face-size {}, {} threads): median {median:.1} ms per frame over {} runs, {} faces",
        args.detector.nick(),
        args.min_face_size,
        candle_core::utils::get_num_threads(),
        args.runs.max(1),
        faces.len()
    );
    // Re-finding those faces, as between full detections (YuNet: one crop each; MTCNN: O-Net).
    if !faces.is_empty() && detector.needs_color() {
        let previous = faces.clone();
        let mut tracked = Vec::new();
        let mut track = || -> Result<()> { Ok(detector.track(&rgb, &previous, &mut tracked)?) };
        track()?;
        let median = median_seconds(args.runs, &mut track)? * 1e3;
        println!("  tracking the {} faces: median {median:.2} ms per frame ({} re-found)", previous.len(), tracked.len());
    }
    if !stages.is_empty() {
        let med = |f: fn(&moodmirror::detect::mtcnn::StageTimes) -> f64| {
            let mut v: Vec<f64> = stages.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "  stages (median ms): pyramid resampling {:.1}, P-Net {:.1}, R-Net {:.1} ({} boxes), O-Net {:.1} ({} boxes)",
            med(|t| t.pyramid),
            med(|t| t.pnet),
            med(|t| t.rnet),
            stages[0].rnet_in,
            med(|t| t.onet),
            stages[0].onet_in
        );
    }
    Ok(())
}
