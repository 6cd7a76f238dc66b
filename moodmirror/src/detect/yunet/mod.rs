//! YuNet-n (Wu, Peng, Yu, "YuNet: A Tiny Millisecond-level Face Detector", 2023;
//! libfacedetection.train, Apache-2.0) on candle: a 76 k-parameter anchor-free detector with five
//! landmarks, one pass over the picture whatever the number of faces. Backbone of pointwise →
//! depthwise units, a top-down neck over strides 8, 16 and 32, and per level one head for
//! class, objectness, box and landmarks; decoding and scores as OpenCV's `FaceDetectorYN`.
//! Weights converted from the ONNX export by `moodmirror convert-yunet` (weights/README.md).

mod cpu;
mod decode;
mod net;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::{DetectParams, Face, RgbImage};
use crate::image::BlockSampler;
use cpu::{grow, CpuPlan, Scratch, CROP_SCRATCH};
pub use decode::Detection;
use decode::{decode, nms};
pub use net::YuNetNet;

/// The converted weights, embedded.
pub static YUNET_WEIGHTS: &[u8] = include_bytes!("../../../../weights/yunet.safetensors");

/// Feature strides of the three output levels.
const STRIDES: [usize; 3] = [8, 16, 32];
/// The network's input sides must be multiples of this (the coarsest level's stride).
const ALIGN: usize = 32;
/// Sides of the square crop each track is re-found in: 32 for faces of 48 px and more, 64 below.
/// In a 32-px crop 1.5 face sides wide the face was 21 px, at the edge of what YuNet sees:
/// colour faces were re-found, greyscale and soft ones about 1 frame in 9 (wild-dev portraits,
/// 60 to 500 px: 8 to 14 %, whatever the score threshold). A crop 1.15 face sides wide (the
/// face 28 px) re-finds 90 to 93 % of them at the same cost; the tracks it misses get a second
/// look in a 32-px crop the face fills (1.0) and a third in a 64-px crop 1.5 sides wide: 100 %
/// of 40 portraits at 60-600 px, of soft ones drifting 4 % of their width per frame, and of
/// three hard ones (dark, cut off by the photo's edge) that the 64-px look alone found 70 % of
/// the time (`examples/track_refind.rs`). 64-px crops for every face cost a third of the
/// crowded clip's frame rate (four times the network's work); the retries run only for misses.
const TRACK_INPUT: usize = 32;
const TRACK_INPUT_SMALL_FACE: usize = 64;
/// Faces narrower than this are re-found in `TRACK_INPUT_SMALL_FACE` crops.
const SMALL_FACE: i32 = 48;
/// YuNet's boxes for faces of ~28 px (a 32-px track crop 1.15 sides wide) come out wider and
/// taller than the same faces' boxes in a full detection. Tracked boxes are shrunk by this, so
/// that a full detection landing does not change the box much. Each box sets the next frame's
/// crop, so what counts is where tracked boxes settle (`examples/track_refind.rs`, 100 to
/// 700 px): with this factor, 0.96-0.98 times the full detection's width and 0.92-0.98 its
/// height on the astronaut (IoU 0.83-0.87), 1.06-1.08 and 1.10 on wild-dev's tight
/// portraits (IoU 0.83); the two kinds of picture pull in opposite directions.
const SMALL_CROP_SIZE_BIAS: [f32; 2] = [1.08, 1.02];
/// The GPU path runs its crops as one batch, of one size.
const TRACK_INPUT_BATCH: usize = 64;
/// The 32-px crop's side in face sides: tight, so the face is as large as the crop allows while
/// a face moving 5 % of its width per frame stays inside.
const TRACK_CONTEXT: f32 = 1.15;
/// The second look's side in face sides (a 32-px crop): the face fills it.
const RETRY_CONTEXT: f32 = 1.0;
/// The 64-px crop's side in face sides.
const SMALL_FACE_CONTEXT: f32 = 1.5;

pub struct YuNet {
    net: YuNetNet,
    /// The CPU path (`None` on a GPU).
    plan: Option<CpuPlan>,
    device: Device,
    /// Faces scoring below this are dropped (OpenCV's score; the product owner's PASCAL
    /// figures are at 0.7).
    pub score_threshold: f32,
    pub nms_threshold: f32,
    /// The lower bar for re-finding a known face in its track's crop.
    pub track_threshold: f32,
    /// The crops tracks are re-found in on the CPU.
    pub track_windows: TrackWindows,
    /// Tracks the crops so far missed, and those a retry looks for.
    retry: Vec<Face>,
    missed: Vec<Face>,
    /// Network input `(3, batch, h, w)`.
    input: Vec<f32>,
    scratch: Scratch,
    /// Per batch item, its decoded faces.
    found: Vec<Vec<Detection>>,
}

