//! Training, evaluation and tooling for moodmirror's models: datasets and augmentation,
//! optimisers, training and distillation, checkpoint averaging, evaluation, calibration and plots, benchmarks,
//! the crop fit, weight conversion from PyTorch/ONNX, and reports of recordings. The config
//! structs derive command-line parsers with the `clap` feature.

pub mod augment;
pub mod average;
pub mod bench;
pub mod calibrate;
pub mod calibration;
pub mod checkpoint;
pub mod convert;
pub mod crop_fit;
pub mod dataset;
pub mod distill;
pub mod evaluate;
pub mod loss;
pub mod optim;
pub mod paths;
pub mod plots;
pub mod report;
pub mod threads;
pub mod train;
pub mod train_args;
