//! Face tracking across frames: greedy IoU matching of detections to tracks, stable track ids,
//! expiry of lost tracks, and per-track exponential smoothing of the emotion probabilities.

use crate::detect::Face;
use crate::emotion::{argmax, Temperature, NUM_CLASSES};

/// One followed face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Track {
    pub id: u64,
    pub face: Face,
    /// Smoothed probabilities (what is reported).
    pub probabilities: [f32; NUM_CLASSES],
    /// The last classification as the network gave it, before smoothing.
    pub raw_probabilities: [f32; NUM_CLASSES],
    pub classified: bool,
    /// Frame index of the last classification, to honour `classify-interval`.
    pub last_classified: u64,
    /// Time (ns) the face was last seen by a detector.
    pub last_seen_ns: u64,
    /// Whether a detector saw it in the current frame.
    pub seen_now: bool,
    /// Width and height at the last full detection: local re-detections may not grow the box
    /// past [`MAX_GROWTH`] times this.
    pub detected_size: (i32, i32),
    /// Time (ns) a full detection last confirmed it: of two tracks that come to follow one
    /// face, the one confirmed last stays.
    pub detected_ns: u64,
}

/// How much a face may grow between full detections before its track is ended (re-detection
/// drifting onto a larger region rather than a face walking toward the camera: at 30 fps and a
/// detection every 10 frames, a real face seldom grows 1.5x in a third of a second).
pub const MAX_GROWTH: f32 = 1.5;

/// Two tracks whose boxes overlap this much follow one face: one of them ends.
pub const DUPLICATE_IOU: f32 = 0.5;

/// A track whose box has less than this share of its area inside the frame ends.
pub const MIN_VISIBLE: f32 = 0.5;

/// A box may outgrow the frame by this much before its track ends: a face that fills the frame
/// has a box reaching past it (YuNet's boxes run from the hairline to below the chin), and
/// its re-detections vary by a few percent.
pub const MAX_FRAME_OVERSIZE: f32 = 1.3;

impl Track {
    pub fn emotion(&self) -> (usize, f32) {
        argmax(&self.probabilities)
    }
}

