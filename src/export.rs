//! The JSON-lines export: one object per frame, in the shape DL Streamer users know.
//!
//! ```json
//! {"timestamp": 33333333, "resolution": {"width": 1280, "height": 720},
//!  "objects": [{"x": 177, "y": 66, "w": 94, "h": 94, "id": 0,
//!               "detection": {"confidence": 41.0},
//!               "emotion": {"label": "happy", "confidence": 0.87,
//!                           "probabilities": {"angry": 0.01, ..., "neutral": 0.05}}}]}
//! ```
//! `timestamp` is the buffer PTS in nanoseconds (null when the buffer has none); `id` is the
//! face's track id (stable while the face stays in view; null for still images).

use serde_json::{json, Map, Value};

use crate::emotion::CLASS_NAMES;
use crate::meta::FaceMeta;

/// Keys every frame object has, and every object in `objects` (checked by the tests).
pub const FRAME_KEYS: [&str; 3] = ["timestamp", "resolution", "objects"];
pub const OBJECT_KEYS: [&str; 7] = ["x", "y", "w", "h", "id", "detection", "emotion"];

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

pub fn object_json(face: &FaceMeta) -> Value {
    let probabilities: Map<String, Value> = CLASS_NAMES
        .iter()
        .zip(face.probabilities)
        .map(|(c, p)| (c.to_string(), json!(round4(p))))
        .collect();
    let mut detection = json!({"confidence": face.score, "carried": face.carried});
    if let Some(points) = face.landmarks {
        detection["landmarks"] = json!(points.iter().map(|p| [round4(p[0]), round4(p[1])]).collect::<Vec<_>>());
    }
    json!({
        "x": face.x, "y": face.y, "w": face.width, "h": face.height,
        "id": face.track_id,
        "detection": detection,
        "emotion": {"label": face.emotion, "confidence": round4(face.confidence), "probabilities": probabilities},
    })
}

pub fn frame_json(pts: Option<gst::ClockTime>, width: u32, height: u32, faces: &[FaceMeta]) -> Value {
    json!({
        "timestamp": pts.map(|t| t.nseconds()),
        "resolution": {"width": width, "height": height},
        "objects": faces.iter().map(object_json).collect::<Vec<_>>(),
    })
}

/// Checks a parsed line against the schema above; the reason when it does not fit.
pub fn validate_frame(v: &Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("frame is not an object")?;
    for k in FRAME_KEYS {
        if !obj.contains_key(k) {
            return Err(format!("frame lacks '{k}'"));
        }
    }
    if !(v["timestamp"].is_u64() || v["timestamp"].is_null()) {
        return Err("timestamp is not an integer or null".into());
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_fit_the_schema() {
        let face = FaceMeta {
            x: 1,
            y: 2,
            width: 3,
            height: 4,
            score: 5.0,
            emotion: "sad".into(),
            confidence: 0.5,
            probabilities: [0.1, 0.0, 0.1, 0.1, 0.5, 0.1, 0.1],
            track_id: Some(3),
            landmarks: None,
            carried: false,
        };
        let v = frame_json(Some(gst::ClockTime::from_mseconds(40)), 640, 480, &[face]);
        validate_frame(&v).expect("valid");
        assert_eq!(v["timestamp"], 40_000_000);
        assert_eq!(v["objects"][0]["w"], 3);
        assert_eq!(v["objects"][0]["id"], 3);
        let mut bad = v.clone();
        bad["objects"][0]["emotion"]["label"] = json!("bored");
        assert!(validate_frame(&bad).is_err());
        assert!(validate_frame(&frame_json(None, 1, 1, &[])).is_ok());
    }
}