impl YuNet {
    pub fn load(bytes: &[u8], device: &Device) -> candle_core::Result<Self> {
        let vb = VarBuilder::from_slice_safetensors(bytes, DType::F32, device)?;
        let net = YuNetNet::load(vb)?;
        let plan = if device.is_cpu() { Some(CpuPlan::of(&net)?) } else { None };
        Ok(Self {
            net,
            plan,
            device: device.clone(),
            score_threshold: 0.7,
            nms_threshold: 0.3,
            track_threshold: 0.5,
            track_windows: TrackWindows::default(),
            retry: Vec::new(),
            missed: Vec::new(),
            input: Vec::new(),
            scratch: Scratch::default(),
            found: Vec::new(),
        })
    }

    pub fn embedded(device: &Device) -> candle_core::Result<Self> {
        Self::load(YUNET_WEIGHTS, device)
    }

    /// Runs the network with candle's ops on `self.input` (`(3, batch, h, w)`) and decodes
    /// each batch item's faces scoring at least `threshold` into `self.found[item]` (before
    /// NMS): the GPU path, and the CPU path's reference in the tests.
    fn run_candle(&mut self, batch: usize, h: usize, w: usize, threshold: f32) -> candle_core::Result<()> {
        self.found.resize_with(batch, Vec::new);
        self.found.iter_mut().for_each(Vec::clear);
        let x = Tensor::from_slice(&self.input[..3 * batch * h * w], (3, batch, h, w), &self.device)?;
        let outputs = self
            .net
            .forward(&x)?
            .iter()
            .map(|t| {
                let (_, _, h, w) = t.dims4()?;
                Ok((t.flatten_all()?.to_vec1::<f32>()?, h, w))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let heads: Vec<(&[f32], usize, usize)> = outputs.iter().map(|(d, h, w)| (&d[..], *h, *w)).collect();
        for item in 0..batch {
            decode(&heads, batch, item, threshold, &mut self.found[item]);
        }
        Ok(())
    }

    /// Every face of `img` scoring at least `threshold`, after NMS, in image pixels.
    pub fn detections(&mut self, img: &RgbImage, threshold: f32) -> candle_core::Result<&[Detection]> {
        if img.width == 0 || img.height == 0 {
            self.found.clear();
            return Ok(&[]);
        }
        // Zero padding to the alignment on the right and bottom, as OpenCV's FaceDetectorYN.
        let (pw, ph) = (img.width.div_ceil(ALIGN) * ALIGN, img.height.div_ceil(ALIGN) * ALIGN);
        let plane = pw * ph;
        grow(&mut self.input, 3 * plane);
        for c in 0..3 {
            let dst = &mut self.input[c * plane..(c + 1) * plane];
            for (y, row) in dst.chunks_exact_mut(pw).enumerate() {
                if y >= img.height {
                    row.fill(0.0);
                    continue;
                }
                let src = &img.data[y * img.stride..][..img.width * 3];
                // BGR planes, as the network was trained (OpenCV images).
                for (d, px) in row.iter_mut().zip(src.chunks_exact(3)) {
                    *d = px[2 - c] as f32;
                }
                row[img.width..].fill(0.0);
            }
        }
        match self.plan.as_ref().filter(|_| crate::ops::cpu_fast_paths_enabled()) {
            Some(plan) => {
                plan.forward(&self.input, 1, ph, pw, &mut self.scratch);
                self.found.resize_with(1, Vec::new);
                self.found[0].clear();
                decode(&self.scratch.head_slices(), 1, 0, threshold, &mut self.found[0]);
            }
            None => self.run_candle(1, ph, pw, threshold)?,
        }
        nms(&mut self.found[0], self.nms_threshold);
        Ok(&self.found[0])
    }

    /// Faces of `img`, best first, with boxes, scores and landmarks. YuNet's boxes are taller
    /// and narrower than the square boxes `min_size`/`max_size` were chosen for (MTCNN, Haar,
    /// dlib's annotations): they bound the box's geometric mean side, with MTCNN's pyramid
    /// slack of 20 % below `min_size`.
    pub fn detect(&mut self, img: &RgbImage, params: &DetectParams, faces: &mut Vec<Face>) -> candle_core::Result<()> {
        faces.clear();
        let threshold = self.score_threshold;
        let min = params.min_size as f32 * 0.8;
        let max = params.max_size.map_or(f32::INFINITY, |m| m as f32 * 1.2);
        for d in self.detections(img, threshold)? {
            let side = ((d.b[2] - d.b[0]) * (d.b[3] - d.b[1])).max(0.0).sqrt();
            if side >= min && side <= max && faces.len() < params.max_faces {
                faces.push(d.to_face());
            }
        }
        Ok(())
    }

    /// Re-finds faces near `previous` boxes (tracking between full detections): each box's
    /// surroundings, 1.5 times its side, resampled to 32x32 (64x64 for faces under 48 px); a
    /// face comes back where its crop holds a detection overlapping the previous box.
    pub fn track(&mut self, img: &RgbImage, previous: &[Face], faces: &mut Vec<Face>) -> candle_core::Result<()> {
        self.track_in(img, previous, faces)
    }

    /// [`Self::track`] on any picture that averages pixel blocks (a video frame in its own
    /// format: the crops are sampled from it directly, with no RGB copy in between). On the
    /// CPU each track is looked for first in its small crop; the tracks not found there (faces
    /// with little texture: greyscale, soft) get a second look in a 64-px crop.
    pub fn track_in<S: BlockSampler>(&mut self, img: &S, previous: &[Face], faces: &mut Vec<Face>) -> candle_core::Result<()> {
        faces.clear();
        let (width, height) = img.size();
        if previous.is_empty() || width == 0 || height == 0 {
            return Ok(());
        }
        let n = previous.len();
        let threshold = self.track_threshold;
        let cpu = self.plan.is_some() && crate::ops::cpu_fast_paths_enabled();
        let Some(plan) = self.plan.as_ref().filter(|_| cpu) else {
            // `sample_crop` writes every value, padding included.
            let window = TrackWindow { side: TRACK_INPUT_BATCH, context: SMALL_FACE_CONTEXT };
            let plane = window.side * window.side;
            grow(&mut self.input, 3 * n * plane);
            for (i, prev) in previous.iter().enumerate() {
                let (origin, scale) = window.of(prev);
                sample_crop(img, origin, scale, window.side, n * plane, &mut self.input[i * plane..]);
            }
            self.run_candle(n, window.side, window.side, threshold)?;
            for (prev, found) in previous.iter().zip(&self.found) {
                if let Some(d) = best_match(prev, found, window, SMALL_CROP_SIZE_BIAS) {
                    faces.push(d.to_face());
                }
            }
            return Ok(());
        };
        let windows = self.track_windows;
        let first = |f: &Face| if f.width.max(f.height) >= windows.small_face { windows.small } else { windows.large };
        run_track_crops(plan, img, previous, first, threshold, &mut self.found);
        self.retry.clear();
        for (prev, found) in previous.iter().zip(&self.found) {
            match best_match(prev, found, first(prev), windows.small_size_bias) {
                Some(d) => faces.push(d.to_face()),
                None => self.retry.push(*prev),
            }
        }
        // Second and third looks, each for the tracks still missing, in other crops.
        for retry in windows.retries.into_iter().flatten() {
            self.missed.clear();
            self.missed.extend(self.retry.iter().filter(|&f| first(f) != retry));
            if self.missed.is_empty() {
                break;
            }
            run_track_crops(plan, img, &self.missed, |_| retry, threshold, &mut self.found);
            self.retry.clear();
            for (prev, found) in self.missed.iter().zip(&self.found) {
                match best_match(prev, found, retry, windows.small_size_bias) {
                    Some(d) => faces.push(d.to_face()),
                    None => self.retry.push(*prev),
                }
            }
        }
        Ok(())
    }
}

/// Where a track is looked for: a square crop `context` face sides wide, resampled to `side`
/// pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackWindow {
    pub side: usize,
    pub context: f32,
}

impl TrackWindow {
    /// The crop around `f`: top-left corner and picture pixels per crop pixel.
    fn of(self, f: &Face) -> ([f32; 2], f32) {
        let side = self.context * f.width.max(f.height).max(1) as f32;
        let (cx, cy) = (f.x as f32 + f.width as f32 * 0.5, f.y as f32 + f.height as f32 * 0.5);
        ([cx - side * 0.5, cy - side * 0.5], side / self.side as f32)
    }
}

/// The CPU's track crops: `small` for faces of `small_face` px and more, `large` below, and
/// `retries`, in order, for the faces the crops before missed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackWindows {
    pub small: TrackWindow,
    pub large: TrackWindow,
    pub small_face: i32,
    pub retries: [Option<TrackWindow>; 2],
    /// How much wider and taller `small`'s boxes come out than a full detection's.
    pub small_size_bias: [f32; 2],
}

