//! The JSON-lines export: one object per frame, in the shape DL Streamer users know
//! (`gvametaconvert`'s fields next to moodmirror's own).
//!
//! ```json
//! {"timestamp": 33333333, "pts": 33333333, "source": "door-cam", "tags": {"site": "lab"},
//!  "resolution": {"width": 1280, "height": 720},
//!  "objects": [{"x": 177, "y": 66, "w": 94, "h": 94, "id": 0, "region_id": 0, "roi_type": "face",
//!               "detection": {"confidence": 0.93, "carried": false, "label": "face", "label_id": 0,
//!                             "bounding_box": {"x_min": 0.138, "y_min": 0.092, "x_max": 0.212, "y_max": 0.222}},
//!               "emotion": {"label": "happy", "label_id": 3, "confidence": 0.87, "model_name": "moodmirror-emotion",
//!                           "attribute_name": "emotion",
//!                           "probabilities": {"angry": 0.01, ..., "neutral": 0.05},
//!                           "raw_probabilities": {"angry": 0.02, ..., "neutral": 0.04}}}]}
//! ```
//! `timestamp` is the buffer's stream time in nanoseconds (as `gvametaconvert` writes it: the
//! PTS mapped through the segment, so a file starts at 0 and seeking keeps it consistent), `pts`
//! the raw PTS (both null when the buffer has none); `source` and `tags` appear when the
//! element's properties set them. `id` is the face's track id (stable while the face stays in
//! view; null for still images), `region_id` its index among this frame's faces;
//! `bounding_box` is normalised to the frame; `probabilities` are smoothed over the track,
//! `raw_probabilities` the last classification before smoothing.

use serde_json::{json, Map, Value};

use crate::meta::FaceMeta;
use moodmirror::emotion::CLASS_NAMES;

/// Keys every frame object has, and every object in `objects` (checked by the tests).
pub const FRAME_KEYS: [&str; 3] = ["timestamp", "resolution", "objects"];
pub const OBJECT_KEYS: [&str; 9] = ["x", "y", "w", "h", "id", "region_id", "roi_type", "detection", "emotion"];

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

fn class_map(p: &[f64; CLASS_NAMES.len()]) -> Map<String, Value> {
    CLASS_NAMES.iter().zip(p).map(|(c, p)| (c.to_string(), json!(round4(*p)))).collect()
}

/// One face of a `width` x `height` frame, `region_id` its index in the frame.
pub fn object_json(face: &FaceMeta, region_id: usize, width: u32, height: u32) -> Value {
    let (fw, fh) = (width.max(1) as f64, height.max(1) as f64);
    let mut detection = json!({
        "confidence": face.score, "carried": face.carried, "label": "face", "label_id": 0,
        "bounding_box": {
            "x_min": round4(face.x as f64 / fw), "y_min": round4(face.y as f64 / fh),
            "x_max": round4((face.x + face.width) as f64 / fw), "y_max": round4((face.y + face.height) as f64 / fh),
        },
    });
    if let Some(points) = face.landmarks {
        detection["landmarks"] = json!(points.iter().map(|p| [round4(p[0]), round4(p[1])]).collect::<Vec<_>>());
    }
    let label_id = CLASS_NAMES.iter().position(|c| *c == face.emotion);
    let mut emotion = json!({
        "label": face.emotion, "label_id": label_id, "confidence": round4(face.confidence),
        "attribute_name": "emotion", "model_name": face.model_name,
        "probabilities": class_map(&face.probabilities),
    });
    if let Some(raw) = &face.raw_probabilities {
        emotion["raw_probabilities"] = json!(class_map(raw));
    }
    json!({
        "x": face.x, "y": face.y, "w": face.width, "h": face.height,
        "id": face.track_id, "region_id": region_id, "roi_type": "face",
        "detection": detection,
        "emotion": emotion,
    })
}

/// What a line says about its frame besides the faces.
#[derive(Debug, Clone, Default)]
pub struct FrameInfo<'a> {
    /// Stream time of the buffer.
    pub timestamp: Option<gst::ClockTime>,
    pub pts: Option<gst::ClockTime>,
    pub width: u32,
    pub height: u32,
    /// `moodmirrorjson`'s `source` property, when set.
    pub source: Option<&'a str>,
    /// `moodmirrorjson`'s `tags` property (a JSON object), when set.
    pub tags: Option<&'a Value>,
}

pub fn frame_json(info: &FrameInfo, faces: &[FaceMeta]) -> Value {
    let mut v = json!({
        "timestamp": info.timestamp.map(|t| t.nseconds()),
        "pts": info.pts.map(|t| t.nseconds()),
        "resolution": {"width": info.width, "height": info.height},
        "objects": faces.iter().enumerate().map(|(i, f)| object_json(f, i, info.width, info.height)).collect::<Vec<_>>(),
    });
    if let Some(source) = info.source {
        v["source"] = json!(source);
    }
    if let Some(tags) = info.tags {
        v["tags"] = tags.clone();
    }
    v
}

/// A JSON line that does not fit the schema, and why.
#[derive(Debug, thiserror::Error)]
#[error("JSON line does not fit the moodmirrorjson schema: {0}")]
pub struct SchemaError(String);

/// Checks a parsed line against the schema above.
pub fn validate_frame(v: &Value) -> Result<(), SchemaError> {
    check_frame(v).map_err(SchemaError)
}

