//! MTCNN (Zhang et al. 2016) on candle: P-Net proposals over an image pyramid, R-Net and O-Net
//! refinement with box regression, O-Net's five landmarks; the algorithm and constants of
//! facenet-pytorch's `detect_face`, whose MIT-licensed weights we convert
//! (`moodmirror convert-mtcnn`, see weights/README.md).

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use crate::layers::{Conv, Dense};
use crate::ops::max_pool2d_ceil;

use super::{DetectParams, Face, RgbImage};

/// The converted weights (prefixes `pnet.`, `rnet.`, `onet.`), embedded.
pub static MTCNN_WEIGHTS: &[u8] = include_bytes!("../../../weights/mtcnn.safetensors");

/// PReLU over dim 0 of a CBHW activation, or the last dim of a (N, C) one, fused with the bias
/// of the layer before it.
struct PRelu {
    weight: Tensor,
}

impl PRelu {
    fn load(vb: &VarBuilder, name: &str, c: usize) -> candle_core::Result<Self> {
        Ok(Self { weight: vb.pp(name).get(c, "weight")? })
    }

    /// `prelu(conv(x))`.
    fn conv(&self, conv: &Conv, x: &Tensor) -> candle_core::Result<Tensor> {
        conv.forward_prelu(x, &self.weight)
    }

    /// `prelu(dense(x))`.
    fn dense(&self, dense: &Dense, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::ops::bias_prelu(&dense.forward_no_bias(x)?, Some(dense.bias()), &self.weight)
    }
}

fn conv(vb: &VarBuilder, name: &str, c_in: usize, c_out: usize, k: usize) -> candle_core::Result<Conv> {
    Conv::load(vb.pp(name), c_in, c_out, k, 1, 0, true)
}

/// PyTorch flattens R-Net's and O-Net's last maps after permuting (N, C, H, W) to (N, W, H, C);
/// from CBHW that is (C, N, H, W) → (N, W, H, C).
fn flatten_whc(x: &Tensor) -> candle_core::Result<Tensor> {
    let n = x.dim(1)?;
    x.permute((1, 3, 2, 0))?.contiguous()?.reshape((n, ()))
}

/// The nets work on channel-major (C, N, H, W) activations with moodmirror's CPU ops.
pub struct PNet {
    convs: [Conv; 3],
    prelus: [PRelu; 3],
    /// conv4_1 (2 face logits) and conv4_2 (4 box offsets) as one 1x1 convolution.
    heads: Conv,
}

impl PNet {
    pub fn load(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            convs: [conv(&vb, "conv1", 3, 10, 3)?, conv(&vb, "conv2", 10, 16, 3)?, conv(&vb, "conv3", 16, 32, 3)?],
            prelus: [PRelu::load(&vb, "prelu1", 10)?, PRelu::load(&vb, "prelu2", 16)?, PRelu::load(&vb, "prelu3", 32)?],
            heads: Conv::concat(&conv(&vb, "conv4_1", 32, 2, 1)?, &conv(&vb, "conv4_2", 32, 4, 1)?)?,
        })
    }

    /// (3, 1, H, W) → (regression (4, h, w), face probability (h, w)).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let x = max_pool2d_ceil(&self.prelus[0].conv(&self.convs[0], x)?, 2, 2)?;
        let x = self.prelus[1].conv(&self.convs[1], &x)?;
        let x = self.prelus[2].conv(&self.convs[2], &x)?;
        let heads = self.heads.forward(&x)?.squeeze(1)?;
        // The softmax of two logits: sigmoid of their difference, with no pass over dim 0.
        let logits = heads.narrow(0, 0, 2)?;
        let prob = candle_nn::ops::sigmoid(&(logits.get(1)? - logits.get(0)?)?)?;
        Ok((heads.narrow(0, 2, 4)?, prob))
    }
}

pub struct RNet {
    convs: [Conv; 3],
    prelus: [PRelu; 4],
    dense4: Dense,
    dense5_1: Dense,
    dense5_2: Dense,
}