impl Default for TrackWindows {
    fn default() -> Self {
        Self {
            small: TrackWindow { side: TRACK_INPUT, context: TRACK_CONTEXT },
            large: TrackWindow { side: TRACK_INPUT_SMALL_FACE, context: SMALL_FACE_CONTEXT },
            small_face: SMALL_FACE,
            retries: [
                Some(TrackWindow { side: TRACK_INPUT, context: RETRY_CONTEXT }),
                Some(TrackWindow { side: TRACK_INPUT_SMALL_FACE, context: SMALL_FACE_CONTEXT }),
            ],
            small_size_bias: SMALL_CROP_SIZE_BIAS,
        }
    }
}

/// Runs the network on each face's crop (`window_of` chooses it), splitting the faces among
/// rayon's threads, each running its share as one batch per crop size: the network's small
/// layers (down to 1x1 maps on a 32-pixel crop) fill its vector tiles and amortise their calls
/// over the batch; each crop's outputs are the same bit for bit as alone. `found[i]` gets face
/// `i`'s detections in crop pixels.
fn run_track_crops<S: BlockSampler>(
    plan: &CpuPlan,
    img: &S,
    faces: &[Face],
    window_of: impl Fn(&Face) -> TrackWindow + Sync,
    threshold: f32,
    found: &mut Vec<Vec<Detection>>,
) {
    use rayon::prelude::*;
    let n = faces.len();
    let per_thread = n.div_ceil(rayon::current_num_threads().max(1)).max(1);
    if found.len() < n {
        found.resize_with(n, Vec::new);
    }
    found[..n].par_chunks_mut(per_thread).zip(faces.par_chunks(per_thread)).for_each(|(found, faces)| {
        found.iter_mut().for_each(Vec::clear);
        let mut job = |(x, s, items): &mut (Vec<f32>, Scratch, Vec<usize>)| {
            for side in [TRACK_INPUT, TRACK_INPUT_SMALL_FACE] {
                items.clear();
                items.extend((0..faces.len()).filter(|&i| window_of(&faces[i]).side == side));
                let (batch, plane) = (items.len(), side * side);
                if batch == 0 {
                    continue;
                }
                grow(x, 3 * batch * plane);
                for (b, &i) in items.iter().enumerate() {
                    let (origin, scale) = window_of(&faces[i]).of(&faces[i]);
                    sample_crop(img, origin, scale, side, batch * plane, &mut x[b * plane..]);
                }
                plan.forward(x, batch, side, side, s);
                let heads = s.head_slices();
                for (b, &i) in items.iter().enumerate() {
                    decode(&heads, batch, b, threshold, &mut found[i]);
                }
            }
        };
        CROP_SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => job(&mut scratch),
            Err(_) => job(&mut Default::default()),
        });
    });
}

