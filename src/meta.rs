//! The metadata moodmirror attaches to buffers, and a reader for it.
//!
//! Per face: one `GstVideoRegionOfInterestMeta` of type `face` with two params structures,
//! `detection` (`confidence`) and `emotion` (`label`, `confidence`, `class-id`, one double per
//! class), the convention of `facedetect` and DL Streamer. Per frame: one `GstCustomMeta` named
//! `MoodMirrorMeta` whose structure holds `faces`, a list of `face` structures (`x`, `y`, `width`,
//! `height`, `score`, `emotion`, `confidence`, `probabilities` as an array in class order, and one
//! double per class), easy to read from Python and C.

use moodmirror::emotion::{CLASS_NAMES, NUM_CLASSES};
use moodmirror::face::FaceResult;

pub const CUSTOM_META_NAME: &str = "MoodMirrorMeta";

/// Registers `MoodMirrorMeta` (idempotent; called from `plugin_init`).
pub fn register() {
    if !gst::meta::CustomMeta::is_registered(CUSTOM_META_NAME) {
        // No tags: transforms that keep untagged metas (videoconvert, queue, tee…) carry it on.
        gst::meta::CustomMeta::register(CUSTOM_META_NAME, &[]);
    }
}

/// One face as read back from a buffer's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceMeta {
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
    pub score: f64,
    pub emotion: String,
    pub confidence: f64,
    /// In [`CLASS_NAMES`] order.
    pub probabilities: [f64; NUM_CLASSES],
    /// Stable id across frames when the element tracks faces.
    pub track_id: Option<u64>,
    /// Five landmarks (x, y) when the detector gives them: eyes, nose, mouth corners.
    pub landmarks: Option<[[f64; 2]; 5]>,
    /// Not found in this frame: carried over by its track from an earlier one.
    pub carried: bool,
    /// The last classification before smoothing, in [`CLASS_NAMES`] order (`None` from metas
    /// written before the field existed).
    pub raw_probabilities: Option<[f64; NUM_CLASSES]>,
    /// The emotion weights' name.
    pub model_name: Option<String>,
}

fn class_array(a: &[f32; NUM_CLASSES]) -> gst::Array {
    gst::Array::new(a.iter().map(|&p| p as f64))
}

fn class_array_from(s: &gst::StructureRef, field: &str) -> Option<[f64; NUM_CLASSES]> {
    let a = s.get::<gst::Array>(field).ok()?;
    let v: Vec<f64> = a.iter().filter_map(|x| x.get::<f64>().ok()).collect();
    v.try_into().ok()
}

fn landmarks_array(f: &moodmirror::detect::Face) -> Option<gst::Array> {
    f.landmarks.map(|points| gst::Array::new(points.iter().flat_map(|p| [p[0] as f64, p[1] as f64])))
}

fn landmarks_from(s: &gst::StructureRef) -> Option<[[f64; 2]; 5]> {
    let a = s.get::<gst::Array>("landmarks").ok()?;
    let v: Vec<f64> = a.iter().filter_map(|x| x.get::<f64>().ok()).collect();
    (v.len() == 10).then(|| std::array::from_fn(|i| [v[2 * i], v[2 * i + 1]]))
}

/// One double field per class, named after it.
fn with_class_fields(mut b: gst::structure::Builder, probabilities: &[f32; NUM_CLASSES]) -> gst::structure::Builder {
    for (name, p) in CLASS_NAMES.iter().zip(probabilities) {
        b = b.field(*name, *p as f64);
    }
    b
}

fn emotion_fields(builder: gst::structure::Builder, r: &FaceResult) -> gst::structure::Builder {
    let b = builder.field("label", r.label()).field("confidence", r.confidence as f64).field("class-id", r.emotion as i32);
    with_class_fields(b, &r.probabilities)
}

/// DL Streamer's object id for a track: its converters treat 0 as "no id", so ids start at 1.
pub fn object_id(track_id: u64) -> i32 {
    i32::try_from(track_id.saturating_add(1)).unwrap_or(i32::MAX)
}

/// One `face` structure for the custom meta and bus messages.
pub fn face_structure(r: &FaceResult) -> gst::Structure {
    let f = r.face;
    let probabilities = class_array(&r.probabilities);
    let b = gst::Structure::builder("face")
        .field("x", f.x)
        .field("y", f.y)
        .field("width", f.width)
        .field("height", f.height)
        .field("score", f.score as f64)
        .field("emotion", r.label())
        .field("confidence", r.confidence as f64)
        .field("probabilities", probabilities)
        .field("raw-probabilities", class_array(&r.raw_probabilities))
        .field("track-id", r.track_id.map(|id| id as i64).unwrap_or(-1))
        .field("carried", r.carried);
    let b = match landmarks_array(&f) {
        Some(points) => b.field("landmarks", points),
        None => b,
    };
    with_class_fields(b, &r.probabilities).build()
}