impl RNet {
    pub fn load(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            convs: [conv(&vb, "conv1", 3, 28, 3)?, conv(&vb, "conv2", 28, 48, 3)?, conv(&vb, "conv3", 48, 64, 2)?],
            prelus: [
                PRelu::load(&vb, "prelu1", 28)?,
                PRelu::load(&vb, "prelu2", 48)?,
                PRelu::load(&vb, "prelu3", 64)?,
                PRelu::load(&vb, "prelu4", 128)?,
            ],
            dense4: Dense::load(vb.pp("dense4"), 576, 128)?,
            dense5_1: Dense::load(vb.pp("dense5_1"), 128, 2)?,
            dense5_2: Dense::load(vb.pp("dense5_2"), 128, 4)?,
        })
    }

    /// (3, N, 24, 24) → (regression (N, 4), face probability (N)).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let x = max_pool2d_ceil(&self.prelus[0].conv(&self.convs[0], x)?, 3, 2)?;
        let x = max_pool2d_ceil(&self.prelus[1].conv(&self.convs[1], &x)?, 3, 2)?;
        let x = self.prelus[2].conv(&self.convs[2], &x)?;
        let x = self.prelus[3].dense(&self.dense4, &flatten_whc(&x)?)?;
        let prob = candle_nn::ops::softmax(&self.dense5_1.forward(&x)?, D::Minus1)?.narrow(1, 1, 1)?.squeeze(1)?;
        Ok((self.dense5_2.forward(&x)?, prob))
    }
}

pub struct ONet {
    convs: [Conv; 4],
    prelus: [PRelu; 5],
    dense5: Dense,
    dense6_1: Dense,
    dense6_2: Dense,
    dense6_3: Dense,
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
                PRelu::load(&vb, "prelu1", 32)?,
                PRelu::load(&vb, "prelu2", 64)?,
                PRelu::load(&vb, "prelu3", 64)?,
                PRelu::load(&vb, "prelu4", 128)?,
                PRelu::load(&vb, "prelu5", 256)?,
            ],
            dense5: Dense::load(vb.pp("dense5"), 1152, 256)?,
            dense6_1: Dense::load(vb.pp("dense6_1"), 256, 2)?,
            dense6_2: Dense::load(vb.pp("dense6_2"), 256, 4)?,
            dense6_3: Dense::load(vb.pp("dense6_3"), 256, 10)?,
        })
    }

    /// (3, N, 48, 48) → (regression (N, 4), landmarks (N, 10), face probability (N)).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let x = max_pool2d_ceil(&self.prelus[0].conv(&self.convs[0], x)?, 3, 2)?;
        let x = max_pool2d_ceil(&self.prelus[1].conv(&self.convs[1], &x)?, 3, 2)?;
        let x = max_pool2d_ceil(&self.prelus[2].conv(&self.convs[2], &x)?, 2, 2)?;
        let x = self.prelus[3].conv(&self.convs[3], &x)?;
        let x = self.prelus[4].dense(&self.dense5, &flatten_whc(&x)?)?;
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
/// `[x0, x1) x [y0, y1)` to `out_w` x `out_h`, normalised as MTCNN wants; channel `c` goes to
/// `out[c * channel_stride..]` (CBHW batches interleave crops within a channel). `block_sum`
/// gives the three channel sums of a source block `(xs, ys, xe, ye)`.
fn area_resample_with(
    (x0, y0, x1, y1): (usize, usize, usize, usize),
    (out_w, out_h): (usize, usize),
    channel_stride: usize,
    out: &mut [f32],
    block_sum: impl Fn(usize, usize, usize, usize) -> [f32; 3],
) {
    let (w, h) = (x1 - x0, y1 - y0);
    for oy in 0..out_h {
        let ys = y0 + oy * h / out_h;
        let ye = y0 + ((oy + 1) * h).div_ceil(out_h);
        for ox in 0..out_w {
            let xs = x0 + ox * w / out_w;
            let xe = x0 + ((ox + 1) * w).div_ceil(out_w);
            let n = ((ye - ys) * (xe - xs)) as f32;
            for (c, a) in block_sum(xs, ys, xe, ye).iter().enumerate() {
                out[c * channel_stride + oy * out_w + ox] = (a / n - 127.5) * 0.0078125;
            }
        }
    }
}