/// The best-scoring detection of a track's crop (`found`, in the crop's pixels) that overlaps
/// its previous box, in picture pixels; boxes from 32-px crops shrunk by their size bias.
fn best_match(prev: &Face, found: &[Detection], window: TrackWindow, size_bias: [f32; 2]) -> Option<Detection> {
    let (origin, scale) = window.of(prev);
    let before =
        Detection { b: [prev.x as f32, prev.y as f32, (prev.x + prev.width) as f32, (prev.y + prev.height) as f32], ..Default::default() };
    let mut best =
        found.iter().map(|d| d.mapped(origin, scale)).filter(|d| d.iou(&before) >= 0.3).max_by(|a, b| a.score.total_cmp(&b.score))?;
    if window.side == TRACK_INPUT {
        best.shrink([1.0 / size_bias[0], 1.0 / size_bias[1]]);
    }
    Some(best)
}

/// The largest crop [`sample_crop`] makes (its buffers are on the stack).
const MAX_CROP_SIDE: usize = 64;
const _: () = assert!(TRACK_INPUT <= MAX_CROP_SIDE && TRACK_INPUT_SMALL_FACE <= MAX_CROP_SIDE && TRACK_INPUT_BATCH <= MAX_CROP_SIDE);

/// Area-averages the square `side`² crop at `origin` (`scale` picture pixels per crop pixel)
/// into BGR planes `channel_stride` apart; outside the picture reads zero (the padding the
/// network saw in training).
fn sample_crop<S: BlockSampler>(img: &S, origin: [f32; 2], scale: f32, side: usize, channel_stride: usize, out: &mut [f32]) {
    let (width, height) = img.size();
    // Each crop column's and row's span of picture pixels, computed once per crop (not per
    // crop pixel: `floor` is a libm call on baseline x86-64, four per pixel were 1 % of a
    // crowded frame's time).
    let bounds = |o: f32, i: usize, max: usize| {
        let s = (o + i as f32 * scale).floor().max(0.0) as usize;
        let e = ((o + (i + 1) as f32 * scale).floor().max(0.0) as usize).max(s + 1);
        (s.min(max), e.min(max))
    };
    let mut columns = [(0, 0); MAX_CROP_SIDE];
    let columns = &mut columns[..side];
    for (ox, c) in columns.iter_mut().enumerate() {
        *c = bounds(origin[0], ox, width);
    }
    let mut row = [[0f32; 3]; MAX_CROP_SIDE];
    let row = &mut row[..columns.len()];
    for oy in 0..side {
        let (ys, ye) = bounds(origin[1], oy, height);
        if ye > ys {
            img.row_of_blocks(columns, ys, ye, row);
        } else {
            row.fill([0.0; 3]);
        }
        for (ox, rgb) in row.iter().enumerate() {
            for c in 0..3 {
                out[c * channel_stride + oy * side + ox] = rgb[2 - c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn astronaut() -> (Vec<u8>, usize, usize) {
        let img = image::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/astronaut.png")).expect("fixture").into_rgb8();
        let (w, h) = img.dimensions();
        (img.into_raw(), w as usize, h as usize)
    }

    #[test]
    fn finds_the_astronaut_with_landmarks_in_order() {
        let (data, w, h) = astronaut();
        let img = RgbImage { data: &data, width: w, height: h, stride: w * 3 };
        let mut yunet = YuNet::embedded(&Device::Cpu).unwrap();
        let mut faces = Vec::new();
        yunet.detect(&img, &DetectParams::default(), &mut faces).unwrap();
        assert_eq!(faces.len(), 1, "{faces:?}");
        let f = faces[0];
        assert!(f.score > 0.9, "{f:?}");
        let p = f.landmarks.unwrap();
        // Eyes above the nose above the mouth; left and right as seen in the image.
        assert!(p[0][0] < p[1][0] && p[3][0] < p[4][0], "{p:?}");
        assert!(p[0][1] < p[2][1] && p[2][1] < p[3][1], "{p:?}");
        for q in p {
            assert!(q[0] > f.x as f32 && q[0] < (f.x + f.width) as f32, "{q:?} outside {f:?}");
        }
        // Tracking re-finds it from a shifted box.
        let moved = Face { x: f.x + f.width / 8, y: f.y - f.height / 10, ..f };
        let mut tracked = Vec::new();
        yunet.track(&img, &[moved], &mut tracked).unwrap();
        assert_eq!(tracked.len(), 1);
        let t = Detection {
            b: [
                tracked[0].x as f32,
                tracked[0].y as f32,
                (tracked[0].x + tracked[0].width) as f32,
                (tracked[0].y + tracked[0].height) as f32,
            ],
            ..Default::default()
        };
        let d = Detection { b: [f.x as f32, f.y as f32, (f.x + f.width) as f32, (f.y + f.height) as f32], ..Default::default() };
        assert!(t.iou(&d) > 0.7, "{tracked:?} vs {f:?}");
    }

    #[test]
    fn tracks_a_small_face_in_the_larger_crop() {
        let (data, w, h) = astronaut();
        let photo = image::RgbImage::from_raw(w as u32, h as u32, data).unwrap();
        let small = image::imageops::resize(&photo, w as u32 * 2 / 5, h as u32 * 2 / 5, image::imageops::FilterType::Triangle);
        let (sw, sh) = (small.width() as usize, small.height() as usize);
        let img = RgbImage { data: small.as_raw(), width: sw, height: sh, stride: sw * 3 };
        let mut yunet = YuNet::embedded(&Device::Cpu).unwrap();
        let mut faces = Vec::new();
        yunet.detect(&img, &DetectParams { min_size: 12, ..Default::default() }, &mut faces).unwrap();
        assert_eq!(faces.len(), 1, "{faces:?}");
        assert!(faces[0].width < SMALL_FACE, "{faces:?}: the test wants a face under {SMALL_FACE} px");
        let mut tracked = Vec::new();
        yunet.track(&img, &faces, &mut tracked).unwrap();
        assert_eq!(tracked.len(), 1);
        let box_of =
            |f: &Face| Detection { b: [f.x as f32, f.y as f32, (f.x + f.width) as f32, (f.y + f.height) as f32], ..Default::default() };
        assert!(box_of(&tracked[0]).iou(&box_of(&faces[0])) > 0.7, "{tracked:?} vs {faces:?}");
    }

    #[test]
    fn gpu_code_paths_find_the_same_faces() {
        let (data, w, h) = astronaut();
        let img = RgbImage { data: &data, width: w, height: h, stride: w * 3 };
        let mut yunet = YuNet::embedded(&Device::Cpu).unwrap();
        let fast = yunet.detections(&img, 0.5).unwrap().to_vec();
        let reference = crate::ops::with_gpu_paths(|| yunet.detections(&img, 0.5).map(|d| d.to_vec())).unwrap();
        assert_eq!(fast.len(), reference.len());
        for (a, b) in fast.iter().zip(&reference) {
            assert!((a.score - b.score).abs() < 1e-4);
            assert!(a.b.iter().zip(&b.b).all(|(x, y)| (x - y).abs() < 0.05), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn a_batch_of_crops_gives_each_crop_its_own_outputs_bit_for_bit() {
        let yunet = YuNet::embedded(&Device::Cpu).unwrap();
        let plan = yunet.plan.as_ref().expect("CPU plan");
        let (batch, side) = (3, 32);
        let plane = side * side;
        let (data, w, h) = astronaut();
        let img = RgbImage { data: &data, width: w, height: h, stride: w * 3 };
        // Three crops of the photo, the face and elsewhere, sampled as tracking does.
        let crops = [([170.0, 60.0], 3.5), ([0.0, 0.0], 5.0), ([300.0, 250.0], 2.0)];
        let mut x = vec![0f32; 3 * batch * plane];
        for (b, (origin, scale)) in crops.iter().enumerate() {
            sample_crop(&img, *origin, *scale, side, batch * plane, &mut x[b * plane..]);
        }
        let mut together = Scratch::default();
        plan.forward(&x, batch, side, side, &mut together);
        for b in 0..batch {
            let alone: Vec<f32> = (0..3).flat_map(|c| x[(c * batch + b) * plane..][..plane].to_vec()).collect();
            let mut s = Scratch::default();
            plan.forward(&alone, 1, side, side, &mut s);
            for (level, ((all, lh, lw), (one, _, _))) in together.head_slices().iter().zip(s.head_slices()).enumerate() {
                let n = lh * lw;
                for ch in 0..16 {
                    assert_eq!(all[(ch * batch + b) * n..][..n], one[ch * n..][..n], "crop {b} level {level} channel {ch}");
                }
            }
        }
    }

    #[test]
    fn blank_noise_and_tiny_images_have_no_faces() {
        let mut yunet = YuNet::embedded(&Device::Cpu).unwrap();
        let mut faces = vec![Face::new(0, 0, 1, 1, 1.0)];
        for (w, h) in [(1, 1), (7, 3), (64, 48)] {
            let data = vec![128u8; w * h * 3];
            yunet.detect(&RgbImage { data: &data, width: w, height: h, stride: w * 3 }, &DetectParams::default(), &mut faces).unwrap();
            assert!(faces.is_empty());
        }
        let mut state = 1u32;
        let noise: Vec<u8> = (0..320 * 240 * 3)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state >> 24) as u8
            })
            .collect();
        yunet.detect(&RgbImage { data: &noise, width: 320, height: 240, stride: 960 }, &DetectParams::default(), &mut faces).unwrap();
        assert!(faces.is_empty(), "{faces:?}");
        yunet
            .track(&RgbImage { data: &noise, width: 320, height: 240, stride: 960 }, &[Face::new(-50, 300, 40, 40, 1.0)], &mut faces)
            .unwrap();
        assert!(faces.is_empty());
    }
}
