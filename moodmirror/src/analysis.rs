//! The per-frame core shared by the element and `moodmirror image`: detect faces on a grayscale
//! image, cut each into the emotion model's 48x48 input, classify all of them in one batch.
//! For video, faces are tracked: the full detector runs every `detect_interval` frames (on a
//! downscaled copy of large frames) and each track is re-found in between by searching a small
//! region around it; each track is reclassified every `classify_interval` frames and its
//! probabilities smoothed.

use crate::background::BackgroundDetector;
pub use crate::crop::{crop_face, crop_region, CropGeometry, CropRegion, EyeCrop, FER_CENTRE_BELOW_EYES, FER_SIDE_PER_EYE_DISTANCE};
use crate::detect::{DetectParams, Detector, DetectorKind, Face, GrayImage, RgbImage};
use crate::emotion::{argmax, EmotionClassifier, InputContract, NUM_CLASSES};
use crate::face::FaceResult;
use crate::image::resize_bilinear;
use crate::image::FramePlanes;
use crate::tracking::{Tracker, TrackerParams};

/// Full detection runs on frames at most this wide; larger frames are downscaled first.
pub const DETECT_MAX_WIDTH: usize = 640;
/// Tracks missed by the detector are still reported for this long (ns), so boxes do not blink.
const REPORT_GRACE_NS: u64 = 200_000_000;

/// What [`FaceAnalyzer::configure`] did: whether it started a detection worker, and what it
/// could not do.
#[derive(Debug, Default)]
pub struct Configured {
    pub worker_started: bool,
    pub problems: Vec<String>,
}

/// Video settings of the analysis (element properties).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoParams {
    pub detect_interval: u32,
    pub classify_interval: u32,
    pub tracker: TrackerParams,
}

/// Detector + classifier + the buffers they reuse from frame to frame.
pub struct FaceAnalyzer {
    pub detector: Detector,
    pub classifier: EmotionClassifier,
    pub crop: CropGeometry,
    faces: Vec<Face>,
    crops: Vec<u8>,
    probabilities: Vec<[f32; NUM_CLASSES]>,
    results: Vec<FaceResult>,
    pub tracker: Tracker,
    /// Downscaled luma for full detection on large frames, reused.
    small: Vec<u8>,
    /// Colour image at detection resolution (MTCNN), reused.
    rgb: Vec<u8>,
    local: Vec<Face>,
    due: Vec<usize>,
    schedule: ClassifySchedule,
    /// Full detection on a worker thread instead of the caller's (live video): see
    /// [`crate::background`]. `None`: full detections run in [`Self::analyze_frame`].
    background: Option<BackgroundDetector>,
    /// Faces of a finished background detection, to merge into the tracks.
    late_faces: Vec<Face>,
    /// A full detection was due while the worker was busy: submit on the next idle frame.
    detection_wanted: bool,
    /// The worker's current job is a frame from before a discontinuity: its faces are dropped.
    detection_is_stale: bool,
}

/// `params` (frame pixels) for a detection run at `1/scale` of the frame; the smallest face the
/// detector can see is 12 px with colour (MTCNN), 24 px otherwise (Haar's window).
fn detection_params(params: &DetectParams, scale: f32, color: bool) -> DetectParams {
    DetectParams {
        min_size: ((params.min_size as f32 / scale).round() as usize).max(if color { 12 } else { 24 }),
        max_size: params.max_size.map(|m| (m as f32 / scale) as usize),
        ..*params
    }
}

/// The size full detection runs at: the frame, or its downscale to `max_width` wide.
fn detection_size(width: usize, height: usize, max_width: usize) -> (usize, usize, f32) {
    if width <= max_width {
        return (width, height, 1.0);
    }
    let scale = width as f32 / max_width as f32;
    (max_width, ((height as f32 / scale).round() as usize).max(1), scale)
}

