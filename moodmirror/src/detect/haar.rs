//! Viola–Jones face detection with OpenCV's Haar cascades (the XML of
//! `haarcascade_frontalface_default.xml`), evaluated on integral images over an image pyramid the
//! way OpenCV's `CascadeClassifier::detectMultiScale` does it, then grouped by neighbours.

use rayon::prelude::*;

use super::{DetectParams, Face, GrayImage, RectGrouper};
use crate::image::resize_bilinear;

/// One rectangle of a Haar feature, in window coordinates, with its weight.
#[derive(Debug, Clone, Copy)]
struct WeightedRect {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
    weight: f32,
}

/// A decision stump: `leaf[0]` when the normalised feature value < threshold, else `leaf[1]`.
#[derive(Debug, Clone, Copy)]
struct Stump {
    feature: usize,
    threshold: f32,
    leaves: [f32; 2],
}

#[derive(Debug, Clone)]
struct Stage {
    threshold: f32,
    stumps: Vec<Stump>,
}

/// A parsed stump-based Haar cascade.
#[derive(Debug, Clone)]
pub struct HaarCascade {
    window_w: usize,
    window_h: usize,
    features: Vec<Vec<WeightedRect>>,
    stages: Vec<Stage>,
}

/// OpenCV's cascade, embedded (Intel License Agreement, kept in the file; see weights/README.md).
pub static FRONTALFACE_XML: &str = include_str!("../../../weights/haarcascade_frontalface_default.xml");

/// OpenCV subtracts this from stage thresholds.
const THRESHOLD_EPS: f32 = 1e-5;

fn child<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<roxmltree::Node<'a, 'a>> {
    node.children().find(|c| c.has_tag_name(name))
}

fn numbers<T: std::str::FromStr>(node: Option<roxmltree::Node>) -> Result<Vec<T>, String> {
    let text = node.and_then(|n| n.text()).ok_or("missing numeric field")?;
    text.split_ascii_whitespace().map(|t| t.parse::<T>().map_err(|_| format!("bad number '{t}'"))).collect()
}

impl HaarCascade {
    pub fn frontal_face() -> crate::Result<Self> {
        Self::parse(FRONTALFACE_XML)
    }

    /// Parses OpenCV's "new" cascade format (stages / weakClassifiers / features) with stumps.
    pub fn parse(xml: &str) -> crate::Result<Self> {
        Self::parse_xml(xml).map_err(crate::Error::Cascade)
    }