/// The `faces` list value shared by the custom meta and the element message.
pub fn faces_list(results: &[FaceResult]) -> gst::List {
    gst::List::new(results.iter().map(face_structure))
}

/// Attaches ROI metas and the `MoodMirrorMeta` custom meta for `results` to `buffer`.
/// Boxes are clipped to the frame (`width` x `height`). The ROI params also carry what Intel
/// DL Streamer's tools read (`gvametaconvert`, `gvawatermark`): `detection` with the normalised
/// box (`x_min` … `y_max`) and `label_id`; `emotion` with `label_id`, `model_name` (the
/// emotion weights' name) and `attribute_name=emotion`; an `object_id` param (`id`, the track
/// id + 1) for tracked faces.
pub fn attach(buffer: &mut gst::BufferRef, results: &[FaceResult], width: u32, height: u32, model_name: &str) {
    for r in results {
        let rect = frame_rect(&r.face, width, height);
        let mut roi = gst_video::VideoRegionOfInterestMeta::add(buffer, "face", rect);
        if let Some(id) = r.track_id {
            roi.set_id(i32::try_from(id).unwrap_or(i32::MAX));
        }
        for param in face_params(r, rect, width, height, model_name, true) {
            roi.add_param(param);
        }
    }
    attach_custom(buffer, results, width, height, model_name);
}

/// A face's box cut to the frame, as ROI metas hold it.
fn frame_rect(f: &moodmirror::detect::Face, width: u32, height: u32) -> (u32, u32, u32, u32) {
    let x = f.x.clamp(0, width as i32) as u32;
    let y = f.y.clamp(0, height as i32) as u32;
    let w = ((f.x.saturating_add(f.width)).clamp(0, width as i32) as u32).saturating_sub(x);
    let h = ((f.y.saturating_add(f.height)).clamp(0, height as i32) as u32).saturating_sub(y);
    (x, y, w, h)
}

/// The ROI params of one face: `emotion`, and unless the ROI came with its own, `detection` and
/// (tracked faces) `object_id`.
fn face_params(
    r: &FaceResult,
    (x, y, w, h): (u32, u32, u32, u32),
    width: u32,
    height: u32,
    model_name: &str,
    detection: bool,
) -> Vec<gst::Structure> {
    let f = r.face;
    let mut params = Vec::with_capacity(3);
    if detection {
        let (fw, fh) = (width.max(1) as f64, height.max(1) as f64);
        let mut d = gst::Structure::builder("detection")
            .field("confidence", f.score as f64)
            .field("label", "face")
            .field("label_id", 0i32)
            .field("x_min", x as f64 / fw)
            .field("y_min", y as f64 / fh)
            .field("x_max", (x + w) as f64 / fw)
            .field("y_max", (y + h) as f64 / fh)
            .field("track-id", r.track_id.map(|id| id as i64).unwrap_or(-1))
            .field("carried", r.carried);
        if let Some(points) = landmarks_array(&f) {
            d = d.field("landmarks", points);
        }
        params.push(d.build());
    }
    let emotion = emotion_fields(gst::Structure::builder("emotion"), r)
        .field("raw-probabilities", class_array(&r.raw_probabilities))
        .field("label_id", r.emotion as i32)
        .field("model_name", model_name)
        .field("attribute_name", "emotion");
    params.push(emotion.build());
    if let (Some(id), true) = (r.track_id, detection) {
        params.push(gst::Structure::builder("object_id").field("id", object_id(id)).build());
    }
    params
}

/// The `MoodMirrorMeta` of a frame.
fn attach_custom(buffer: &mut gst::BufferRef, results: &[FaceResult], width: u32, height: u32, model_name: &str) {
    let mut meta = gst::meta::CustomMeta::add(buffer, CUSTOM_META_NAME).ok();
    if let Some(meta) = meta.as_mut() {
        let s = meta.mut_structure();
        s.set("faces", faces_list(results));
        s.set("frame-width", width as i32);
        s.set("frame-height", height as i32);
        s.set("model-name", model_name);
    }
}

/// A face ROI meta another element put on the buffer, as `detector=upstream` reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamFace {
    pub face: moodmirror::detect::Face,
    /// The track id its `object_id` param gives (DL Streamer's id − 1), if any.
    pub track_id: Option<u64>,
}