/// [`area_resample_with`] summing the image's pixels directly (for a few small crops).
fn area_resample(img: &RgbImage, window: (usize, usize, usize, usize), out_w: usize, out_h: usize, channel_stride: usize, out: &mut [f32]) {
    area_resample_with(window, (out_w, out_h), channel_stride, out, |xs, ys, xe, ye| {
        let mut acc = [0f32; 3];
        for y in ys..ye {
            let row = &img.data[y * img.stride..];
            for x in xs..xe {
                acc[0] += row[x * 3] as f32;
                acc[1] += row[x * 3 + 1] as f32;
                acc[2] += row[x * 3 + 2] as f32;
            }
        }
        acc
    });
}

/// Summed-area table of an RGB image: `(h + 1) x (w + 1)` cells of 3 wrapping `u32` sums, so
/// any window's exact integer sum (below 2³²) costs four lookups. Turns the pyramid's area
/// resampling from a pass over every source pixel per level into work per output pixel.
#[derive(Debug, Default)]
struct Integral {
    width: usize,
    height: usize,
    sums: Vec<u32>,
}

impl Integral {
    fn build(&mut self, img: &RgbImage) {
        let (w, h) = (img.width, img.height);
        let row_len = (w + 1) * 3;
        self.width = w;
        self.height = h;
        self.sums.clear();
        self.sums.resize(row_len * (h + 1), 0);
        for y in 0..h {
            let src = &img.data[y * img.stride..][..w * 3];
            let (above, rest) = self.sums.split_at_mut((y + 1) * row_len);
            let above = &above[y * row_len..];
            let row = &mut rest[..row_len];
            let mut run = [0u32; 3];
            for x in 0..w {
                for c in 0..3 {
                    run[c] = run[c].wrapping_add(src[x * 3 + c] as u32);
                    row[(x + 1) * 3 + c] = above[(x + 1) * 3 + c].wrapping_add(run[c]);
                }
            }
        }
    }

    /// Sums of the three channels over `[x0, x1) x [y0, y1)`.
    #[inline]
    fn window(&self, x0: usize, y0: usize, x1: usize, y1: usize) -> [u32; 3] {
        let row_len = (self.width + 1) * 3;
        let corner = |x: usize, y: usize| -> &[u32] { &self.sums[y * row_len + x * 3..][..3] };
        let (a, b, c, d) = (corner(x1, y1), corner(x0, y1), corner(x1, y0), corner(x0, y0));
        [0, 1, 2].map(|k| a[k].wrapping_sub(b[k]).wrapping_sub(c[k]).wrapping_add(d[k]))
    }

    /// [`area_resample`] from the table: the same integer sums, the same values.
    fn resample(&self, window: (usize, usize, usize, usize), out_w: usize, out_h: usize, channel_stride: usize, out: &mut [f32]) {
        area_resample_with(window, (out_w, out_h), channel_stride, out, |xs, ys, xe, ye| self.window(xs, ys, xe, ye).map(|v| v as f32));
    }
}

fn area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// Greedy non-maximum suppression. `plus_one` and `min_overlap` select the numpy variant of
/// the final stage ("Min": intersection over the smaller box, areas with +1).
fn nms(cands: &mut Vec<Candidate>, threshold: f32, min_overlap: bool) {
    if min_overlap {
        // numpy's argsort keeps equal scores in order and the reference takes the last one:
        // on ties the later candidate wins (faces larger than the image give equal scores).
        cands.reverse();
    }
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

/// Milliseconds spent in each stage of the last `detect` (for `moodmirror bench-detect`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    pub pyramid: f64,
    pub pnet: f64,
    pub rnet: f64,
    pub onet: f64,
    /// Candidates that entered R-Net and O-Net.
    pub rnet_in: usize,
    pub onet_in: usize,
}

