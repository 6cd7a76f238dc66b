//! What the core reports about a face: its box (from any detector) and its emotions.

use crate::emotion::{CLASS_NAMES, NUM_CLASSES};

/// A detected face box in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Face {
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
    /// Detector confidence: neighbour count for Haar, face probability for MTCNN, OpenCV's
    /// score for YuNet.
    pub score: f32,
    /// Eyes (left, right as seen in the image), nose, mouth corners (left, right), when the
    /// detector gives them (MTCNN, YuNet).
    pub landmarks: Option<[[f32; 2]; 5]>,
}

impl Face {
    pub fn new(x: i32, y: i32, width: i32, height: i32, score: f32) -> Self {
        Self { x, y, width, height, score, landmarks: None }
    }

    /// Scales the box and landmarks (detection size ↔ frame size).
    pub fn scale(&mut self, scale: f32) {
        self.x = (self.x as f32 * scale).round() as i32;
        self.y = (self.y as f32 * scale).round() as i32;
        self.width = (self.width as f32 * scale).round() as i32;
        self.height = (self.height as f32 * scale).round() as i32;
        if let Some(points) = self.landmarks.as_mut() {
            for p in points.iter_mut() {
                p[0] *= scale;
                p[1] *= scale;
            }
        }
    }

    /// The box cut to a `width` x `height` frame (the rule for every output: metas, messages,
    /// JSON); `None` when nothing of it is inside.
    pub fn clipped_to(&self, width: i32, height: i32) -> Option<Face> {
        let (x0, y0) = (self.x.max(0), self.y.max(0));
        let x1 = self.x.saturating_add(self.width).min(width);
        let y1 = self.y.saturating_add(self.height).min(height);
        (x1 > x0 && y1 > y0).then_some(Face { x: x0, y: y0, width: x1 - x0, height: y1 - y0, ..*self })
    }

    /// The share of the box's area inside a `width` x `height` frame (0 for an empty box).
    pub fn visible_fraction(&self, width: i32, height: i32) -> f32 {
        let area = self.width as f32 * self.height as f32;
        match self.clipped_to(width, height) {
            Some(c) if area > 0.0 => c.width as f32 * c.height as f32 / area,
            _ => 0.0,
        }
    }
}

/// One analysed face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceResult {
    pub face: Face,
    /// Smoothed over the track's classifications (video), as reported.
    pub probabilities: [f32; NUM_CLASSES],
    /// The last classification before smoothing (equal to `probabilities` for still images and
    /// `smoothing=0`).
    pub raw_probabilities: [f32; NUM_CLASSES],
    /// Index into [`CLASS_NAMES`] of the most likely emotion.
    pub emotion: usize,
    pub confidence: f32,
    /// Stable id of the face across frames (video only).
    pub track_id: Option<u64>,
    /// The face was not found in this frame: box and probabilities are carried over by its
    /// track from an earlier one (for at most a short grace time).
    pub carried: bool,
}

impl FaceResult {
    pub fn label(&self) -> &'static str {
        CLASS_NAMES[self.emotion]
    }
}