/// The `face` ROI metas already on `buffer`, cut to the frame; those of zero size or wholly
/// outside the frame go to `skipped` (the element logs them) instead.
pub fn upstream_faces(
    buffer: &gst::BufferRef,
    width: u32,
    height: u32,
    faces: &mut Vec<UpstreamFace>,
    skipped: &mut Vec<(u32, u32, u32, u32)>,
) {
    faces.clear();
    skipped.clear();
    for m in buffer.iter_meta::<gst_video::VideoRegionOfInterestMeta>().filter(|m| m.roi_type() == "face") {
        let rect = m.rect();
        let (x, y, w, h) = (rect.0 as i64, rect.1 as i64, rect.2 as i64, rect.3 as i64);
        let face = moodmirror::detect::Face::new(
            x.min(i32::MAX as i64) as i32,
            y.min(i32::MAX as i64) as i32,
            w.min(i32::MAX as i64) as i32,
            h.min(i32::MAX as i64) as i32,
            1.0,
        );
        let confidence = m.param("detection").and_then(|d| d.get::<f64>("confidence").ok());
        let track_id = m
            .param("object_id")
            .and_then(|p| p.get::<i32>("id").ok())
            .and_then(|id| u64::try_from(id).ok())
            .and_then(|id| id.checked_sub(1));
        match face.clipped_to(width as i32, height as i32) {
            Some(clipped) if w > 0 && h > 0 => {
                faces.push(UpstreamFace { face: moodmirror::detect::Face { score: confidence.unwrap_or(1.0) as f32, ..clipped }, track_id })
            }
            _ => skipped.push(rect),
        }
    }
}

/// `detector=upstream`: adds each result's `emotion` param to the `face` ROI meta it came from
/// (and `detection` / `object_id` where that ROI has none), rather than new ROI metas; then the
/// frame's `MoodMirrorMeta`.
pub fn attach_to_upstream(buffer: &mut gst::BufferRef, results: &[FaceResult], width: u32, height: u32, model_name: &str) {
    for mut m in buffer.iter_meta_mut::<gst_video::VideoRegionOfInterestMeta>() {
        if m.roi_type() != "face" {
            continue;
        }
        let (x, y, w, h) = m.rect();
        let given = moodmirror::detect::Face::new(x as i32, y as i32, w as i32, h as i32, 0.0);
        let Some(rect) = given.clipped_to(width as i32, height as i32).map(|f| frame_rect(&f, width, height)) else { continue };
        let Some(r) = results.iter().find(|r| frame_rect(&r.face, width, height) == rect) else { continue };
        let has_detection = m.param("detection").is_some();
        let has_object_id = m.param("object_id").is_some();
        for param in face_params(r, rect, width, height, model_name, !has_detection) {
            if param.name() == "object_id" && has_object_id {
                continue;
            }
            m.add_param(param);
        }
    }
    attach_custom(buffer, results, width, height, model_name);
}

fn face_from_structure(s: &gst::StructureRef, model_name: Option<&str>) -> Option<FaceMeta> {
    let mut probabilities = [0f64; NUM_CLASSES];
    for (p, name) in probabilities.iter_mut().zip(CLASS_NAMES) {
        *p = s.get::<f64>(name).ok()?;
    }
    Some(FaceMeta {
        x: s.get("x").ok()?,
        y: s.get("y").ok()?,
        width: s.get("width").ok()?,
        height: s.get("height").ok()?,
        score: s.get("score").ok()?,
        emotion: s.get("emotion").ok()?,
        confidence: s.get("confidence").ok()?,
        probabilities,
        track_id: s.get::<i64>("track-id").ok().and_then(|id| u64::try_from(id).ok()),
        landmarks: landmarks_from(s),
        carried: s.get::<bool>("carried").unwrap_or(false),
        raw_probabilities: class_array_from(s, "raw-probabilities"),
        model_name: model_name.map(str::to_owned),
    })
}

/// The faces of `buffer`'s `MoodMirrorMeta`; `None` when the buffer has no such meta.
pub fn faces(buffer: &gst::BufferRef) -> Option<Vec<FaceMeta>> {
    let meta = gst::meta::CustomMeta::from_buffer(buffer, CUSTOM_META_NAME).ok()?;
    let list = meta.structure().get::<gst::List>("faces").ok()?;
    let model_name = meta.structure().get::<String>("model-name").ok();
    Some(
        list.iter().filter_map(|v| v.get::<gst::Structure>().ok()).filter_map(|s| face_from_structure(&s, model_name.as_deref())).collect(),
    )
}