pub struct Mtcnn {
    pnet: PNet,
    rnet: RNet,
    onet: ONet,
    device: Device,
    pub thresholds: [f32; 3],
    /// O-Net's bar for re-finding a tracked face.
    pub track_threshold: f32,
    pub factor: f64,
    input: Vec<f32>,
    /// Summed-area table of the frame in `detect` (`track` samples its few crops directly).
    integral: Integral,
    pub last_times: StageTimes,
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
            track_threshold: 0.3,
            factor: 0.709,
            input: Vec::new(),
            integral: Integral::default(),
            last_times: StageTimes::default(),
        })
    }

    pub fn embedded(device: &Device) -> candle_core::Result<Self> {
        Self::load(MTCNN_WEIGHTS, device)
    }

    /// Runs the refinement net `size` on crops of `cands` (in place: keeps those scoring over
    /// `threshold`), sampled from `self.integral` (built from `img` by `detect`) when `from_table`.
    fn refine(
        &mut self,
        img: &RgbImage,
        cands: &mut Vec<Candidate>,
        size: usize,
        stage: usize,
        threshold: f32,
        from_table: bool,
    ) -> candle_core::Result<()> {
        let plane = size * size;
        cands.retain(|c| crop_window(c, img.width, img.height).is_some());
        if cands.is_empty() {
            return Ok(());
        }
        // CBHW batch: (3, N, size, size).
        let n = cands.len();
        self.input.clear();
        self.input.resize(3 * n * plane, 0.0);
        for (i, c) in cands.iter().enumerate() {
            if let Some(window) = crop_window(c, img.width, img.height) {
                let out = &mut self.input[i * plane..];
                if from_table {
                    self.integral.resample(window, size, size, n * plane, out);
                } else {
                    area_resample(img, window, size, size, n * plane, out);
                }
            }
        }
        let x = Tensor::from_slice(&self.input, (3, n, size, size), &self.device)?;
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
            if prob[i] > threshold {
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
        // Pyramid arithmetic in f64, as facenet-pytorch's Python floats: level sizes and cell
        // positions must round the same way.
        let min_size = params.min_size.max(12) as f64;
        let m = 12.0 / min_size;
        let mut min_l = w.min(h) as f64 * m;
        let mut scale = m;
        let mut all: Vec<Candidate> = Vec::new();
        let mut times = StageTimes::default();
        let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
        let t = std::time::Instant::now();
        self.integral.build(img);
        times.pyramid += ms(t);
        while min_l >= 12.0 {
            let t = std::time::Instant::now();
            let (sh, sw) = ((h as f64 * scale + 1.0) as usize, (w as f64 * scale + 1.0) as usize);
            self.input.clear();
            self.input.resize(3 * sh * sw, 0.0);
            self.integral.resample((0, 0, w, h), sw, sh, sw * sh, &mut self.input);
            times.pyramid += ms(t);
            let t = std::time::Instant::now();
            let x = Tensor::from_slice(&self.input, (3, 1, sh, sw), &self.device)?;
            let (reg, prob) = self.pnet.forward(&x)?;
            let prob = prob.to_vec2::<f32>()?;
            let reg = reg.to_vec3::<f32>()?;
            times.pnet += ms(t);
            let mut at_scale = Vec::new();
            for (y, row) in prob.iter().enumerate() {
                for (x, &p) in row.iter().enumerate() {
                    if p >= self.thresholds[0] {
                        let q1 = [((2 * x + 1) as f64 / scale).floor() as f32, ((2 * y + 1) as f64 / scale).floor() as f32];
                        let q2 = [((2 * x + 12) as f64 / scale).floor() as f32, ((2 * y + 12) as f64 / scale).floor() as f32];
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
        let t = std::time::Instant::now();
        times.rnet_in = all.len();
        self.refine(img, &mut all, 24, 1, self.thresholds[1], true)?;
        times.rnet = ms(t);
        nms(&mut all, 0.7, false);
        for c in &mut all {
            regress(c);
            square(c);
        }
        let t = std::time::Instant::now();
        times.onet_in = all.len();
        self.refine(img, &mut all, 48, 2, self.thresholds[2], true)?;
        times.onet = ms(t);
        self.last_times = times;
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
        let mut cands: Vec<Candidate> = previous.iter().map(|f| Candidate { b: track_box(f), ..Default::default() }).collect();
        // A face known to be there needs less evidence than one found from scratch.
        self.refine(img, &mut cands, 48, 2, self.track_threshold, false)?;
        for c in &mut cands {
            regress(c);
        }
        faces.extend(cands.iter().map(to_face));
        Ok(())
    }
}

/// The box `track` gives O-Net for a previous face: squared and enlarged 10 %.
fn track_box(f: &Face) -> [f32; 4] {
    let m = 0.1 * f.width.max(f.height) as f32;
    let mut c =
        Candidate { b: [f.x as f32 - m, f.y as f32 - m, (f.x + f.width) as f32 + m, (f.y + f.height) as f32 + m], ..Default::default() };
    square(&mut c);
    c.b
}

/// The pixels `track` reads for a previous face (x0, y0, x1, y1), clipped to `width` x `height`:
/// callers converting frames for tracking need only these.
pub fn track_region(f: &Face, width: usize, height: usize) -> (usize, usize, usize, usize) {
    let b = track_box(f);
    let clip = |v: f32, max: usize| (v.max(0.0) as usize).min(max);
    (clip(b[0].floor() - 1.0, width), clip(b[1].floor() - 1.0, height), clip(b[2].ceil() + 1.0, width), clip(b[3].ceil() + 1.0, height))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn astronaut() -> (Vec<u8>, usize, usize) {
        let img = image::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/astronaut.png")).expect("fixture").into_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        (img.into_raw(), w, h)
    }

    #[test]
    fn finds_the_astronaut_with_landmarks_on_her_face() {
        let mut m = Mtcnn::embedded(&Device::Cpu).expect("weights");
        let (data, w, h) = astronaut();
        let img = RgbImage { data: &data, width: w, height: h, stride: w * 3 };
        let mut faces = Vec::new();
        m.detect(&img, &DetectParams { min_size: 20, ..Default::default() }, &mut faces).expect("detect");
        assert_eq!(faces.len(), 1, "{faces:?}");
        let f = faces[0];
        assert!(f.score > 0.99);
        assert!((170..195).contains(&f.x) && (50..75).contains(&f.y) && (80..120).contains(&f.width), "{f:?}");
        let l = f.landmarks.expect("landmarks");
        // Eyes level and above the nose, nose above the mouth corners, all inside the box.
        assert!(l[0][0] < l[1][0] && (l[0][1] - l[1][1]).abs() < 8.0);
        assert!(l[2][1] > l[0][1] && l[3][1] > l[2][1] && l[4][1] > l[2][1]);
        for p in l {
            assert!(p[0] > f.x as f32 && p[0] < (f.x + f.width) as f32 && p[1] > f.y as f32 && p[1] < (f.y + f.height) as f32);
        }
        // Tracking: O-Net re-finds the face from a box shifted by 6 px.
        let mut moved = f;
        moved.x += 6;
        let mut tracked = Vec::new();
        m.track(&img, &[moved], &mut tracked).expect("track");
        assert_eq!(tracked.len(), 1);
        assert!((tracked[0].x - f.x).abs() <= 4, "{:?} vs {f:?}", tracked[0]);
    }

    /// What a GPU runs (candle's kernels instead of the direct conv, fused PReLU and pooling),
    /// run on the CPU: the same faces and landmarks.
    #[test]
    fn gpu_code_paths_find_the_same_faces() {
        let mut m = Mtcnn::embedded(&Device::Cpu).expect("weights");
        let (data, w, h) = astronaut();
        let img = RgbImage { data: &data, width: w, height: h, stride: w * 3 };
        let params = DetectParams { min_size: 20, ..Default::default() };
        let (mut cpu, mut gpu) = (Vec::new(), Vec::new());
        m.detect(&img, &params, &mut cpu).expect("detect");
        crate::ops::with_gpu_paths(|| m.detect(&img, &params, &mut gpu)).expect("detect on GPU paths");
        assert_eq!(cpu.len(), gpu.len());
        for (a, b) in cpu.iter().zip(&gpu) {
            assert!((a.x - b.x).abs() <= 1 && (a.y - b.y).abs() <= 1 && (a.width - b.width).abs() <= 1, "{a:?} vs {b:?}");
            assert!((a.score - b.score).abs() < 1e-4);
            let (la, lb) = (a.landmarks.expect("landmarks"), b.landmarks.expect("landmarks"));
            assert!(la.iter().zip(&lb).all(|(p, q)| (p[0] - q[0]).abs() < 0.5 && (p[1] - q[1]).abs() < 0.5));
        }
    }

    #[test]
    fn truncated_or_wrong_shape_weights_name_the_problem() {
        let truncated = Mtcnn::load(&MTCNN_WEIGHTS[..MTCNN_WEIGHTS.len() / 2], &Device::Cpu);
        assert!(truncated.is_err(), "half a weights file loaded");
        let mut tensors = candle_core::safetensors::load_buffer(MTCNN_WEIGHTS, &Device::Cpu).expect("weights");
        tensors.insert("rnet.conv2.weight".into(), Tensor::zeros((48, 28, 2, 2), DType::F32, &Device::Cpu).expect("zeros"));
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("mtcnn.safetensors");
        candle_core::safetensors::save(&tensors, &path).expect("save");
        let bytes = std::fs::read(&path).expect("read");
        let err = Mtcnn::load(&bytes, &Device::Cpu).err().expect("wrong shape must fail").to_string();
        assert!(err.contains("rnet.conv2.weight"), "{err}");
    }

    #[test]
    fn summed_area_sampling_equals_direct_area_sampling() {
        let (w, h) = (53, 37);
        let data: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        let img = RgbImage { data: &data, width: w, height: h, stride: w * 3 };
        let mut table = Integral::default();
        table.build(&img);
        for (window, out_w, out_h) in [((0, 0, w, h), 19, 13), ((5, 3, 50, 30), 24, 24), ((10, 10, 11, 12), 48, 48)] {
            let (mut a, mut b) = (vec![0f32; 3 * out_w * out_h], vec![0f32; 3 * out_w * out_h]);
            area_resample(&img, window, out_w, out_h, out_w * out_h, &mut a);
            table.resample(window, out_w, out_h, out_w * out_h, &mut b);
            assert_eq!(a, b, "window {window:?} -> {out_w}x{out_h}");
        }
    }

    #[test]
    fn blank_noise_and_tiny_images_have_no_faces() {
        let mut m = Mtcnn::embedded(&Device::Cpu).expect("weights");
        let params = DetectParams { min_size: 20, ..Default::default() };
        let mut state = 12345u32;
        let noise: Vec<u8> = (0..320 * 240 * 3)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        for (data, w, h) in [
            (vec![0u8; 320 * 240 * 3], 320, 240),
            (vec![255u8; 320 * 240 * 3], 320, 240),
            (noise, 320, 240),
            (vec![128u8; 11 * 11 * 3], 11, 11),
        ] {
            let mut faces = vec![Face::new(0, 0, 1, 1, 1.0)];
            m.detect(&RgbImage { data: &data, width: w, height: h, stride: w * 3 }, &params, &mut faces).expect("detect");
            assert!(faces.is_empty(), "{w}x{h}: {faces:?}");
        }
    }

    #[test]
    fn many_faces_are_capped_by_max_faces() {
        // A 4x4 mosaic of the astronaut: 16 faces, at most max_faces reported.
        let (data, w, h) = astronaut();
        let small = image::imageops::resize(
            &image::RgbImage::from_raw(w as u32, h as u32, data).expect("img"),
            128,
            128,
            image::imageops::FilterType::Triangle,
        );
        let mut mosaic = image::RgbImage::new(512, 512);
        for i in 0..4 {
            for j in 0..4 {
                image::imageops::replace(&mut mosaic, &small, i * 128, j * 128);
            }
        }
        let mut m = Mtcnn::embedded(&Device::Cpu).expect("weights");
        let img = RgbImage { data: mosaic.as_raw(), width: 512, height: 512, stride: 512 * 3 };
        let mut faces = Vec::new();
        m.detect(&img, &DetectParams { min_size: 15, max_faces: 5, ..Default::default() }, &mut faces).expect("detect");
        assert_eq!(faces.len(), 5);
        m.detect(&img, &DetectParams { min_size: 15, max_faces: 64, ..Default::default() }, &mut faces).expect("detect");
        assert!(faces.len() >= 14, "found {} of 16", faces.len());
    }
}