/// The face side, in detection pixels, YuNet's downscale keeps `min-face-size` faces at (it
/// finds faces from about 10 px; its boxes are checked against the size with 20 % slack).
const YUNET_MIN_FACE_PX: usize = 16;

/// Which tracks a frame classifies: those seen now that have no result yet or whose last one
/// is `classify-interval` frames old, topped up to an even share (on average tracks / interval
/// per frame: 2.4 for 12 tracks every 5 frames, as 2, 2, 3, 2, 3) with the stalest of the
/// others, classified a little early. Tracks born together would otherwise all fall due on the
/// same frame, a burst every interval.
#[derive(Debug, Default)]
struct ClassifySchedule {
    /// Tracks that may be classified before they are due.
    early: Vec<usize>,
    /// Classifications owed to the even share, in `classify-interval`ths of a face: each frame
    /// adds the tracks seen, each face classified pays `classify-interval`.
    credit: u64,
}

impl ClassifySchedule {
    /// The indices in `tracks` to classify on frame `frame_index`, into `due`.
    fn choose(&mut self, tracks: &[crate::tracking::Track], frame_index: u64, interval: u32, due: &mut Vec<usize>) {
        let interval = interval.max(1) as u64;
        let age = |t: &crate::tracking::Track| frame_index.saturating_sub(t.last_classified);
        due.clear();
        let mut seen = 0u64;
        for (i, t) in tracks.iter().enumerate() {
            if t.seen_now {
                seen += 1;
                if !t.classified || age(t) >= interval {
                    due.push(i);
                }
            }
        }
        self.credit += seen;
        let share = (self.credit / interval) as usize;
        if due.len() < share {
            self.early.clear();
            self.early.extend((0..tracks.len()).filter(|&i| tracks[i].seen_now && tracks[i].classified && age(&tracks[i]) < interval));
            self.early.sort_unstable_by_key(|&i| (std::cmp::Reverse(age(&tracks[i])), i));
            due.extend(self.early.iter().take(share - due.len()));
        }
        // At most one face's worth carries over: a burst of due tracks pays off what it
        // exceeds its share by, never more.
        self.credit = self.credit.saturating_sub(due.len() as u64 * interval).min(interval - 1);
    }
}

impl FaceAnalyzer {
    pub fn new(detector: Detector, classifier: EmotionClassifier) -> Self {
        Self {
            detector,
            classifier,
            crop: CropGeometry::default(),
            faces: Vec::new(),
            crops: Vec::new(),
            probabilities: Vec::new(),
            results: Vec::new(),
            tracker: Tracker::default(),
            small: Vec::new(),
            rgb: Vec::new(),
            local: Vec::new(),
            due: Vec::new(),
            schedule: ClassifySchedule::default(),
            background: None,
            late_faces: Vec::new(),
            detection_wanted: false,
            detection_is_stale: false,
        }
    }

    /// Decides what runs where, in one place: the full detector of `kind` (kept when it is the
    /// one running), on a worker thread when `in_background` (never for `upstream`, whose faces
    /// come with the frames), on the calling thread otherwise. What cannot be started leaves
    /// the previous arrangement (or detections on the calling thread) and is said in the result.
    pub fn configure(&mut self, kind: DetectorKind, in_background: bool, device: &candle_core::Device) -> Configured {
        let mut outcome = Configured::default();
        if self.detector.kind() != kind {
            match Detector::new(kind, device) {
                Ok(d) => self.detector = d,
                Err(e) => outcome.problems.push(format!("cannot switch detector: {e}")),
            }
        }
        let kind = self.detector.kind();
        if !in_background || kind == DetectorKind::Upstream {
            self.background = None;
        } else if self.background.as_ref().map(BackgroundDetector::kind) != Some(kind) {
            match BackgroundDetector::start(kind, device) {
                Ok(worker) => {
                    self.background = Some(worker);
                    outcome.worker_started = true;
                }
                Err(e) => {
                    self.background = None;
                    outcome.problems.push(format!("detections stay on the streaming thread: {e}"));
                }
            }
        }
        outcome
    }

