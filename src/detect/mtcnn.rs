//! MTCNN (Zhang et al. 2016) on candle: P-Net proposals over an image pyramid, R-Net and O-Net
//! refinement with box regression, O-Net's five landmarks; the algorithm and constants of
//! facenet-pytorch's `detect_face`, whose MIT-licensed weights we convert
//! (`moodmirror convert-mtcnn`, see weights/README.md).

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Conv2d, Linear, PReLU, VarBuilder};

use super::{DetectParams, Face};

/// The converted weights (prefixes `pnet.`, `rnet.`, `onet.`), embedded.
pub static MTCNN_WEIGHTS: &[u8] = include_bytes!("../../weights/mtcnn.safetensors");

/// An RGB image, 3 bytes per pixel, rows `stride` bytes apart.
#[derive(Debug, Clone, Copy)]
pub struct RgbImage<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub stride: usize,
}

fn conv(vb: &VarBuilder, name: &str, c_in: usize, c_out: usize, k: usize) -> candle_core::Result<Conv2d> {
    candle_nn::conv2d(c_in, c_out, k, Default::default(), vb.pp(name))
}

fn prelu(vb: &VarBuilder, name: &str, c: usize) -> candle_core::Result<PReLU> {
    candle_nn::prelu(Some(c), vb.pp(name))
}

/// PyTorch's `MaxPool2d(k, s, ceil_mode=True)`: pad the far edges by replicating them (which
/// never changes a window's maximum) so that floor-mode pooling covers the partial windows.
fn max_pool_ceil(x: &Tensor, k: usize, s: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    // ceil-mode output length, and the padding that makes floor mode reach it.
    let pad = |n: usize| ((n.saturating_sub(k)).div_ceil(s) * s + k).saturating_sub(n);
    let (pad_h, pad_w) = (pad(h), pad(w));
    let x = if pad_h > 0 { x.pad_with_same(2, 0, pad_h)? } else { x.clone() };
    let x = if pad_w > 0 { x.pad_with_same(3, 0, pad_w)? } else { x };
    x.max_pool2d_with_stride(k, s)
}

/// PyTorch flattens (N, C, H, W) after permuting to (N, W, H, C) in R-Net and O-Net.
fn flatten_whc(x: &Tensor) -> candle_core::Result<Tensor> {
    let n = x.dim(0)?;
    x.permute((0, 3, 2, 1))?.contiguous()?.reshape((n, ()))
}

pub struct PNet {
    convs: [Conv2d; 3],
    prelus: [PReLU; 3],
    conv4_1: Conv2d,
    conv4_2: Conv2d,
}

impl PNet {
    pub fn load(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            convs: [conv(&vb, "conv1", 3, 10, 3)?, conv(&vb, "conv2", 10, 16, 3)?, conv(&vb, "conv3", 16, 32, 3)?],
            prelus: [prelu(&vb, "prelu1", 10)?, prelu(&vb, "prelu2", 16)?, prelu(&vb, "prelu3", 32)?],
            conv4_1: conv(&vb, "conv4_1", 32, 2, 1)?,
            conv4_2: conv(&vb, "conv4_2", 32, 4, 1)?,
        })
    }

    /// (1, 3, H, W) → (regression (1, 4, h, w), face probability (1, h, w)).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let x = self.prelus[0].forward(&self.convs[0].forward(x)?)?;
        let x = max_pool_ceil(&x, 2, 2)?;
        let x = self.prelus[1].forward(&self.convs[1].forward(&x)?)?;
        let x = self.prelus[2].forward(&self.convs[2].forward(&x)?)?;
        let prob = candle_nn::ops::softmax(&self.conv4_1.forward(&x)?, 1)?.narrow(1, 1, 1)?.squeeze(1)?;
        Ok((self.conv4_2.forward(&x)?, prob))
    }
}

pub struct RNet {
    convs: [Conv2d; 3],
    prelus: [PReLU; 4],
    dense4: Linear,
    dense5_1: Linear,
    dense5_2: Linear,
}