/// The faces of `buffer`'s `face` ROI metas (what any ROI-aware element sees).
pub fn roi_faces(buffer: &gst::BufferRef) -> Vec<FaceMeta> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .filter(|m| m.roi_type() == "face")
        .filter_map(|m| {
            let (x, y, width, height) = m.rect();
            let emotion = m.param("emotion")?;
            let detection = m.param("detection");
            let score = detection.and_then(|d| d.get::<f64>("confidence").ok()).unwrap_or(0.0);
            let track_id = detection.and_then(|d| d.get::<i64>("track-id").ok()).and_then(|id| u64::try_from(id).ok());
            let mut probabilities = [0f64; NUM_CLASSES];
            for (p, name) in probabilities.iter_mut().zip(CLASS_NAMES) {
                *p = emotion.get::<f64>(name).ok()?;
            }
            Some(FaceMeta {
                x: x as i32,
                y: y as i32,
                width: width as i32,
                height: height as i32,
                score,
                emotion: emotion.get("label").ok()?,
                confidence: emotion.get("confidence").ok()?,
                probabilities,
                track_id,
                landmarks: detection.and_then(landmarks_from),
                carried: detection.and_then(|d| d.get::<bool>("carried").ok()).unwrap_or(false),
                raw_probabilities: class_array_from(emotion, "raw-probabilities"),
                model_name: emotion.get::<String>("model_name").ok(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use moodmirror::detect::Face;

    #[test]
    fn metadata_round_trips_through_both_readers() {
        gst::init().expect("gst init");
        register();
        let result = FaceResult {
            face: Face::new(10, 20, 30, 40, 7.0),
            probabilities: [0.05, 0.0, 0.05, 0.7, 0.1, 0.0, 0.1],
            emotion: 3,
            confidence: 0.7,
            track_id: Some(12),
            carried: true,
            raw_probabilities: [0.1, 0.0, 0.1, 0.6, 0.1, 0.0, 0.1],
        };
        let mut result = result;
        result.face.landmarks = Some([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]);
        let mut buffer = gst::Buffer::new();
        attach(buffer.get_mut().expect("writable"), &[result], 640, 480, "moodmirror-test");
        let from_custom = faces(&buffer).expect("custom meta");
        let from_roi = roi_faces(&buffer);
        assert_eq!(from_custom.len(), 1);
        assert_eq!(from_roi.len(), 1);
        for f in [&from_custom[0], &from_roi[0]] {
            assert_eq!((f.x, f.y, f.width, f.height), (10, 20, 30, 40));
            assert_eq!(f.emotion, "happy");
            assert!((f.confidence - 0.7).abs() < 1e-6);
            assert!((f.probabilities[3] - 0.7).abs() < 1e-6);
            assert_eq!(f.score, 7.0);
            assert_eq!(f.track_id, Some(12));
            assert_eq!(f.landmarks.map(|l| l[4]), Some([9.0, 10.0]));
            assert!(f.carried);
            assert_eq!(f.raw_probabilities.map(|p| (p[3] * 10.0).round()), Some(6.0));
            assert_eq!(f.model_name.as_deref(), Some("moodmirror-test"));
        }
        assert!(faces(&gst::Buffer::new()).is_none());
        let dl = dlstreamer_objects(&buffer);
        assert_eq!(dl.len(), 1);
        assert_eq!(dl[0].id, Some(13), "object_id is the track id + 1");
        assert_eq!(dl[0].emotion, Some(("happy".to_string(), "moodmirror-test".to_string(), Some(3))));
        let b = dl[0].bounding_box.expect("normalised box");
        assert!((b[0] - 10.0 / 640.0).abs() < 1e-9 && (b[3] - 60.0 / 480.0).abs() < 1e-9, "{b:?}");
    }

    /// What Intel DL Streamer's JSON converter (gvametaconvert) takes from one ROI, by its rules:
    /// the id from an `object_id` param's int `id` (0 means none); from a `detection` param the
    /// box only when all four normalised doubles are there; from any other param a
    /// classification only when it has string `label` and `model_name`, named by
    /// `attribute_name` (else the param's name), with an optional int `label_id`.
    #[derive(Debug)]
    struct DlStreamerObject {
        id: Option<i32>,
        bounding_box: Option<[f64; 4]>,
        emotion: Option<(String, String, Option<i32>)>,
    }

    fn dlstreamer_objects(buffer: &gst::BufferRef) -> Vec<DlStreamerObject> {
        buffer
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .map(|m| {
                let id = m.param("object_id").and_then(|s| s.get::<i32>("id").ok()).filter(|&id| id != 0);
                let mut object = DlStreamerObject { id, bounding_box: None, emotion: None };
                for s in m.params() {
                    if s.name() == "detection" {
                        let get = |k: &str| s.get::<f64>(k).ok();
                        if let (Some(a), Some(b), Some(c), Some(d)) = (get("x_min"), get("y_min"), get("x_max"), get("y_max")) {
                            object.bounding_box = Some([a, b, c, d]);
                        }
                    } else if let (Ok(label), Ok(model)) = (s.get::<String>("label"), s.get::<String>("model_name")) {
                        let attribute = s.get::<String>("attribute_name").unwrap_or_else(|_| s.name().to_string());
                        if attribute == "emotion" {
                            object.emotion = Some((label, model, s.get::<i32>("label_id").ok()));
                        }
                    }
                }
                object
            })
            .collect()
    }
}