    /// After a discontinuity (a flushing seek, a new stream, a new frame size): what was on
    /// screen before is not now, whatever the frames' times say (after a seek back they start
    /// again below the tracks' last sightings, and would never age them out). Ends every track
    /// (ids go on counting, so none is reused) and drops the faces of a full detection still
    /// running on a frame from before.
    pub fn forget_faces(&mut self) {
        self.tracker.end_all();
        self.schedule = ClassifySchedule::default();
        self.detection_is_stale = self.background.as_ref().is_some_and(BackgroundDetector::busy);
        self.detection_wanted = true;
        self.results.clear();
    }

    /// Whether full detections run on a worker thread.
    pub fn detects_in_background(&self) -> bool {
        self.background.is_some()
    }

    /// Detects and classifies every face of `image`. `black`/`white` give the luma range
    /// (0/255 for full range, 16/235 for video-range YUV).
    pub fn analyze(
        &mut self,
        image: &GrayImage,
        frame: Option<&FramePlanes>,
        params: &DetectParams,
        black: u8,
        white: u8,
    ) -> crate::Result<&[FaceResult]> {
        self.results.clear();
        if image.width == 0 || image.height == 0 {
            return Ok(&self.results);
        }
        self.detect_full(image, frame, params)?;
        self.faces.truncate(params.max_faces);
        let px = InputContract::PIXELS;
        self.crops.resize(self.faces.len() * px, 0);
        for (face, out) in self.faces.iter().zip(self.crops.chunks_exact_mut(px)) {
            crop_face(image, face, self.crop, black, white, out);
        }
        self.classifier.classify(&self.crops, &mut self.probabilities)?;
        for (face, p) in self.faces.iter().zip(&self.probabilities) {
            let (emotion, confidence) = argmax(p);
            // The crop used the whole box; what is reported is its part inside the picture.
            let Some(face) = face.clipped_to(image.width as i32, image.height as i32) else {
                continue;
            };
            self.results.push(FaceResult {
                face,
                probabilities: *p,
                raw_probabilities: *p,
                emotion,
                confidence,
                track_id: None,
                carried: false,
            });
        }
        Ok(&self.results)
    }

    /// The colour picture at detection resolution, for detectors that need it.
    fn prepare_rgb(&mut self, image: &GrayImage, frame: Option<&FramePlanes>, w: usize, h: usize) -> bool {
        self.prepare_rgb_region(image, frame, w, h, (0, 0, w, h))
    }

    /// [`Self::prepare_rgb`] for the output pixels `region` only.
    fn prepare_rgb_region(
        &mut self,
        image: &GrayImage,
        frame: Option<&FramePlanes>,
        w: usize,
        h: usize,
        region: (usize, usize, usize, usize),
    ) -> bool {
        if !self.detector.needs_color() {
            return false;
        }
        let gray_frame = FramePlanes::gray(image);
        frame.unwrap_or(&gray_frame).rgb_resized_region(w, h, region, &mut self.rgb);
        true
    }

    /// How wide full detections of a `width`-px frame run at most: [`DETECT_MAX_WIDTH`]; for
    /// YuNet, whose cost grows with the pixels and not with the faces, down to where
    /// `min-face-size` faces are [`YUNET_MIN_FACE_PX`] (at least 320 px) for frames wider than
    /// that: 512 for 720p and the default 40 px, 8-9 ms where 640x360 takes 18.5.
    fn detection_width(&self, width: usize, params: &DetectParams) -> usize {
        match self.detector {
            // Pictures up to DETECT_MAX_WIDTH keep their size, as for the other detectors.
            Detector::Yunet(_) if width > DETECT_MAX_WIDTH => {
                (width * YUNET_MIN_FACE_PX / params.min_size.max(1)).clamp(320, DETECT_MAX_WIDTH)
            }
            _ => DETECT_MAX_WIDTH,
        }
    }