impl RNet {
    pub fn load(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            convs: [conv(&vb, "conv1", 3, 28, 3)?, conv(&vb, "conv2", 28, 48, 3)?, conv(&vb, "conv3", 48, 64, 2)?],
            prelus: [prelu(&vb, "prelu1", 28)?, prelu(&vb, "prelu2", 48)?, prelu(&vb, "prelu3", 64)?, prelu(&vb, "prelu4", 128)?],
            dense4: candle_nn::linear(576, 128, vb.pp("dense4"))?,
            dense5_1: candle_nn::linear(128, 2, vb.pp("dense5_1"))?,
            dense5_2: candle_nn::linear(128, 4, vb.pp("dense5_2"))?,
        })
    }

    /// (N, 3, 24, 24) → (regression (N, 4), face probability (N)).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let x = max_pool_ceil(&self.prelus[0].forward(&self.convs[0].forward(x)?)?, 3, 2)?;
        let x = max_pool_ceil(&self.prelus[1].forward(&self.convs[1].forward(&x)?)?, 3, 2)?;
        let x = self.prelus[2].forward(&self.convs[2].forward(&x)?)?;
        let x = self.prelus[3].forward(&self.dense4.forward(&flatten_whc(&x)?)?)?;
        let prob = candle_nn::ops::softmax(&self.dense5_1.forward(&x)?, D::Minus1)?.narrow(1, 1, 1)?.squeeze(1)?;
        Ok((self.dense5_2.forward(&x)?, prob))
    }
}

pub struct ONet {
    convs: [Conv2d; 4],
    prelus: [PReLU; 5],
    dense5: Linear,
    dense6_1: Linear,
    dense6_2: Linear,
    dense6_3: Linear,
}

impl ONet {
    pub fn load(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            convs: [
                conv(&vb, "conv1", 3, 32, 3)?,
                conv(&vb, "conv2", 32, 64, 3)?,
                conv(&vb, "conv3", 64, 64, 3)?,
                conv(&vb, "conv4", 64, 128, 2)?,
            ],
            prelus: [
                prelu(&vb, "prelu1", 32)?,
                prelu(&vb, "prelu2", 64)?,
                prelu(&vb, "prelu3", 64)?,
                prelu(&vb, "prelu4", 128)?,
                prelu(&vb, "prelu5", 256)?,
            ],
            dense5: candle_nn::linear(1152, 256, vb.pp("dense5"))?,
            dense6_1: candle_nn::linear(256, 2, vb.pp("dense6_1"))?,
            dense6_2: candle_nn::linear(256, 4, vb.pp("dense6_2"))?,
            dense6_3: candle_nn::linear(256, 10, vb.pp("dense6_3"))?,
        })
    }

    /// (N, 3, 48, 48) → (regression (N, 4), landmarks (N, 10), face probability (N)).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let x = max_pool_ceil(&self.prelus[0].forward(&self.convs[0].forward(x)?)?, 3, 2)?;
        let x = max_pool_ceil(&self.prelus[1].forward(&self.convs[1].forward(&x)?)?, 3, 2)?;
        let x = max_pool_ceil(&self.prelus[2].forward(&self.convs[2].forward(&x)?)?, 2, 2)?;
        let x = self.prelus[3].forward(&self.convs[3].forward(&x)?)?;
        let x = self.prelus[4].forward(&self.dense5.forward(&flatten_whc(&x)?)?)?;
        let prob = candle_nn::ops::softmax(&self.dense6_1.forward(&x)?, D::Minus1)?.narrow(1, 1, 1)?.squeeze(1)?;
        Ok((self.dense6_2.forward(&x)?, self.dense6_3.forward(&x)?, prob))
    }
}

/// A candidate box in image pixels (x1, y1, x2, y2), its score and regression.
#[derive(Debug, Clone, Copy, Default)]
struct Candidate {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
    landmarks: [[f32; 2]; 5],
}

/// PyTorch's `interpolate(mode="area")` (adaptive average pooling) of the RGB region
/// `[x0, x1) x [y0, y1)` of `img` to `out_w` x `out_h`, normalised as MTCNN wants, written as CHW.
#[allow(clippy::too_many_arguments)]
fn area_resample(img: &RgbImage, x0: usize, y0: usize, x1: usize, y1: usize, out_w: usize, out_h: usize, out: &mut [f32]) {
    let (w, h) = (x1 - x0, y1 - y0);
    let plane = out_w * out_h;
    for oy in 0..out_h {
        let ys = y0 + oy * h / out_h;
        let ye = y0 + ((oy + 1) * h).div_ceil(out_h);
        for ox in 0..out_w {
            let xs = x0 + ox * w / out_w;
            let xe = x0 + ((ox + 1) * w).div_ceil(out_w);
            let mut acc = [0f32; 3];
            for y in ys..ye {
                let row = &img.data[y * img.stride..];
                for x in xs..xe {
                    acc[0] += row[x * 3] as f32;
                    acc[1] += row[x * 3 + 1] as f32;
                    acc[2] += row[x * 3 + 2] as f32;
                }
            }
            let n = ((ye - ys) * (xe - xs)) as f32;
            for (c, a) in acc.iter().enumerate() {
                out[c * plane + oy * out_w + ox] = (a / n - 127.5) * 0.0078125;
            }
        }
    }
}