fn check_frame(v: &Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("frame is not an object")?;
    for k in FRAME_KEYS {
        if !obj.contains_key(k) {
            return Err(format!("frame lacks '{k}'"));
        }
    }
    for k in ["timestamp", "pts"] {
        if !(v[k].is_u64() || v[k].is_null()) {
            return Err(format!("{k} is not an integer or null"));
        }
    }
    if !(v.get("source").is_none_or(Value::is_string) && v.get("tags").is_none_or(Value::is_object)) {
        return Err("source must be a string and tags an object".into());
    }
    if !(v["resolution"]["width"].is_u64() && v["resolution"]["height"].is_u64()) {
        return Err("resolution lacks integer width/height".into());
    }
    for o in v["objects"].as_array().ok_or("objects is not an array")? {
        for k in OBJECT_KEYS {
            if o.get(k).is_none() {
                return Err(format!("object lacks '{k}'"));
            }
        }
        if !(o["id"].is_u64() || o["id"].is_null()) {
            return Err("object 'id' is not an integer or null".into());
        }
        for k in ["x", "y", "w", "h"] {
            if !o[k].is_i64() {
                return Err(format!("object '{k}' is not an integer"));
            }
        }
        let e = &o["emotion"];
        if !CLASS_NAMES.contains(&e["label"].as_str().unwrap_or("")) {
            return Err("emotion.label is not a FER2013 class".into());
        }
        let p = e["probabilities"].as_object().ok_or("emotion.probabilities is not an object")?;
        if p.len() != CLASS_NAMES.len() || CLASS_NAMES.iter().any(|c| !p[*c].is_f64()) {
            return Err("emotion.probabilities must have one number per class".into());
        }
        if !o["detection"]["confidence"].is_number() || !e["confidence"].is_number() {
            return Err("confidences must be numbers".into());
        }
        if !o["detection"]["carried"].is_boolean() {
            return Err("detection.carried must be true or false".into());
        }
        if !o["region_id"].is_u64() || o["roi_type"] != "face" || o["detection"]["label_id"] != 0 {
            return Err("region_id must be an integer, roi_type \"face\" and detection.label_id 0".into());
        }
        let b = &o["detection"]["bounding_box"];
        let corners: Vec<f64> = ["x_min", "y_min", "x_max", "y_max"].iter().filter_map(|k| b[*k].as_f64()).collect();
        if corners.len() != 4 || corners.iter().any(|c| !(0.0..=1.0).contains(c)) || corners[0] > corners[2] || corners[1] > corners[3] {
            return Err("detection.bounding_box must hold x_min <= x_max and y_min <= y_max in 0..=1".into());
        }
        if e["label_id"].as_u64().and_then(|i| CLASS_NAMES.get(i as usize)) != e["label"].as_str().as_ref() {
            return Err("emotion.label_id must be the index of emotion.label".into());
        }
        if e["attribute_name"] != "emotion" || !(e["model_name"].is_string() || e["model_name"].is_null()) {
            return Err("emotion.attribute_name must be \"emotion\" and model_name a string".into());
        }
        if let Some(raw) = e.get("raw_probabilities") {
            let raw = raw.as_object().ok_or("emotion.raw_probabilities is not an object")?;
            if raw.len() != CLASS_NAMES.len() || CLASS_NAMES.iter().any(|c| !raw[*c].is_f64()) {
                return Err("emotion.raw_probabilities must have one number per class".into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_fit_the_schema() {
        let face = FaceMeta {
            x: 64,
            y: 48,
            width: 32,
            height: 48,
            score: 5.0,
            emotion: "sad".into(),
            confidence: 0.5,
            probabilities: [0.1, 0.0, 0.1, 0.1, 0.5, 0.1, 0.1],
            track_id: Some(3),
            landmarks: None,
            carried: false,
            raw_probabilities: Some([0.0, 0.0, 0.2, 0.1, 0.6, 0.0, 0.1]),
            model_name: Some("emotion".into()),
        };
        let tags = json!({"site": "lab"});
        let info = FrameInfo {
            timestamp: Some(gst::ClockTime::from_mseconds(40)),
            pts: Some(gst::ClockTime::from_mseconds(1040)),
            width: 640,
            height: 480,
            source: Some("door-cam"),
            tags: Some(&tags),
        };
        let v = frame_json(&info, &[face]);
        validate_frame(&v).expect("valid");
        assert_eq!(v["timestamp"], 40_000_000);
        assert_eq!(v["pts"], 1_040_000_000u64);
        assert_eq!((v["source"].as_str(), &v["tags"]["site"]), (Some("door-cam"), &json!("lab")));
        let o = &v["objects"][0];
        assert_eq!((&o["w"], &o["id"], &o["region_id"], &o["roi_type"]), (&json!(32), &json!(3), &json!(0), &json!("face")));
        assert_eq!(o["detection"]["bounding_box"], json!({"x_min": 0.1, "y_min": 0.1, "x_max": 0.15, "y_max": 0.2}));
        assert_eq!((&o["emotion"]["label_id"], &o["emotion"]["model_name"]), (&json!(4), &json!("emotion")));
        assert_eq!(o["emotion"]["raw_probabilities"]["sad"], 0.6);
        for (path, value) in [
            (["emotion", "label"], json!("bored")),
            (["emotion", "label_id"], json!(2)),
            (["detection", "label_id"], json!(1)),
            (["detection", "bounding_box"], json!({"x_min": 0.5, "y_min": 0.1, "x_max": 0.2, "y_max": 0.2})),
        ] {
            let mut bad = v.clone();
            bad["objects"][0][path[0]][path[1]] = value;
            assert!(validate_frame(&bad).is_err(), "{path:?}");
        }
        let mut bad = v.clone();
        bad["tags"] = json!("site=lab");
        assert!(validate_frame(&bad).is_err());
        assert!(validate_frame(&frame_json(&FrameInfo { width: 1, height: 1, ..Default::default() }, &[])).is_ok());
    }
}