    /// Full detection, on a downscaled copy when the frame is wider than [`Self::detection_width`].
    fn detect_full(&mut self, image: &GrayImage, frame: Option<&FramePlanes>, params: &DetectParams) -> candle_core::Result<()> {
        let (w, h, scale) = detection_size(image.width, image.height, self.detection_width(image.width, params));
        let color = self.prepare_rgb(image, frame, w, h);
        let rgb = color.then_some(RgbImage { data: &self.rgb, width: w, height: h, stride: w * 3 });
        let scaled = detection_params(params, scale, color);
        let result = if scale == 1.0 {
            self.detector.detect(image, rgb.as_ref(), &scaled, &mut self.faces)
        } else {
            self.small.resize(w * h, 0);
            resize_bilinear(image, &mut self.small, w, h);
            let small = GrayImage { data: &self.small, width: w, height: h, stride: w };
            self.detector.detect(&small, rgb.as_ref(), &scaled, &mut self.faces)
        };
        result.map_err(candle_core::Error::wrap)?;
        if scale != 1.0 {
            for f in &mut self.faces {
                f.scale(scale);
            }
        }
        Ok(())
    }

    /// Re-finds each track (`unseen_only`: each track not seen in this frame yet): YuNet runs
    /// its net on a small crop around the box, MTCNN O-Net on the box; Haar searches a region
    /// 1.6x its box at 0.8x to 1.25x its size.
    fn redetect_tracks(
        &mut self,
        image: &GrayImage,
        frame: Option<&FramePlanes>,
        params: &DetectParams,
        unseen_only: bool,
    ) -> candle_core::Result<()> {
        self.faces.clear();
        let wanted = |t: &&crate::tracking::Track| !unseen_only || !t.seen_now;
        if let Detector::Yunet(yunet) = &mut self.detector {
            // Crops sampled straight from the frame at full resolution, in its own format.
            let gray_frame = FramePlanes::gray(image);
            self.local.clear();
            self.local.extend(self.tracker.tracks.iter().filter(wanted).map(|t| t.face));
            return yunet.track_in(frame.unwrap_or(&gray_frame), &self.local, &mut self.faces);
        }
        if let Detector::Mtcnn(_) = self.detector {
            let (w, h, scale) = detection_size(image.width, image.height, DETECT_MAX_WIDTH);
            self.local.clear();
            for t in self.tracker.tracks.iter().filter(wanted) {
                let mut f = t.face;
                f.scale(1.0 / scale);
                self.local.push(f);
            }
            // Only the pixels O-Net will read: a few face-sized squares, not the whole frame.
            for i in 0..self.local.len() {
                let region = crate::detect::mtcnn::track_region(&self.local[i], w, h);
                self.prepare_rgb_region(image, frame, w, h, region);
            }
            let rgb = RgbImage { data: &self.rgb, width: w, height: h, stride: w * 3 };
            self.detector.track(&rgb, &self.local, &mut self.faces).map_err(candle_core::Error::wrap)?;
            for f in &mut self.faces {
                f.scale(scale);
            }
            return Ok(());
        }
        for ti in 0..self.tracker.tracks.len() {
            if !wanted(&&self.tracker.tracks[ti]) {
                continue;
            }
            let t = self.tracker.tracks[ti].face;
            let side = t.width.max(t.height) as f32;
            let margin = (side * 0.3) as i32;
            let x0 = (t.x - margin).clamp(0, image.width as i32) as usize;
            let y0 = (t.y - margin).clamp(0, image.height as i32) as usize;
            let x1 = (t.x + t.width + margin).clamp(0, image.width as i32) as usize;
            let y1 = (t.y + t.height + margin).clamp(0, image.height as i32) as usize;
            if x1 <= x0 + 24 || y1 <= y0 + 24 {
                continue;
            }
            let region = GrayImage { data: &image.data[y0 * image.stride + x0..], width: x1 - x0, height: y1 - y0, stride: image.stride };
            let local_params = DetectParams {
                min_size: ((side * 0.8) as usize).max(24),
                max_size: Some((side * 1.25) as usize),
                min_neighbors: params.min_neighbors.min(2),
                max_faces: 1,
                ..*params
            };
            self.detector.detect(&region, None, &local_params, &mut self.local).map_err(candle_core::Error::wrap)?;
            if let Some(best) = self.local.first() {
                self.faces.push(Face { x: best.x + x0 as i32, y: best.y + y0 as i32, ..*best });
            }
        }
        Ok(())
    }