fn area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// Greedy non-maximum suppression. `plus_one` and `min_overlap` select the numpy variant of
/// the final stage ("Min": intersection over the smaller box, areas with +1).
fn nms(cands: &mut Vec<Candidate>, threshold: f32, min_overlap: bool) {
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Candidate> = Vec::with_capacity(cands.len());
    let one = if min_overlap { 1.0 } else { 0.0 };
    for c in cands.iter() {
        let suppressed = keep.iter().any(|k| {
            let iw = (c.b[2].min(k.b[2]) - c.b[0].max(k.b[0]) + one).max(0.0);
            let ih = (c.b[3].min(k.b[3]) - c.b[1].max(k.b[1]) + one).max(0.0);
            let inter = iw * ih;
            let (ac, ak) = if min_overlap {
                ((c.b[2] - c.b[0] + 1.0) * (c.b[3] - c.b[1] + 1.0), (k.b[2] - k.b[0] + 1.0) * (k.b[3] - k.b[1] + 1.0))
            } else {
                (area(&c.b), area(&k.b))
            };
            let o = if min_overlap { inter / ac.min(ak) } else { inter / (ac + ak - inter) };
            o > threshold
        });
        if !suppressed {
            keep.push(*c);
        }
    }
    *cands = keep;
}

/// Makes boxes square around their centre (`rerec`).
fn square(c: &mut Candidate) {
    let (w, h) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
    let l = w.max(h);
    c.b[0] += w * 0.5 - l * 0.5;
    c.b[1] += h * 0.5 - l * 0.5;
    c.b[2] = c.b[0] + l;
    c.b[3] = c.b[1] + l;
}

/// Integer crop window of a box, clipped as facenet-pytorch's `pad` (1-based, inclusive end).
fn crop_window(c: &Candidate, w: usize, h: usize) -> Option<(usize, usize, usize, usize)> {
    let x = (c.b[0].trunc() as i64).max(1);
    let y = (c.b[1].trunc() as i64).max(1);
    let ex = (c.b[2].trunc() as i64).min(w as i64);
    let ey = (c.b[3].trunc() as i64).min(h as i64);
    (ex > x - 1 && ey > y - 1).then(|| ((x - 1) as usize, (y - 1) as usize, ex as usize, ey as usize))
}

pub struct Mtcnn {
    pnet: PNet,
    rnet: RNet,
    onet: ONet,
    device: Device,
    pub thresholds: [f32; 3],
    pub factor: f32,
    input: Vec<f32>,
}

impl Mtcnn {
    pub fn load(bytes: &[u8], device: &Device) -> candle_core::Result<Self> {
        let vb = VarBuilder::from_slice_safetensors(bytes, DType::F32, device)?;
        Ok(Self {
            pnet: PNet::load(vb.pp("pnet"))?,
            rnet: RNet::load(vb.pp("rnet"))?,
            onet: ONet::load(vb.pp("onet"))?,
            device: device.clone(),
            thresholds: [0.6, 0.7, 0.7],
            factor: 0.709,
            input: Vec::new(),
        })
    }

    pub fn embedded(device: &Device) -> candle_core::Result<Self> {
        Self::load(MTCNN_WEIGHTS, device)
    }

    /// Runs the refinement net `size` on crops of `cands` (in place: keeps those that pass).
    fn refine(&mut self, img: &RgbImage, cands: &mut Vec<Candidate>, size: usize, stage: usize) -> candle_core::Result<()> {
        let plane = 3 * size * size;
        let mut kept = Vec::with_capacity(cands.len());
        self.input.clear();
        for c in cands.iter() {
            if let Some((x0, y0, x1, y1)) = crop_window(c, img.width, img.height) {
                let start = self.input.len();
                self.input.resize(start + plane, 0.0);
                area_resample(img, x0, y0, x1, y1, size, size, &mut self.input[start..]);
                kept.push(*c);
            }
        }
        *cands = kept;
        if cands.is_empty() {
            return Ok(());
        }
        let n = cands.len();
        let x = Tensor::from_slice(&self.input, (n, 3, size, size), &self.device)?;
        let (reg, points, prob) = if stage == 1 {
            let (reg, prob) = self.rnet.forward(&x)?;
            (reg, None, prob)
        } else {
            let (reg, points, prob) = self.onet.forward(&x)?;
            (reg, Some(points.to_vec2::<f32>()?), prob)
        };
        let reg = reg.to_vec2::<f32>()?;
        let prob = prob.to_vec1::<f32>()?;
        let mut next = Vec::with_capacity(n);
        for (i, c) in cands.iter().enumerate() {
            if prob[i] > self.thresholds[stage] {
                let mut c = *c;
                c.score = prob[i];
                c.reg.copy_from_slice(&reg[i]);
                if let Some(points) = &points {
                    let (w, h) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
                    for k in 0..5 {
                        c.landmarks[k] = [w * points[i][k] + c.b[0] - 1.0, h * points[i][5 + k] + c.b[1] - 1.0];
                    }
                }
                next.push(c);
            }
        }
        *cands = next;
        Ok(())
    }

