//! `moodmirror bench`: training-step and inference throughput of an emotion architecture with
//! moodmirror's CPU ops against stock candle, measured in the same run.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::emotion::layers::SeededInit;
use crate::emotion::{Arch, EmotionNet, InputContract, NUM_CLASSES};
use crate::ops;
use crate::optim::{Optimizer, OptimizerKind};
use crate::train::{class_weights, smoothed_weighted_ce};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value = "vgg")]
    pub arch: Arch,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Timed training steps per variant (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Timed steps for stock candle (slow).
    #[arg(long, default_value_t = 2)]
    pub stock_steps: usize,
    /// Inference batch (faces per call).
    #[arg(long, default_value_t = 32)]
    pub infer_batch: usize,
    /// Skip the stock-candle baseline.
    #[arg(long)]
    pub no_stock: bool,
}

const TRAIN_IMAGES: f64 = 28_709.0;

/// Seconds per training step (forward, backward, AdamW) on random data.
fn time_train_steps(arch: Arch, batch: usize, steps: usize) -> Result<f64> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let net = EmotionNet::load(SeededInit::varbuilder(&varmap, 1, &device), arch)?;
    let vars = varmap.data().lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut opt = Optimizer::new(OptimizerKind::Adamw, &vars, 1e-4)?;
    let s = InputContract::SIZE;
    let x = Tensor::randn(0f32, 1.0, (batch, 1, s, s), &device)?;
    let labels: Vec<u8> = (0..batch).map(|i| (i % NUM_CLASSES) as u8).collect();
    let weights = class_weights(&[1; NUM_CLASSES], 0.0);
    let mut step = || -> Result<()> {
        let logits = net.forward_t(&x, true)?;
        let loss = smoothed_weighted_ce(&logits, &labels, &weights, 0.1)?;
        let grads = loss.backward()?;
        opt.apply(&grads, 1e-3)?;
        Ok(())
    };
    step()?;
    let t = Instant::now();
    for _ in 0..steps.max(1) {
        step()?;
    }
    Ok(t.elapsed().as_secs_f64() / steps.max(1) as f64)
}

/// Seconds per inference call on `batch` faces.
fn time_inference(arch: Arch, batch: usize, calls: usize) -> Result<f64> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let net = EmotionNet::load(VarBuilder::from_varmap(&varmap, DType::F32, &device), arch)?;
    let s = InputContract::SIZE;
    let x = Tensor::randn(0f32, 1.0, (batch, 1, s, s), &device)?.detach();
    let run = || -> Result<()> {
        let p = candle_nn::ops::softmax_last_dim(&net.forward_t(&x, false)?.detach())?;
        let _ = p.to_vec2::<f32>()?;
        Ok(())
    };
    run()?;
    let t = Instant::now();
    for _ in 0..calls {
        run()?;
    }
    Ok(t.elapsed().as_secs_f64() / calls as f64)
}

pub fn run(args: &BenchArgs) -> Result<()> {
    println!(
        "arch {}, batch {}, {} threads",
        args.arch.name(),
        args.batch,
        candle_core::utils::get_num_threads()
    );
    ops::use_stock_candle(false);
    let ours = time_train_steps(args.arch, args.batch, args.steps)?;
    let ours_rate = args.batch as f64 / ours;
    println!(
        "train step  moodmirror ops: {:8.3} s/step {:8.1} img/s  epoch of 28,709 images: {:6.1} min",
        ours,
        ours_rate,
        TRAIN_IMAGES / ours_rate / 60.0
    );
    let infer = time_inference(args.arch, args.infer_batch, 20)?;
    println!(
        "inference   moodmirror ops: {:8.2} ms per batch of {} = {:8.0} faces/s",
        infer * 1e3,
        args.infer_batch,
        args.infer_batch as f64 / infer
    );
    if !args.no_stock {
        ops::use_stock_candle(true);
        let stock = time_train_steps(args.arch, args.batch, args.stock_steps);
        let stock_infer = time_inference(args.arch, args.infer_batch, 10);
        ops::use_stock_candle(false);
        match stock {
            Ok(stock) => {
                let rate = args.batch as f64 / stock;
                println!(
                    "train step  stock candle:    {:8.3} s/step {:8.1} img/s  epoch of 28,709 images: {:6.1} min",
                    stock,
                    rate,
                    TRAIN_IMAGES / rate / 60.0
                );
                println!("speedup (training step): {:.2}x", stock / ours);
            }
            Err(e) => println!("train step  stock candle: not possible ({e})"),
        }
        if let Ok(stock_infer) = stock_infer {
            println!(
                "inference   stock candle:    {:8.2} ms per batch = {:8.0} faces/s (speedup {:.2}x)",
                stock_infer * 1e3,
                args.infer_batch as f64 / stock_infer,
                stock_infer / infer
            );
        }
    }
    Ok(())
}