    /// Analyses one video frame with tracking. `full_detection` says whether the full detector
    /// runs (the caller applies `detect-interval` and QoS); `now_ns` is the frame's running time.
    #[allow(clippy::too_many_arguments)]
    pub fn analyze_frame(
        &mut self,
        image: &GrayImage,
        frame: Option<&FramePlanes>,
        params: &DetectParams,
        video: &VideoParams,
        frame_index: u64,
        now_ns: u64,
        full_detection: bool,
        luma_range: (u8, u8),
    ) -> crate::Result<&[FaceResult]> {
        self.results.clear();
        if image.width == 0 || image.height == 0 {
            return Ok(&self.results);
        }
        let frame_size = (image.width as i32, image.height as i32);
        if self.background.is_some() {
            self.detection_wanted |= full_detection;
            self.follow_with_background(image, frame, params, video, now_ns, frame_size)?;
        } else if full_detection {
            self.detect_full(image, frame, params)?;
            self.faces.truncate(params.max_faces);
            self.tracker.update(&self.faces, now_ns, &video.tracker, true, frame_size);
            // A face the full detector missed in this frame (a soft or turned one scoring just
            // under its bar) is looked for where its track is, as between detections: carried
            // only when neither finds it.
            if self.tracker.tracks.iter().any(|t| !t.seen_now) {
                self.redetect_tracks(image, frame, params, true)?;
                self.tracker.update_unseen(&self.faces, now_ns, &video.tracker, frame_size);
            }
        } else if !self.tracker.tracks.is_empty() {
            self.redetect_tracks(image, frame, params, false)?;
            self.tracker.update(&self.faces, now_ns, &video.tracker, false, frame_size);
        }
        Ok(self.classify_and_report(image, params, video, frame_index, now_ns, luma_range, true)?)
    }

    /// One video frame whose faces come with it (`detector=upstream`: another element's ROI
    /// metas): they stand for this frame's full detection, and classification, smoothing and
    /// track ids work as for faces found here. Only faces given for this frame are reported.
    #[allow(clippy::too_many_arguments)]
    pub fn analyze_given_faces(
        &mut self,
        image: &GrayImage,
        given: &[Face],
        params: &DetectParams,
        video: &VideoParams,
        frame_index: u64,
        now_ns: u64,
        luma_range: (u8, u8),
    ) -> crate::Result<&[FaceResult]> {
        self.results.clear();
        if image.width == 0 || image.height == 0 {
            return Ok(&self.results);
        }
        self.faces.clear();
        self.faces.extend(given.iter().take(params.max_faces));
        self.tracker.update(&self.faces, now_ns, &video.tracker, true, (image.width as i32, image.height as i32));
        Ok(self.classify_and_report(image, params, video, frame_index, now_ns, luma_range, false)?)
    }

