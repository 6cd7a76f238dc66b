//! Optimizers (AdamW, SGD with Nesterov momentum, RMSProp) whose state can be saved and resumed,
//! and the learning-rate schedule (linear warm-up, then cosine decay).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum OptimizerKind {
    Adamw,
    Sgd,
    Rmsprop,
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Adamw => "adamw",
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Rmsprop => "rmsprop",
        }
    }
}

struct Param {
    name: String,
    var: Var,
    decay: bool,
    /// Per-parameter state: AdamW (m, v), SGD (momentum), RMSProp (mean square).
    slots: Vec<Tensor>,
}

pub struct Optimizer {
    kind: OptimizerKind,
    params: Vec<Param>,
    pub weight_decay: f64,
    pub step: usize,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;
const MOMENTUM: f64 = 0.9;
const RMS_ALPHA: f64 = 0.99;

impl Optimizer {
    /// Optimises every named variable except batch-norm running statistics.
    pub fn new(kind: OptimizerKind, vars: &HashMap<String, Var>, weight_decay: f64) -> Result<Self> {
        let mut names: Vec<&String> = vars.keys().filter(|n| !n.ends_with("running_mean") && !n.ends_with("running_var")).collect();
        names.sort();
        let n_slots = match kind {
            OptimizerKind::Adamw => 2,
            OptimizerKind::Sgd | OptimizerKind::Rmsprop => 1,
        };
        let params = names
            .into_iter()
            .map(|name| {
                let var = vars[name].clone();
                // Decay conv and dense kernels, not biases or batch-norm scales.
                let decay = name.ends_with("weight") && var.rank() > 1;
                let slots = (0..n_slots).map(|_| var.zeros_like()).collect::<Result<Vec<_>>>()?;
                Ok(Param { name: name.clone(), var, decay, slots })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { kind, params, weight_decay, step: 0 })
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    pub fn apply(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let theta = p.var.as_tensor();
            let wd = if p.decay { self.weight_decay } else { 0.0 };
            let new_theta = match self.kind {
                OptimizerKind::Adamw => {
                    let m = ((&p.slots[0] * BETA1)? + (g * (1.0 - BETA1))?)?;
                    let v = ((&p.slots[1] * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
                    let m_hat = (&m / (1.0 - BETA1.powi(t)))?;
                    let v_hat = (&v / (1.0 - BETA2.powi(t)))?;
                    let update = (m_hat / (v_hat.sqrt()? + EPS)?)?;
                    p.slots = vec![m, v];
                    ((theta * (1.0 - lr * wd))? - (update * lr)?)?
                }
                OptimizerKind::Sgd => {
                    let g = (g + (theta * wd)?)?;
                    let buf = ((&p.slots[0] * MOMENTUM)? + &g)?;
                    let nesterov = (g + (&buf * MOMENTUM)?)?;
                    p.slots = vec![buf];
                    (theta - (nesterov * lr)?)?
                }
                OptimizerKind::Rmsprop => {
                    let g = (g + (theta * wd)?)?;
                    let sq = ((&p.slots[0] * RMS_ALPHA)? + (g.sqr()? * (1.0 - RMS_ALPHA))?)?;
                    let update = (&g / (sq.sqrt()? + EPS)?)?;
                    p.slots = vec![sq];
                    (theta - (update * lr)?)?
                }
            };
            p.var.set(&new_theta)?;
        }
        Ok(())
    }

    /// State tensors for a checkpoint, named `optim.<slot>.<param>`.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for p in &self.params {
            for (i, s) in p.slots.iter().enumerate() {
                out.insert(format!("optim.{i}.{}", p.name), s.clone());
            }
        }
        out
    }

    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        for p in &mut self.params {
            for (i, slot) in p.slots.iter_mut().enumerate() {
                let key = format!("optim.{i}.{}", p.name);
                let t = tensors.get(&key).ok_or_else(|| candle_core::Error::Msg(format!("checkpoint lacks {key}")))?;
                if t.shape() != slot.shape() {
                    candle_core::bail!("checkpoint {key}: shape {:?}, expected {:?}", t.shape(), slot.shape());
                }
                *slot = t.to_device(slot.device())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Linear warm-up to `peak` over `warmup` steps, then cosine decay to `peak * final_fraction`.
#[derive(Debug, Clone, Copy)]
pub struct CosineSchedule {
    pub peak: f64,
    pub warmup: usize,
    pub total: usize,
    pub final_fraction: f64,
}

impl CosineSchedule {
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        let floor = self.peak * self.final_fraction;
        floor + (self.peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}
