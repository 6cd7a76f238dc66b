//! YuNet's head outputs to faces: scores, boxes and landmarks per cell, then non-maximum
//! suppression, as OpenCV's `FaceDetectorYN` does.

use super::STRIDES;
use crate::detect::Face;

/// A decoded face: box corners (x1, y1, x2, y2), score and landmarks, in input pixels.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Detection {
    pub b: [f32; 4],
    pub score: f32,
    pub landmarks: [[f32; 2]; 5],
}

impl Detection {
    pub(super) fn iou(&self, o: &Detection) -> f32 {
        let iw = (self.b[2].min(o.b[2]) - self.b[0].max(o.b[0])).max(0.0);
        let ih = (self.b[3].min(o.b[3]) - self.b[1].max(o.b[1])).max(0.0);
        let inter = iw * ih;
        let area = |d: &Detection| (d.b[2] - d.b[0]).max(0.0) * (d.b[3] - d.b[1]).max(0.0);
        let union = area(self) + area(o) - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }

    pub(super) fn to_face(self) -> Face {
        let x = self.b[0].round() as i32;
        let y = self.b[1].round() as i32;
        let mut face = Face::new(x, y, (self.b[2].round() as i32 - x).max(1), (self.b[3].round() as i32 - y).max(1), self.score);
        face.landmarks = Some(self.landmarks);
        face
    }

    /// Scales the box's width and height by `factor` about its centre.
    pub(super) fn shrink(&mut self, factor: [f32; 2]) {
        for (axis, f) in factor.into_iter().enumerate() {
            let (c, half) = ((self.b[axis] + self.b[axis + 2]) * 0.5, (self.b[axis + 2] - self.b[axis]) * 0.5 * f);
            self.b[axis] = c - half;
            self.b[axis + 2] = c + half;
        }
    }

    /// Maps from a crop's input pixels to the picture's: `x · scale + origin`.
    pub(super) fn mapped(mut self, origin: [f32; 2], scale: f32) -> Self {
        for (i, v) in self.b.iter_mut().enumerate() {
            *v = *v * scale + origin[i % 2];
        }
        for p in &mut self.landmarks {
            *p = [p[0] * scale + origin[0], p[1] * scale + origin[1]];
        }
        self
    }
}

pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Decodes batch item `item` of the head outputs (`heads[level]` flattened, `(16, B, h, w)`)
/// into `out`: OpenCV's score `sqrt(sigmoid(class) · sigmoid(objectness))`, boxes from the
/// cell's corner `(col, row) · stride` plus offset, sides `exp(·) · stride`.
pub(super) fn decode(heads: &[(&[f32], usize, usize)], batch: usize, item: usize, threshold: f32, out: &mut Vec<Detection>) {
    for (level, &(data, h, w)) in heads.iter().enumerate() {
        let stride = STRIDES[level] as f32;
        let plane = batch * h * w;
        for row in 0..h {
            for col in 0..w {
                let i = (item * h + row) * w + col;
                let cls = sigmoid(data[i]);
                // Objectness is at most 1: skip the rest when the class alone cannot pass.
                if cls < threshold * threshold {
                    continue;
                }
                let score = (cls * sigmoid(data[plane + i])).sqrt();
                if score < threshold || !score.is_finite() {
                    continue;
                }
                let at = |ch: usize| data[ch * plane + i];
                let (c, r) = (col as f32, row as f32);
                let (cx, cy) = ((c + at(2)) * stride, (r + at(3)) * stride);
                let (bw, bh) = (at(4).exp() * stride, at(5).exp() * stride);
                if !(bw.is_finite() && bh.is_finite()) {
                    continue;
                }
                let mut landmarks = [[0f32; 2]; 5];
                for (k, p) in landmarks.iter_mut().enumerate() {
                    *p = [(at(6 + 2 * k) + c) * stride, (at(7 + 2 * k) + r) * stride];
                }
                out.push(Detection { b: [cx - bw * 0.5, cy - bh * 0.5, cx + bw * 0.5, cy + bh * 0.5], score, landmarks });
            }
        }
    }
}

/// Greedy non-maximum suppression by IoU, best score first (OpenCV's `NMSBoxes`).
pub(super) fn nms(dets: &mut Vec<Detection>, threshold: f32) {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept = 0;
    for i in 0..dets.len() {
        if dets[..kept].iter().all(|k| k.iou(&dets[i]) <= threshold) {
            dets.swap(kept, i);
            kept += 1;
        }
    }
    dets.truncate(kept);
}