    /// Classifies the tracks due on this frame and lists the results to report (`carry`: also
    /// tracks not seen now, within their grace time).
    #[allow(clippy::too_many_arguments)]
    fn classify_and_report(
        &mut self,
        image: &GrayImage,
        params: &DetectParams,
        video: &VideoParams,
        frame_index: u64,
        now_ns: u64,
        luma_range: (u8, u8),
        carry: bool,
    ) -> candle_core::Result<&[FaceResult]> {
        let frame_size = (image.width as i32, image.height as i32);
        self.schedule.choose(&self.tracker.tracks, frame_index, video.classify_interval, &mut self.due);
        let px = InputContract::PIXELS;
        self.crops.resize(self.due.len() * px, 0);
        for (&i, out) in self.due.iter().zip(self.crops.chunks_exact_mut(px)) {
            crop_face(image, &self.tracker.tracks[i].face, self.crop, luma_range.0, luma_range.1, out);
        }
        self.classifier.classify(&self.crops, &mut self.probabilities)?;
        let temperature = self.classifier.temperature();
        for (&i, p) in self.due.iter().zip(&self.probabilities) {
            Tracker::observe(&mut self.tracker.tracks[i], p, temperature, frame_index, video.tracker.smoothing);
        }
        for t in &self.tracker.tracks {
            let recent = t.seen_now || (carry && now_ns.saturating_sub(t.last_seen_ns) <= REPORT_GRACE_NS);
            let visible = t.face.clipped_to(frame_size.0, frame_size.1);
            if let (true, true, true, Some(face)) = (t.classified, recent, self.results.len() < params.max_faces, visible) {
                let (emotion, confidence) = t.emotion();
                self.results.push(FaceResult {
                    face,
                    probabilities: t.probabilities,
                    raw_probabilities: t.raw_probabilities,
                    emotion,
                    confidence,
                    track_id: Some(t.id),
                    carried: !t.seen_now,
                });
            }
        }
        Ok(&self.results)
    }

    /// One frame with the full detector on the worker: hand it this frame when it is idle and a
    /// detection is wanted, follow the tracks locally, and merge the faces of a detection that
    /// finished since the last frame.
    fn follow_with_background(
        &mut self,
        image: &GrayImage,
        frame: Option<&FramePlanes>,
        params: &DetectParams,
        video: &VideoParams,
        now_ns: u64,
        frame_size: (i32, i32),
    ) -> candle_core::Result<()> {
        let finished = match self.background.as_mut() {
            Some(bg) => match bg.poll().map_err(candle_core::Error::wrap)? {
                // Faces found in a frame from before a discontinuity, or of another size (a
                // caps change since), are dropped.
                Some(_) if std::mem::take(&mut self.detection_is_stale) => false,
                Some((faces, (w, h))) if w.abs_diff(image.width) <= 1 && h.abs_diff(image.height) <= 1 => {
                    self.late_faces.clear();
                    self.late_faces.extend_from_slice(faces);
                    self.late_faces.truncate(params.max_faces);
                    true
                }
                _ => false,
            },
            None => false,
        };
        let idle = self.background.as_ref().is_some_and(|bg| !bg.busy());
        if self.detection_wanted && idle {
            self.submit_background(image, frame, params);
            self.detection_wanted = false;
        }
        if !self.tracker.tracks.is_empty() {
            self.redetect_tracks(image, frame, params, false)?;
            self.tracker.update(&self.faces, now_ns, &video.tracker, false, frame_size);
        }
        if finished {
            self.tracker.merge_detections(&self.late_faces, now_ns, &video.tracker, frame_size);
        }
        Ok(())
    }

    /// Copies the frame into the worker's buffers and hands them over.
    fn submit_background(&mut self, image: &GrayImage, frame: Option<&FramePlanes>, params: &DetectParams) {
        let (w, h, scale) = detection_size(image.width, image.height, self.detection_width(image.width, params));
        let color = self.detector.needs_color();
        let Some(bg) = self.background.as_mut() else { return };
        let Some(job) = bg.idle_job() else { return };
        // One copy, of what the detector reads (the frame for colour detectors, the luma for
        // Haar); the worker cuts it to detection size.
        let gray_frame = FramePlanes::gray(image);
        job.frame.copy_from(if color { frame.unwrap_or(&gray_frame) } else { &gray_frame });
        job.width = w;
        job.height = h;
        job.scale = scale;
        job.params = detection_params(params, scale, color);
        bg.submit();
    }

