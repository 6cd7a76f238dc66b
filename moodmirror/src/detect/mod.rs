//! Face detection. The detector is a seam: [`Detector`] wraps each implementation behind one
//! call, chosen by the element's `detector` property.

pub mod haar;
pub mod mtcnn;
pub mod yunet;

pub use crate::face::Face;
pub use crate::image::{GrayImage, RgbImage};
pub use haar::{HaarCascade, HaarDetector};
pub use mtcnn::Mtcnn;
pub use yunet::YuNet;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectParams {
    /// Smallest face side in pixels.
    pub min_size: usize,
    pub max_size: Option<usize>,
    pub scale_factor: f64,
    pub min_neighbors: usize,
    pub max_faces: usize,
}

impl Default for DetectParams {
    fn default() -> Self {
        Self { min_size: 30, max_size: None, scale_factor: 1.1, min_neighbors: 3, max_faces: 32 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DetectorKind {
    /// Viola-Jones Haar cascade (OpenCV's frontal-face model).
    Haar = 0,
    /// MTCNN (CNN cascade with landmarks, facenet-pytorch weights).
    Mtcnn = 1,
    /// YuNet-n (one-pass CNN with landmarks, libfacedetection.train weights).
    Yunet = 2,
    /// Upstream: classify the face ROI metas already on the buffer (facedetect, another detector).
    Upstream = 3,
}

impl DetectorKind {
    pub fn nick(self) -> &'static str {
        match self {
            DetectorKind::Haar => "haar",
            DetectorKind::Mtcnn => "mtcnn",
            DetectorKind::Yunet => "yunet",
            DetectorKind::Upstream => "upstream",
        }
    }
}

/// Names as the element's property and the command line take them.
impl std::str::FromStr for DetectorKind {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        [DetectorKind::Haar, DetectorKind::Mtcnn, DetectorKind::Yunet, DetectorKind::Upstream]
            .into_iter()
            .find(|k| k.nick() == name)
            .ok_or_else(|| format!("unknown detector '{name}' (yunet, mtcnn, haar, upstream)"))
    }
}

impl std::fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.nick())
    }
}

/// The face detector chosen by the `detector` property.
pub enum Detector {
    Haar(HaarDetector),
    Mtcnn(Box<Mtcnn>),
    Yunet(Box<YuNet>),
    /// No detector of our own: the faces come with the buffer (`detector=upstream`).
    Upstream,
}

/// A detector's failure, naming the detector.
fn failed(detector: &'static str, reason: impl std::fmt::Display) -> crate::Error {
    crate::Error::Detector { detector, reason: reason.to_string() }
}

impl Detector {
    pub fn new(kind: DetectorKind, device: &candle_core::Device) -> crate::Result<Self> {
        match kind {
            DetectorKind::Haar => Ok(Detector::Haar(HaarDetector::new(HaarCascade::frontal_face()?))),
            DetectorKind::Mtcnn => Mtcnn::embedded(device).map(|m| Detector::Mtcnn(Box::new(m))).map_err(|e| failed("MTCNN weights", e)),
            DetectorKind::Yunet => YuNet::embedded(device).map(|m| Detector::Yunet(Box::new(m))).map_err(|e| failed("YuNet weights", e)),
            DetectorKind::Upstream => Ok(Detector::Upstream),
        }
    }

    pub fn kind(&self) -> DetectorKind {
        match self {
            Detector::Haar(_) => DetectorKind::Haar,
            Detector::Mtcnn(_) => DetectorKind::Mtcnn,
            Detector::Yunet(_) => DetectorKind::Yunet,
            Detector::Upstream => DetectorKind::Upstream,
        }
    }

    /// Whether `detect` needs the colour image.
    pub fn needs_color(&self) -> bool {
        matches!(self, Detector::Mtcnn(_) | Detector::Yunet(_))
    }

    /// Faces in the image: Haar reads `gray`, MTCNN and YuNet `rgb` (the same picture, same
    /// size).
    pub fn detect(&mut self, gray: &GrayImage, rgb: Option<&RgbImage>, params: &DetectParams, faces: &mut Vec<Face>) -> crate::Result<()> {
        match self {
            Detector::Haar(d) => {
                d.detect(gray, params, faces);
                Ok(())
            }
            Detector::Mtcnn(m) => {
                let rgb = rgb.ok_or_else(|| failed("MTCNN", "needs the colour image"))?;
                m.detect(rgb, params, faces).map_err(|e| failed("MTCNN", e))
            }
            Detector::Yunet(m) => {
                let rgb = rgb.ok_or_else(|| failed("YuNet", "needs the colour image"))?;
                m.detect(rgb, params, faces).map_err(|e| failed("YuNet", e))
            }
            Detector::Upstream => {
                faces.clear();
                Ok(())
            }
        }
    }
}