    fn parse_xml(xml: &str) -> Result<Self, String> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| format!("cascade XML: {e}"))?;
        let cascade = doc.descendants().find(|n| n.has_tag_name("cascade")).ok_or("cascade XML: no <cascade> element")?;
        let feature_type = child(cascade, "featureType").and_then(|n| n.text()).unwrap_or("");
        if feature_type.trim() != "HAAR" {
            return Err(format!("cascade XML: featureType '{feature_type}', only HAAR is supported"));
        }
        let size = |name| -> Result<usize, String> {
            numbers::<usize>(child(cascade, name))?.first().copied().ok_or(format!("cascade XML: no <{name}>"))
        };
        let (window_w, window_h) = (size("width")?, size("height")?);
        let features = child(cascade, "features")
            .ok_or("cascade XML: no <features>")?
            .children()
            .filter(|n| n.is_element())
            .map(|f| {
                if numbers::<i32>(child(f, "tilted")).is_ok_and(|t| t.first() == Some(&1)) {
                    return Err("cascade XML: tilted features are not supported".to_string());
                }
                child(f, "rects")
                    .ok_or("feature without <rects>")?
                    .children()
                    .filter(|n| n.is_element())
                    .map(|r| {
                        let v = numbers::<f32>(Some(r))?;
                        if v.len() != 5 || v[..4].iter().any(|&c| c < 0.0) {
                            return Err(format!("bad feature rect {v:?}"));
                        }
                        let rect = WeightedRect { x: v[0] as u32, y: v[1] as u32, w: v[2] as u32, h: v[3] as u32, weight: v[4] };
                        if (rect.x + rect.w) as usize > window_w || (rect.y + rect.h) as usize > window_h {
                            return Err(format!("feature rect {v:?} outside the window"));
                        }
                        Ok(rect)
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .collect::<Result<Vec<_>, String>>()?;
        let stages = child(cascade, "stages")
            .ok_or("cascade XML: no <stages>")?
            .children()
            .filter(|n| n.is_element())
            .map(|s| {
                let threshold = numbers::<f32>(child(s, "stageThreshold"))?.first().copied().ok_or("stage without threshold")?;
                let stumps = child(s, "weakClassifiers")
                    .ok_or("stage without weakClassifiers")?
                    .children()
                    .filter(|n| n.is_element())
                    .map(|w| {
                        let nodes = numbers::<f64>(child(w, "internalNodes"))?;
                        let leaves = numbers::<f32>(child(w, "leafValues"))?;
                        if nodes.len() != 4 || leaves.len() != 2 {
                            return Err("only stump cascades (one node, two leaves) are supported".to_string());
                        }
                        let feature = nodes[2] as usize;
                        if feature >= features.len() {
                            return Err(format!("feature index {feature} out of range"));
                        }
                        Ok(Stump { feature, threshold: nodes[3] as f32, leaves: [leaves[0], leaves[1]] })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(Stage { threshold: threshold - THRESHOLD_EPS, stumps })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if stages.is_empty() {
            return Err("cascade XML: no stages".into());
        }
        Ok(Self { window_w, window_h, features, stages })
    }
}

/// A stump with its feature laid out for one integral-image stride: the cascade is walked in
/// order, so keeping everything a stump needs together keeps the walk in cache.
#[derive(Debug, Clone, Copy, Default)]
struct FlatStump {
    /// Integral-image offsets of the corners (top-left, top-right, bottom-left, bottom-right)
    /// of up to three rectangles, relative to the window's top-left corner.
    corners: [[u32; 4]; 3],
    weights: [f32; 3],
    threshold: f32,
    leaves: [f32; 2],
}

/// Per-scale working memory, kept between frames.
#[derive(Default)]
struct ScaleBuffers {
    scaled: Vec<u8>,
    sum: Vec<i32>,
    sqsum: Vec<f64>,
    /// The cascade's stumps for the current stride, in evaluation order.
    stumps: Vec<FlatStump>,
    stumps_stride: usize,
    candidates: Vec<(i32, i32, i32, i32)>,
}

/// The Haar detector: cascade plus reusable buffers.
pub struct HaarDetector {
    cascade: HaarCascade,
    buffers: Vec<ScaleBuffers>,
    candidates: Vec<(i32, i32, i32, i32)>,
    scales: Vec<f64>,
    grouper: RectGrouper,
}

impl HaarDetector {
    pub fn new(cascade: HaarCascade) -> Self {
        Self { cascade, buffers: Vec::new(), candidates: Vec::new(), scales: Vec::new(), grouper: RectGrouper::default() }
    }

    /// Scale factors OpenCV would visit for this image and parameters.
    fn scales(cascade: &HaarCascade, width: usize, height: usize, params: &DetectParams, scales: &mut Vec<f64>) {
        let (ww, wh) = (cascade.window_w as f64, cascade.window_h as f64);
        scales.clear();
        let mut factor = 1.0f64;
        let step = params.scale_factor.max(1.0001);
        loop {
            let win = ((ww * factor).round(), (wh * factor).round());
            let max = params.max_size.unwrap_or(usize::MAX) as f64;
            if win.0 > max || win.1 > max {
                break;
            }
            let scaled = ((width as f64 / factor).round(), (height as f64 / factor).round());
            if scaled.0 < ww || scaled.1 < wh {
                break;
            }
            if win.0 >= params.min_size as f64 && win.1 >= params.min_size as f64 {
                scales.push(factor);
            }
            factor *= step;
        }
    }

    /// Finds faces in a grayscale image; boxes in image pixels, `score` = neighbour count.
    pub fn detect(&mut self, image: &GrayImage, params: &DetectParams, faces: &mut Vec<Face>) {
        faces.clear();
        Self::scales(&self.cascade, image.width, image.height, params, &mut self.scales);
        let scales = &self.scales;
        if self.buffers.len() < scales.len() {
            self.buffers.resize_with(scales.len(), Default::default);
        }
        let cascade = &self.cascade;
        // Scales are independent: one task each (the largest images first keeps cores busy);
        // small images (tracking searches) are cheaper than the cost of farming them out.
        if image.width * image.height < 200_000 {
            for (buf, &factor) in self.buffers.iter_mut().zip(scales.iter()) {
                detect_at_scale(cascade, image, factor, buf);
            }
        } else {
            self.buffers[..scales.len()]
                .par_iter_mut()
                .zip(scales.par_iter())
                .for_each(|(buf, &factor)| detect_at_scale(cascade, image, factor, buf));
        }
        self.candidates.clear();
        for buf in &self.buffers[..scales.len()] {
            self.candidates.extend_from_slice(&buf.candidates);
        }
        self.grouper.group(&self.candidates, params.min_neighbors, 0.2, faces);
        faces.sort_by(|a, b| b.score.total_cmp(&a.score).then((b.width * b.height).cmp(&(a.width * a.height))));
        faces.truncate(params.max_faces);
    }
}

fn detect_at_scale(cascade: &HaarCascade, image: &GrayImage, factor: f64, buf: &mut ScaleBuffers) {
    buf.candidates.clear();
    let w = ((image.width as f64 / factor).round() as usize).max(1);
    let h = ((image.height as f64 / factor).round() as usize).max(1);
    buf.scaled.resize(w * h, 0);
    if w == image.width && h == image.height {
        for (y, row) in buf.scaled.chunks_exact_mut(w).enumerate() {
            row.copy_from_slice(&image.data[y * image.stride..][..w]);
        }
    } else {
        resize_bilinear(image, &mut buf.scaled, w, h);
    }
    // Integral images with a zero first row and column: (w+1) x (h+1).
    let stride = w + 1;
    buf.sum.resize(stride * (h + 1), 0);
    buf.sqsum.resize(stride * (h + 1), 0.0);
    buf.sum[..stride].fill(0);
    buf.sqsum[..stride].fill(0.0);
    for y in 0..h {
        let (mut row_sum, mut row_sq) = (0i32, 0f64);
        buf.sum[(y + 1) * stride] = 0;
        buf.sqsum[(y + 1) * stride] = 0.0;
        for x in 0..w {
            let p = buf.scaled[y * w + x] as i32;
            row_sum += p;
            row_sq += (p * p) as f64;
            let i = (y + 1) * stride + x + 1;
            buf.sum[i] = buf.sum[i - stride] + row_sum;
            buf.sqsum[i] = buf.sqsum[i - stride] + row_sq;
        }
    }
    if buf.stumps_stride != stride || buf.stumps.is_empty() {
        buf.stumps.clear();
        for stump in cascade.stages.iter().flat_map(|s| &s.stumps) {
            let mut flat = FlatStump { threshold: stump.threshold, leaves: stump.leaves, ..Default::default() };
            for (k, r) in cascade.features[stump.feature].iter().take(3).enumerate() {
                let (x, y, rw, rh) = (r.x as usize, r.y as usize, r.w as usize, r.h as usize);
                flat.corners[k] =
                    [y * stride + x, y * stride + x + rw, (y + rh) * stride + x, (y + rh) * stride + x + rw].map(|o| o as u32);
                flat.weights[k] = r.weight;
            }
            buf.stumps.push(flat);
        }
        buf.stumps_stride = stride;
    }
    let (ww, wh) = (cascade.window_w, cascade.window_h);
    if w < ww || h < wh {
        return;
    }
    let step = if factor > 2.0 { 1 } else { 2 };
    let win_w = (ww as f64 * factor).round() as i32;
    let win_h = (wh as f64 * factor).round() as i32;
    // Variance normalisation over the window less a 1-pixel border (OpenCV's `normrect`).
    let norm_area = ((ww - 2) * (wh - 2)) as f64;
    let n0 = stride + 1;
    let n1 = stride + 1 + ww - 2;
    let n2 = (wh - 1) * stride + 1;
    let n3 = (wh - 1) * stride + 1 + ww - 2;
    let sum = &buf.sum;
    let sqsum = &buf.sqsum;
    let stumps = &buf.stumps;
    for y in (0..=h - wh).step_by(step) {
        let mut x = 0;
        while x <= w - ww {
            let base = y * stride + x;
            let s = (sum[base + n0] - sum[base + n1] - sum[base + n2] + sum[base + n3]) as f64;
            let sq = sqsum[base + n0] - sqsum[base + n1] - sqsum[base + n2] + sqsum[base + n3];
            let nf = norm_area * sq - s * s;
            // OpenCV skips windows whose standard deviation is at most 10 (and one more step).
            if nf <= 0.0 || norm_area / nf.sqrt() >= 0.1 {
                x += 2 * step;
                continue;
            }
            // value / norm < threshold  ⇔  value < threshold * norm (norm > 0).
            let norm = nf.sqrt() as f32;
            let window = &sum[base..];
            let rect =
                |c: &[u32; 4]| (window[c[0] as usize] - window[c[1] as usize] - window[c[2] as usize] + window[c[3] as usize]) as f32;
            let mut next = 0;
            let passed = cascade.stages.iter().all(|stage| {
                let mut total = 0f32;
                for s in &stumps[next..next + stage.stumps.len()] {
                    let mut value = s.weights[0] * rect(&s.corners[0]) + s.weights[1] * rect(&s.corners[1]);
                    if s.weights[2] != 0.0 {
                        value += s.weights[2] * rect(&s.corners[2]);
                    }
                    total += s.leaves[(value >= s.threshold * norm) as usize];
                }
                next += stage.stumps.len();
                total >= stage.threshold
            });
            if passed {
                buf.candidates.push(((x as f64 * factor).round() as i32, (y as f64 * factor).round() as i32, win_w, win_h));
            }
            x += step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_opencv_frontal_face_cascade() {
        let c = HaarCascade::frontal_face().expect("embedded cascade parses");
        assert_eq!((c.window_w, c.window_h), (24, 24));
        assert_eq!(c.stages.len(), 25);
        assert_eq!(c.stages[0].stumps.len(), 9);
        assert_eq!(c.features.len(), 2913);
        assert!((c.stages[0].threshold - (-5.042_55 - THRESHOLD_EPS)).abs() < 1e-6);
    }

    #[test]
    fn rejects_malformed_cascades() {
        assert!(HaarCascade::parse("<opencv_storage/>").is_err());
        assert!(HaarCascade::parse("not xml").is_err());
        let lbp = "<opencv_storage><cascade><featureType>LBP</featureType></cascade></opencv_storage>";
        assert!(HaarCascade::parse(lbp).unwrap_err().to_string().contains("LBP"));
    }

    #[test]
    fn flat_and_tiny_images_have_no_faces() {
        let mut d = HaarDetector::new(HaarCascade::frontal_face().expect("cascade"));
        let params = DetectParams::default();
        let mut faces = Vec::new();
        for (w, h, v) in [(320usize, 240usize, 0u8), (320, 240, 255), (10, 10, 128), (1, 1, 0)] {
            let data = vec![v; w * h];
            d.detect(&GrayImage { data: &data, width: w, height: h, stride: w }, &params, &mut faces);
            assert!(faces.is_empty(), "{w}x{h} value {v}");
        }
    }
}