    /// The 48x48 crops of the last analysed frame (for inspection and tests).
    pub fn last_crops(&self) -> &[u8] {
        &self.crops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tracks seen on every frame, classified as the schedule says: per frame.
    fn classified_per_frame(tracks: usize, interval: u32, frames: u64) -> (Vec<usize>, u64) {
        let track = crate::tracking::Track {
            id: 0,
            face: Face { x: 0, y: 0, width: 50, height: 50, score: 1.0, landmarks: None },
            probabilities: [0.0; NUM_CLASSES],
            raw_probabilities: [0.0; NUM_CLASSES],
            classified: false,
            last_classified: 0,
            last_seen_ns: 0,
            seen_now: true,
            detected_size: (0, 0),
            detected_ns: 0,
        };
        let mut tracks = vec![track; tracks];
        let (mut schedule, mut due) = (ClassifySchedule::default(), Vec::new());
        let (mut counts, mut longest_gap) = (Vec::new(), 0);
        for frame in 0..frames {
            schedule.choose(&tracks, frame, interval, &mut due);
            for &i in &due {
                if tracks[i].classified {
                    longest_gap = longest_gap.max(frame - tracks[i].last_classified);
                }
                tracks[i].classified = true;
                tracks[i].last_classified = frame;
            }
            counts.push(due.len());
        }
        (counts, longest_gap)
    }

    #[test]
    fn classification_is_spread_evenly_at_the_interval_rate() {
        // 12 tracks born together, every 5 frames: all on the first frame, then 2.4 per frame
        // (2 or 3), each track again after at most 5 frames.
        let (counts, gap) = classified_per_frame(12, 5, 101);
        assert_eq!(counts[0], 12);
        assert!(counts[1..].iter().all(|&c| c == 2 || c == 3), "{counts:?}");
        assert_eq!(counts[1..].iter().sum::<usize>(), 240, "{counts:?}");
        assert!(gap <= 5, "a track waited {gap} frames");
        // Every frame when the interval is 1; fewer tracks than the interval: one at a time.
        let (counts, gap) = classified_per_frame(3, 1, 10);
        assert!(counts.iter().all(|&c| c == 3) && gap == 1);
        let (counts, gap) = classified_per_frame(2, 5, 51);
        assert_eq!(counts[1..].iter().sum::<usize>(), 20, "{counts:?}");
        assert!(counts[1..].iter().all(|&c| c <= 1) && gap <= 5, "{counts:?}");
    }

    #[test]
    fn crop_of_a_whole_image_box_resamples_it() {
        // A 96x96 horizontal ramp cut with a box covering it: the crop is the ramp at half size.
        let data: Vec<u8> = (0..96 * 96).map(|i| ((i % 96) * 2) as u8).collect();
        let image = GrayImage { data: &data, width: 96, height: 96, stride: 96 };
        let face = Face::new(0, 0, 96, 96, 1.0);
        let mut out = vec![0u8; InputContract::PIXELS];
        crop_face(&image, &face, CropGeometry::default(), 0, 255, &mut out);
        for x in 0..48 {
            let expected = (2 * x as i32 * 2 + 1).min(190);
            assert!((out[10 * 48 + x] as i32 - expected).abs() <= 1, "x {x}: {} vs {expected}", out[10 * 48 + x]);
        }
    }

    #[test]
    fn video_range_luma_is_stretched() {
        let data = vec![16u8; 64 * 64];
        let mut white = data.clone();
        white.fill(235);
        let face = Face::new(8, 8, 48, 48, 1.0);
        let mut out = vec![0u8; InputContract::PIXELS];
        crop_face(&GrayImage { data: &data, width: 64, height: 64, stride: 64 }, &face, CropGeometry::default(), 16, 235, &mut out);
        assert!(out.iter().all(|&p| p == 0));
        crop_face(&GrayImage { data: &white, width: 64, height: 64, stride: 64 }, &face, CropGeometry::default(), 16, 235, &mut out);
        assert!(out.iter().all(|&p| p == 255));
    }
}