/// Intersection over union of two boxes.
pub fn iou(a: &Face, b: &Face) -> f32 {
    let ix = ((a.x + a.width).min(b.x + b.width) - a.x.max(b.x)).max(0) as f32;
    let iy = ((a.y + a.height).min(b.y + b.height) - a.y.max(b.y)).max(0) as f32;
    let inter = ix * iy;
    let union = (a.width * a.height + b.width * b.height) as f32 - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerParams {
    /// Minimum IoU for a detection to continue a track.
    pub min_iou: f32,
    /// Drop a track not seen for this long (ns).
    pub max_age_ns: u64,
    /// Weight of the past in the probability average, per classification (0 = no smoothing).
    pub smoothing: f32,
}

impl Default for TrackerParams {
    fn default() -> Self {
        Self { min_iou: 0.3, max_age_ns: 1_000_000_000, smoothing: 0.6 }
    }
}

#[derive(Debug, Default)]
pub struct Tracker {
    pub tracks: Vec<Track>,
    next_id: u64,
    /// Scratch for matching: (iou, track index, detection index). Reused: no per-frame allocation.
    pairs: Vec<(f32, usize, usize)>,
    matched_detection: Vec<bool>,
    refreshed: Vec<bool>,
}

impl Tracker {
    /// Ends every track; new ones get new ids (an id is never reused within a run).
    pub fn end_all(&mut self) {
        self.tracks.clear();
    }

    /// Matches `detections` (the full set found in this frame, or the local re-detections of
    /// existing tracks) to tracks; unmatched detections start new tracks when `may_create`.
    /// Afterwards each track's `seen_now` says whether it was matched.
    /// `frame` is the picture's (width, height): tracks mostly outside it, larger than it (past [`MAX_FRAME_OVERSIZE`]), or
    /// grown past [`MAX_GROWTH`] since their last full detection end.
    pub fn update(&mut self, detections: &[Face], now_ns: u64, params: &TrackerParams, may_create: bool, frame: (i32, i32)) {
        for t in &mut self.tracks {
            t.seen_now = false;
        }
        self.take_matches(detections, now_ns, params, may_create);
        if may_create {
            self.start_unmatched(detections, now_ns);
        }
        self.prune(now_ns, params, frame);
    }

    /// Re-detections of the tracks a full detection of this frame missed (`detections`, found
    /// near them): each continues the unseen track it overlaps most; tracks already seen in
    /// this frame keep their box.
    pub fn update_unseen(&mut self, detections: &[Face], now_ns: u64, params: &TrackerParams, frame: (i32, i32)) {
        self.take_matches(detections, now_ns, params, false);
        self.prune(now_ns, params, frame);
    }

    /// Moves each track not yet seen in this frame to the detection it overlaps most (best
    /// pairs first), marking it seen; with `full` the detection also resets the size the track
    /// may grow from.
    fn take_matches(&mut self, detections: &[Face], now_ns: u64, params: &TrackerParams, full: bool) {
        self.pair_up(detections, params.min_iou);
        for &(_, ti, di) in &self.pairs {
            if self.tracks[ti].seen_now || self.matched_detection[di] {
                continue;
            }
            let t = &mut self.tracks[ti];
            t.face = detections[di];
            t.seen_now = true;
            t.last_seen_ns = now_ns;
            if full {
                t.detected_size = (t.face.width, t.face.height);
                t.detected_ns = now_ns;
            }
            self.matched_detection[di] = true;
        }
        self.end_duplicates();
    }

    /// Ends each track seen now whose box overlaps another's by [`DUPLICATE_IOU`] (one face
    /// followed twice: a stale track re-found on a face that a full detection gave its own
    /// track), keeping the one a full detection confirmed last, then the older.
    fn end_duplicates(&mut self) {
        let n = self.tracks.len();
        let mut ended = std::mem::take(&mut self.refreshed);
        ended.clear();
        ended.resize(n, false);
        for a in 0..n {
            for b in a + 1..n {
                let (ta, tb) = (&self.tracks[a], &self.tracks[b]);
                if ended[a] || ended[b] || !ta.seen_now || !tb.seen_now || iou(&ta.face, &tb.face) < DUPLICATE_IOU {
                    continue;
                }
                // Older tracks come first: `b` ends unless a detection confirmed it later.
                ended[if tb.detected_ns > ta.detected_ns { a } else { b }] = true;
            }
        }
        let mut index = 0;
        self.tracks.retain(|_| {
            index += 1;
            !ended[index - 1]
        });
        self.refreshed = ended;
    }

    /// The (IoU, track, detection) pairs overlapping at least `min_iou`, best first (ties: older
    /// tracks first), and no detection matched yet.
    fn pair_up(&mut self, detections: &[Face], min_iou: f32) {
        self.pairs.clear();
        for (ti, t) in self.tracks.iter().enumerate() {
            for (di, d) in detections.iter().enumerate() {
                let overlap = iou(&t.face, d);
                if overlap >= min_iou {
                    self.pairs.push((overlap, ti, di));
                }
            }
        }
        self.pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        self.matched_detection.clear();
        self.matched_detection.resize(detections.len(), false);
    }

    /// A new track for each detection no track took.
    fn start_unmatched(&mut self, detections: &[Face], now_ns: u64) {
        for (di, d) in detections.iter().enumerate() {
            if !self.matched_detection[di] {
                self.tracks.push(Track {
                    id: self.next_id,
                    face: *d,
                    probabilities: [0.0; NUM_CLASSES],
                    raw_probabilities: [0.0; NUM_CLASSES],
                    classified: false,
                    last_classified: 0,
                    last_seen_ns: now_ns,
                    seen_now: true,
                    detected_size: (d.width, d.height),
                    detected_ns: now_ns,
                });
                self.next_id += 1;
            }
        }
    }

    /// Full-detection results of an earlier frame (a background detection): a detection that
    /// overlaps a track refreshes it (the box stays where tracking has it now, and the size it
    /// may grow from is reset); the others start tracks, which tracking follows from there.
    pub fn merge_detections(&mut self, detections: &[Face], now_ns: u64, params: &TrackerParams, frame: (i32, i32)) {
        self.pair_up(detections, params.min_iou);
        let mut refreshed = std::mem::take(&mut self.refreshed);
        refreshed.clear();
        refreshed.resize(self.tracks.len(), false);
        for &(_, ti, di) in &self.pairs {
            if refreshed[ti] || self.matched_detection[di] {
                continue;
            }
            let (t, d) = (&mut self.tracks[ti], &detections[di]);
            t.detected_size = (d.width.max(t.face.width), d.height.max(t.face.height));
            t.detected_ns = now_ns;
            t.last_seen_ns = now_ns;
            refreshed[ti] = true;
            self.matched_detection[di] = true;
        }
        self.refreshed = refreshed;
        self.start_unmatched(detections, now_ns);
        self.prune(now_ns, params, frame);
    }

    /// Ends tracks unseen for too long, grown past [`MAX_GROWTH`], larger than the frame ([`MAX_FRAME_OVERSIZE`]) or
    /// mostly outside it.
    fn prune(&mut self, now_ns: u64, params: &TrackerParams, frame: (i32, i32)) {
        let (frame_w, frame_h) = frame;
        self.tracks.retain(|t| {
            let grown =
                t.face.width as f32 > MAX_GROWTH * t.detected_size.0 as f32 || t.face.height as f32 > MAX_GROWTH * t.detected_size.1 as f32;
            let too_big =
                t.face.width as f32 > MAX_FRAME_OVERSIZE * frame_w as f32 || t.face.height as f32 > MAX_FRAME_OVERSIZE * frame_h as f32;
            let fresh = t.seen_now || now_ns.saturating_sub(t.last_seen_ns) <= params.max_age_ns;
            fresh && !grown && !too_big && t.face.visible_fraction(frame_w, frame_h) >= MIN_VISIBLE
        });
    }

    /// Folds a new classification into a track's smoothed probabilities. With the model's
    /// calibration `temperature` the average runs over the uncalibrated probabilities and what is
    /// reported is calibrated after it: the labels and how fast they change are the model's own,
    /// whatever the temperature (sharper calibrated probabilities would hold an old label longer).
    pub fn observe(track: &mut Track, probabilities: &[f32; NUM_CLASSES], temperature: Option<f32>, frame: u64, smoothing: f32) {
        let keep = if track.classified { smoothing.clamp(0.0, 0.99) } else { 0.0 };
        let (new, old) = match temperature {
            Some(t) => (Temperature::undo(probabilities, t), Temperature::undo(&track.probabilities, t)),
            None => (*probabilities, track.probabilities),
        };
        let smoothed: [f32; NUM_CLASSES] = std::array::from_fn(|c| keep * old[c] + (1.0 - keep) * new[c]);
        track.probabilities = match temperature {
            Some(t) => Temperature::apply(&smoothed, t),
            None => smoothed,
        };
        track.raw_probabilities = *probabilities;
        track.classified = true;
        track.last_classified = frame;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: (i32, i32) = (1920, 1080);

    fn face(x: i32, y: i32) -> Face {
        Face::new(x, y, 100, 100, 5.0)
    }

    #[test]
    fn tracks_that_grow_leave_or_outsize_the_frame_end() {
        let params = TrackerParams::default();
        let mut t = Tracker::default();
        t.update(&[face(100, 100), face(600, 100), face(1000, 100)], 0, &params, true, (1280, 720));
        // Local re-detections: the first drifts 1.6x larger, the second mostly leaves the
        // frame, the third moves a little and stays.
        let grown = Face::new(70, 70, 160, 160, 5.0);
        let leaving = Face::new(1240, 100, 100, 100, 5.0); // 60 of 100 px outside
        let staying = Face::new(1010, 305, 104, 100, 5.0);
        t.update(&[grown], 1, &params, false, (1280, 720));
        assert!(t.tracks.iter().all(|tr| tr.id != 0), "a track grown 1.6x ends");
        let mut t2 = Tracker::default();
        t2.update(&[face(1200, 100), face(1000, 300)], 0, &params, true, (1280, 720));
        t2.update(&[leaving, staying], 1, &params, false, (1280, 720));
        assert_eq!(t2.tracks.iter().map(|tr| tr.id).collect::<Vec<_>>(), vec![1]);
        // A face much larger than the frame never survives, even from a full detection; one
        // that fills it, its box reaching a little past the edges, stays.
        let mut t3 = Tracker::default();
        t3.update(&[Face::new(-50, -50, 300, 300, 1.0)], 0, &params, true, (200, 200));
        assert!(t3.tracks.is_empty());
        t3.update(&[Face::new(20, -10, 160, 215, 1.0)], 0, &params, true, (200, 200));
        t3.update(&[Face::new(18, -12, 165, 222, 1.0)], 1, &params, false, (200, 200));
        assert_eq!(t3.tracks.len(), 1, "a face filling the frame keeps its track");
        // A full detection resets the size the track may grow from.
        let mut t4 = Tracker::default();
        t4.update(&[face(100, 100)], 0, &params, true, FRAME);
        t4.update(&[Face::new(90, 90, 140, 140, 5.0)], 1, &params, true, FRAME);
        t4.update(&[Face::new(80, 80, 190, 190, 5.0)], 2, &params, false, FRAME);
        assert_eq!(t4.tracks.len(), 1);
    }

    #[test]
    fn a_late_detection_refreshes_tracks_it_overlaps_and_adds_the_others() {
        let params = TrackerParams::default();
        let mut t = Tracker::default();
        t.update(&[face(100, 100)], 0, &params, true, FRAME);
        // Tracking moved the face to x=110 since the detected frame; the detection (at x=104)
        // keeps the tracked box and id, and a second face found there starts a track.
        t.update(&[face(110, 100)], 10, &params, false, FRAME);
        t.merge_detections(&[face(104, 100), face(600, 300)], 20, &params, FRAME);
        assert_eq!(t.tracks.len(), 2);
        assert_eq!((t.tracks[0].id, t.tracks[0].face.x, t.tracks[0].last_seen_ns), (0, 110, 20));
        assert_eq!((t.tracks[1].id, t.tracks[1].face.x), (1, 600));
        assert!(t.tracks[1].seen_now && !t.tracks[1].classified, "classified on this frame");
    }

    #[test]
    fn boxes_are_clipped_to_the_frame() {
        let f = Face::new(-10, 700, 100, 100, 1.0);
        let c = f.clipped_to(1280, 720).expect("partly inside");
        assert_eq!((c.x, c.y, c.width, c.height), (0, 700, 90, 20));
        assert!((f.visible_fraction(1280, 720) - 0.18).abs() < 1e-6);
        assert!(Face::new(1300, 0, 10, 10, 1.0).clipped_to(1280, 720).is_none());
    }

    fn one_hot(c: usize, p: f32) -> [f32; NUM_CLASSES] {
        let mut a = [(1.0 - p) / 6.0; NUM_CLASSES];
        a[c] = p;
        a
    }

    #[test]
    fn ids_stay_with_moving_faces_and_expire() {
        let params = TrackerParams::default();
        let mut t = Tracker::default();
        t.update(&[face(0, 0), face(300, 0)], 0, &params, true, FRAME);
        assert_eq!(t.tracks.iter().map(|t| t.id).collect::<Vec<_>>(), vec![0, 1]);
        // Both move 10 px, listed in the other order: ids follow the faces.
        t.update(&[face(310, 5), face(10, 5)], 33_000_000, &params, true, FRAME);
        let id_at = |t: &Tracker, x: i32| t.tracks.iter().find(|tr| tr.face.x == x).map(|tr| tr.id);
        assert_eq!(id_at(&t, 10), Some(0));
        assert_eq!(id_at(&t, 310), Some(1));
        // Face 1 leaves; kept while young, dropped after max age; a new face gets a new id.
        t.update(&[face(20, 5)], 500_000_000, &params, true, FRAME);
        assert_eq!(t.tracks.len(), 2);
        assert!(!t.tracks[1].seen_now);
        t.update(&[face(30, 5), face(600, 0)], 1_600_000_000, &params, true, FRAME);
        assert_eq!(t.tracks.iter().map(|t| t.id).collect::<Vec<_>>(), vec![0, 2]);
    }

    #[test]
    fn smoothing_removes_flicker_and_follows_a_real_change() {
        // 30 fps: 2 s of a sad face whose raw classification flickers to neutral on every third
        // frame, then a real change to neutral.
        let (sad, neutral) = (4, 6);
        let mut raw = Vec::new();
        for i in 0..60 {
            raw.push(if i % 3 == 2 { one_hot(neutral, 0.55) } else { one_hot(sad, 0.6) });
        }
        raw.extend((0..30).map(|_| one_hot(neutral, 0.7)));
        let label_changes = |smoothing: f32| {
            let mut track = Tracker::default();
            track.update(&[face(0, 0)], 0, &TrackerParams::default(), true, FRAME);
            let tr = &mut track.tracks[0];
            let mut labels = Vec::new();
            for (i, p) in raw.iter().enumerate() {
                Tracker::observe(tr, p, None, i as u64, smoothing);
                labels.push(tr.emotion().0);
            }
            labels
        };
        let unsmoothed = label_changes(0.0);
        let flips = |l: &[usize]| l.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(flips(&unsmoothed[..60]) >= 30, "raw labels flicker");
        let smoothed = label_changes(0.6);
        assert_eq!(flips(&smoothed[..60]), 0, "smoothed labels hold steady: {:?}", &smoothed[..60]);
        assert!(smoothed[..60].iter().all(|&l| l == sad));
        // The real change shows within 5 frames (1/6 s at 30 fps).
        let first_neutral = smoothed[60..].iter().position(|&l| l == neutral).expect("follows the change");
        assert!(first_neutral <= 5, "took {first_neutral} frames");
        assert!(smoothed[66..].iter().all(|&l| l == neutral));
    }

    #[test]
    fn a_calibration_temperature_changes_what_is_shown_not_the_labels() {
        // The same flickering sequence seen by a model without and with a temperature (its
        // classifications are then the calibrated ones): the labels frame by frame are the same,
        // and each shown probability is the uncalibrated average at that temperature.
        let t = 0.6;
        let raw: Vec<[f32; NUM_CLASSES]> = (0..40)
            .map(|i| {
                if i % 4 == 3 {
                    one_hot(6, 0.5)
                } else if i < 25 {
                    one_hot(4, 0.45)
                } else {
                    one_hot(6, 0.8)
                }
            })
            .collect();
        let run = |temperature: Option<f32>| {
            let mut tracker = Tracker::default();
            tracker.update(&[face(0, 0)], 0, &TrackerParams::default(), true, FRAME);
            let tr = &mut tracker.tracks[0];
            raw.iter()
                .enumerate()
                .map(|(i, p)| {
                    let seen = temperature.map_or(*p, |t| Temperature::apply(p, t));
                    Tracker::observe(tr, &seen, temperature, i as u64, 0.6);
                    (tr.emotion().0, tr.probabilities, tr.raw_probabilities)
                })
                .collect::<Vec<_>>()
        };
        let (plain, calibrated) = (run(None), run(Some(t)));
        for ((l0, p0, _), (l1, p1, raw1)) in plain.iter().zip(&calibrated) {
            assert_eq!(l0, l1);
            let expected = Temperature::apply(p0, t);
            assert!(expected.iter().zip(p1).all(|(a, b)| (a - b).abs() < 1e-4), "{expected:?} vs {p1:?}");
            assert!(raw1.iter().sum::<f32>() > 0.99);
        }
        assert!(calibrated.iter().any(|c| c.0 == 6) && calibrated.iter().any(|c| c.0 == 4));
    }
}