impl Detector {
    /// Re-finds `previous` faces in `rgb` (the colour detectors, [`Self::needs_color`]; Haar
    /// returns nothing).
    pub fn track(&mut self, rgb: &RgbImage, previous: &[Face], faces: &mut Vec<Face>) -> crate::Result<()> {
        faces.clear();
        match self {
            Detector::Haar(_) | Detector::Upstream => Ok(()),
            Detector::Mtcnn(m) => m.track(rgb, previous, faces).map_err(|e| failed("MTCNN", e)),
            Detector::Yunet(m) => m.track(rgb, previous, faces).map_err(|e| failed("YuNet", e)),
        }
    }
}

/// OpenCV's `groupRectangles`: clusters similar boxes (edges within `eps` of the smaller size),
/// keeps clusters with more than `min_neighbors` members as their average, then drops boxes that
/// sit inside a stronger one. `min_neighbors == 0` keeps every raw box. Holds its scratch
/// memory so that grouping every frame allocates nothing once warmed up.
#[derive(Debug, Default)]
pub struct RectGrouper {
    parent: Vec<usize>,
    /// Per root: coordinate sums and member count.
    sums: Vec<([i64; 4], usize)>,
    clusters: Vec<((i32, i32, i32, i32), usize)>,
}

fn find_root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

impl RectGrouper {
    pub fn group(&mut self, rects: &[(i32, i32, i32, i32)], min_neighbors: usize, eps: f64, out: &mut Vec<Face>) {
        out.clear();
        if min_neighbors == 0 {
            out.extend(rects.iter().map(|&(x, y, width, height)| Face::new(x, y, width, height, 1.0)));
            return;
        }
        let similar = |a: &(i32, i32, i32, i32), b: &(i32, i32, i32, i32)| {
            let delta = eps * (a.2.min(b.2) + a.3.min(b.3)) as f64 * 0.5;
            ((a.0 - b.0).abs() as f64) <= delta
                && ((a.1 - b.1).abs() as f64) <= delta
                && ((a.0 + a.2 - b.0 - b.2).abs() as f64) <= delta
                && ((a.1 + a.3 - b.1 - b.3).abs() as f64) <= delta
        };
        // Union-find partition (the equivalence closure, as cv::partition).
        let n = rects.len();
        self.parent.clear();
        self.parent.extend(0..n);
        for i in 0..n {
            for j in i + 1..n {
                if similar(&rects[i], &rects[j]) {
                    let (a, b) = (find_root(&mut self.parent, i), find_root(&mut self.parent, j));
                    if a != b {
                        self.parent[a] = b;
                    }
                }
            }
        }
        self.sums.clear();
        self.sums.resize(n, ([0; 4], 0));
        for (i, r) in rects.iter().enumerate() {
            let root = find_root(&mut self.parent, i);
            let e = &mut self.sums[root];
            e.0[0] += r.0 as i64;
            e.0[1] += r.1 as i64;
            e.0[2] += r.2 as i64;
            e.0[3] += r.3 as i64;
            e.1 += 1;
        }
        self.clusters.clear();
        for (s, count) in self.sums.iter().filter(|(_, count)| *count > min_neighbors) {
            let c = *count as f64;
            let avg = |v: i64| (v as f64 / c).round() as i32;
            self.clusters.push(((avg(s[0]), avg(s[1]), avg(s[2]), avg(s[3])), *count));
        }
        for (i, &(r1, n1)) in self.clusters.iter().enumerate() {
            let inside_stronger = self.clusters.iter().enumerate().any(|(j, &(r2, n2))| {
                let dx = (r2.2 as f64 * eps).round() as i32;
                let dy = (r2.3 as f64 * eps).round() as i32;
                i != j
                    && r1.0 >= r2.0 - dx
                    && r1.1 >= r2.1 - dy
                    && r1.0 + r1.2 <= r2.0 + r2.2 + dx
                    && r1.1 + r1.3 <= r2.1 + r2.3 + dy
                    && (n2 > n1.max(3) || n1 < 3)
            });
            if !inside_stronger {
                out.push(Face::new(r1.0, r1.1, r1.2, r1.3, n1 as f32));
            }
        }
    }
}

/// One-off grouping (see [`RectGrouper`]).
pub fn group_rectangles(rects: &[(i32, i32, i32, i32)], min_neighbors: usize, eps: f64, out: &mut Vec<Face>) {
    RectGrouper::default().group(rects, min_neighbors, eps, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_overlapping_boxes_and_drops_loners() {
        let rects = [(100, 100, 50, 50), (102, 98, 52, 50), (99, 101, 49, 51), (300, 300, 40, 40)];
        let mut out = Vec::new();
        group_rectangles(&rects, 2, 0.2, &mut out);
        assert_eq!(out.len(), 1);
        let f = out[0];
        assert_eq!((f.x, f.y, f.width, f.height, f.score), (100, 100, 50, 50, 3.0));
        group_rectangles(&rects, 0, 0.2, &mut out);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn drops_a_weak_box_inside_a_strong_one() {
        let mut rects = vec![(100, 100, 100, 100); 6];
        rects.extend([(130, 130, 30, 30); 2]);
        let mut out = Vec::new();
        group_rectangles(&rects, 1, 0.2, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].width, 100);
    }
}