    /// Faces of `img` with boxes, probabilities and landmarks.
    pub fn detect(&mut self, img: &RgbImage, params: &DetectParams, faces: &mut Vec<Face>) -> candle_core::Result<()> {
        faces.clear();
        let (w, h) = (img.width, img.height);
        if w < 12 || h < 12 {
            return Ok(());
        }
        let min_size = params.min_size.max(12) as f32;
        let m = 12.0 / min_size;
        let mut min_l = w.min(h) as f32 * m;
        let mut scale = m;
        let mut all: Vec<Candidate> = Vec::new();
        while min_l >= 12.0 {
            let (sh, sw) = ((h as f32 * scale + 1.0) as usize, (w as f32 * scale + 1.0) as usize);
            self.input.clear();
            self.input.resize(3 * sh * sw, 0.0);
            area_resample(img, 0, 0, w, h, sw, sh, &mut self.input);
            let x = Tensor::from_slice(&self.input, (1, 3, sh, sw), &self.device)?;
            let (reg, prob) = self.pnet.forward(&x)?;
            let prob = prob.squeeze(0)?.to_vec2::<f32>()?;
            let reg = reg.squeeze(0)?.to_vec3::<f32>()?;
            let mut at_scale = Vec::new();
            for (y, row) in prob.iter().enumerate() {
                for (x, &p) in row.iter().enumerate() {
                    if p >= self.thresholds[0] {
                        let q1 = [((2 * x + 1) as f32 / scale).floor(), ((2 * y + 1) as f32 / scale).floor()];
                        let q2 = [((2 * x + 12) as f32 / scale).floor(), ((2 * y + 12) as f32 / scale).floor()];
                        at_scale.push(Candidate {
                            b: [q1[0], q1[1], q2[0], q2[1]],
                            score: p,
                            reg: [reg[0][y][x], reg[1][y][x], reg[2][y][x], reg[3][y][x]],
                            ..Default::default()
                        });
                    }
                }
            }
            nms(&mut at_scale, 0.5, false);
            all.extend(at_scale);
            scale *= self.factor;
            min_l *= self.factor;
        }
        nms(&mut all, 0.7, false);
        for c in &mut all {
            let (rw, rh) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
            c.b = [c.b[0] + c.reg[0] * rw, c.b[1] + c.reg[1] * rh, c.b[2] + c.reg[2] * rw, c.b[3] + c.reg[3] * rh];
            square(c);
        }
        self.refine(img, &mut all, 24, 1)?;
        nms(&mut all, 0.7, false);
        for c in &mut all {
            regress(c);
            square(c);
        }
        self.refine(img, &mut all, 48, 2)?;
        for c in &mut all {
            regress(c);
        }
        nms(&mut all, 0.7, true);
        faces.extend(all.iter().take(params.max_faces).map(to_face));
        Ok(())
    }

    /// Re-finds faces near `previous` boxes (tracking between full detections): each box,
    /// squared and enlarged 10 %, goes straight through O-Net; those still faces come back with
    /// the regressed box and new landmarks.
    pub fn track(&mut self, img: &RgbImage, previous: &[Face], faces: &mut Vec<Face>) -> candle_core::Result<()> {
        faces.clear();
        let mut cands: Vec<Candidate> = previous
            .iter()
            .map(|f| {
                let m = 0.1 * f.width.max(f.height) as f32;
                let mut c = Candidate {
                    b: [f.x as f32 - m, f.y as f32 - m, (f.x + f.width) as f32 + m, (f.y + f.height) as f32 + m],
                    ..Default::default()
                };
                square(&mut c);
                c
            })
            .collect();
        self.refine(img, &mut cands, 48, 2)?;
        for c in &mut cands {
            regress(c);
        }
        faces.extend(cands.iter().map(to_face));
        Ok(())
    }
}

fn to_face(c: &Candidate) -> Face {
    let x = c.b[0].round() as i32;
    let y = c.b[1].round() as i32;
    let mut face = Face::new(x, y, (c.b[2].round() as i32 - x).max(1), (c.b[3].round() as i32 - y).max(1), c.score);
    face.landmarks = Some(c.landmarks);
    face
}

/// `bbreg`: apply the regression with +1 sizes.
fn regress(c: &mut Candidate) {
    let (w, h) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
    c.b = [c.b[0] + c.reg[0] * w, c.b[1] + c.reg[1] * h, c.b[2] + c.reg[2] * w, c.b[3] + c.reg[3] * h];
}
