//! `moodmirror evaluate --video CLIP --segments TRUTH.csv`: the element's own pipeline on a
//! labelled video, scored per frame against the truth of each labelled region (the CSV of
//! `make_face_clip.py`: `first_frame,last_frame,x,y,size,label` per segment and cell).
//!
//! Scores, per labelled cell-frame (the face whose box centre lies in the region):
//! present (a face is reported), fresh (found in that frame, not carried), frame accuracy,
//! settled accuracy and balanced accuracy (the last third of each segment, a missing face
//! counting as wrong) and frames to the right label (from the start of a segment until the label
//! first equals the truth).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use gst::prelude::*;
use moodmirror::emotion::{CLASS_NAMES as EMOTIONS, NUM_CLASSES};
use serde::Serialize;

use crate::annotate::{quote, ElementStage};
use crate::stall::{stall_error, StallWatch, STALL_LIMIT};

/// One labelled region over a range of frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub first_frame: usize,
    pub last_frame: usize,
    pub x: i64,
    pub y: i64,
    pub size: i64,
    pub label: usize,
}

/// Reads the truth CSV: a header naming at least `first_frame,last_frame,x,y,size,label`
/// (other columns ignored; a BOM accepted), one row per segment and region.
pub fn read_segments(path: &Path) -> Result<Vec<Segment>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else { bail!("{}: empty file", path.display()) };
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let column = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .with_context(|| format!("{}: the header lacks the column '{name}' ({header})", path.display()))
    };
    let idx = [column("first_frame")?, column("last_frame")?, column("x")?, column("y")?, column("size")?, column("label")?];
    let mut segments = Vec::new();
    for (n, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let field = |i: usize| fields.get(idx[i]).copied().unwrap_or("");
        let number = |i: usize| -> Result<i64> {
            field(i).parse().with_context(|| format!("{} line {}: '{}' is not a whole number", path.display(), n + 1, field(i)))
        };
        let label = field(5);
        let Some(label) = EMOTIONS.iter().position(|e| e.eq_ignore_ascii_case(label)) else {
            bail!("{} line {}: unknown emotion '{label}' (one of {})", path.display(), n + 1, EMOTIONS.join(", "));
        };
        let (first, last) = (number(0)?, number(1)?);
        if first < 0 || last < first {
            bail!("{} line {}: frames {first}..{last} are not a range", path.display(), n + 1);
        }
        segments.push(Segment {
            first_frame: first as usize,
            last_frame: last as usize,
            x: number(2)?,
            y: number(3)?,
            size: number(4)?,
            label,
        });
    }
    if segments.is_empty() {
        bail!("{}: no segments", path.display());
    }
    Ok(segments)
}

/// One reported face of a frame: its box centre, label, probabilities, whether it was carried.
#[derive(Debug, Clone)]
pub struct Reported {
    pub cx: f64,
    pub cy: f64,
    pub label: Option<usize>,
    pub probabilities: [f32; NUM_CLASSES],
    pub carried: bool,
}

/// The faces of each frame from the element's JSON lines (`moodmirrorjson`).
pub fn read_frames(path: &Path) -> Result<Vec<Vec<Reported>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut frames = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{} line {}: not JSON", path.display(), n + 1))?;
        let mut faces = Vec::new();
        for o in value["objects"].as_array().into_iter().flatten() {
            let num = |k: &str| o[k].as_f64().unwrap_or(0.0);
            let emotion = &o["emotion"];
            let label = emotion["label"].as_str().and_then(|l| EMOTIONS.iter().position(|e| *e == l));
            let mut probabilities = [0f32; NUM_CLASSES];
            for (c, name) in EMOTIONS.iter().enumerate() {
                probabilities[c] = emotion["probabilities"][name].as_f64().unwrap_or(0.0) as f32;
            }
            faces.push(Reported {
                cx: num("x") + num("w") / 2.0,
                cy: num("y") + num("h") / 2.0,
                label,
                probabilities,
                carried: o["detection"]["carried"].as_bool().unwrap_or(false),
            });
        }
        frames.push(faces);
    }
    Ok(frames)
}

/// The scores of a labelled video.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VideoScore {
    pub frames: usize,
    pub segments: usize,
    pub cell_frames: usize,
    pub present: f64,
    pub fresh: f64,
    pub frame_accuracy: f64,
    pub settled_accuracy: f64,
    pub settled_balanced_accuracy: f64,
    /// Per label present in the truth: settled recall.
    pub settled_recall: BTreeMap<String, f64>,
    /// Mean over the segments whose label was ever right.
    pub frames_to_right_label: f64,
    pub segments_ever_right: usize,
    /// Settled cell-frames with a face: truth row, reported column (for the confusion matrix).
    #[serde(skip)]
    pub settled_faces: Vec<(u8, [f32; NUM_CLASSES])>,
}

/// Scores `frames` against `segments`; regions move `drift` pixels per frame to the right
/// from their segment's first frame.
pub fn score(segments: &[Segment], frames: &[Vec<Reported>], drift: i64) -> VideoScore {
    let (mut total, mut right, mut present, mut fresh, mut settled, mut settled_right) = (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    let mut recall: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    let (mut latency_sum, mut ever_right) = (0usize, 0usize);
    let mut settled_faces = Vec::new();
    for s in segments {
        let mut first_right = None;
        let end = (s.last_frame + 1).min(frames.len());
        let settled_from = s.last_frame - (s.last_frame - s.first_frame) / 3;
        for (f, faces) in frames.iter().enumerate().take(end).skip(s.first_frame) {
            let x = s.x + (f - s.first_frame) as i64 * drift;
            let inside =
                |r: &&Reported| (x as f64..(x + s.size) as f64).contains(&r.cx) && (s.y as f64..(s.y + s.size) as f64).contains(&r.cy);
            let got = faces.iter().find(inside);
            let good = got.is_some_and(|r| r.label == Some(s.label));
            total += 1;
            right += usize::from(good);
            present += usize::from(got.is_some());
            fresh += usize::from(got.is_some_and(|r| !r.carried));
            if good && first_right.is_none() {
                first_right = Some(f - s.first_frame);
            }
            if f >= settled_from {
                settled += 1;
                settled_right += usize::from(good);
                let entry = recall.entry(s.label).or_default();
                entry.0 += 1;
                entry.1 += usize::from(good);
                if let Some(r) = got {
                    settled_faces.push((s.label as u8, r.probabilities));
                }
            }
        }
        if let Some(latency) = first_right {
            latency_sum += latency;
            ever_right += 1;
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let settled_recall: BTreeMap<String, f64> = recall.iter().map(|(&c, &(n, ok))| (EMOTIONS[c].to_string(), ratio(ok, n))).collect();
    VideoScore {
        frames: frames.len(),
        segments: segments.len(),
        cell_frames: total,
        present: ratio(present, total),
        fresh: ratio(fresh, total),
        frame_accuracy: ratio(right, total),
        settled_accuracy: ratio(settled_right, settled),
        settled_balanced_accuracy: if settled_recall.is_empty() {
            0.0
        } else {
            settled_recall.values().sum::<f64>() / settled_recall.len() as f64
        },
        settled_recall,
        frames_to_right_label: ratio(latency_sum, ever_right),
        segments_ever_right: ever_right,
        settled_faces,
    }
}

impl VideoScore {
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{} frames, {} labelled segments ({} cell-frames)\n\
             present                 {:.4}\n\
             found fresh             {:.4}\n\
             frame accuracy          {:.4}\n\
             settled accuracy        {:.4}\n\
             settled balanced        {:.4}\n\
             frames to right label   {:.1} (right at some point in {} of {} segments)\n",
            self.frames,
            self.segments,
            self.cell_frames,
            self.present,
            self.fresh,
            self.frame_accuracy,
            self.settled_accuracy,
            self.settled_balanced_accuracy,
            self.frames_to_right_label,
            self.segments_ever_right,
            self.segments,
        );
        for (label, r) in &self.settled_recall {
            out += &format!("  settled recall {label:<9}{r:.4}\n");
        }
        out
    }
}

/// What `evaluate --video` runs: the element, as `annotate` runs it, on a video.
pub struct VideoRun<'a> {
    pub video: &'a Path,
    pub element: ElementStage<'a>,
}

/// Runs `filesrc ! decodebin ! videoflip ! videoconvert ! moodmirror ! moodmirrorjson` on the video,
/// writing the JSON lines to `jsonl`; returns the frame count.
pub fn run_element(run: &VideoRun, jsonl: &Path) -> Result<usize> {
    if !run.video.is_file() {
        bail!("cannot read '{}': no such file", run.video.display());
    }
    gst::init()?;
    gstmoodmirror::plugin_register_static()?;
    let description = format!(
        "filesrc location=\"{video}\" ! decodebin ! {element} ! moodmirrorjson location=\"{out}\" ! fakesink sync=false",
        video = quote(run.video),
        element = run.element.description(),
        out = quote(jsonl),
    );
    let pipeline = gst::parse::launch(&description)?.downcast::<gst::Pipeline>().map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    // Frames through the element, for the stall watch (the JSON lines are read after the run).
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let mm = pipeline.by_name("mm").context("pipeline lacks mm")?;
    mm.static_pad("src").context("moodmirror src")?.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        counter.fetch_add(1, Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
    let bus = pipeline.bus().context("pipeline bus")?;
    // A failed state change posts its reason on the bus.
    let _ = pipeline.set_state(gst::State::Playing);
    let mut watch = StallWatch::new(Instant::now());
    let result = loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else {
            let n = seen.load(Ordering::Relaxed);
            if watch.stalled(n, pipeline.query_position::<gst::ClockTime>(), Instant::now(), STALL_LIMIT) {
                break Err(stall_error(run.video, n));
            }
            continue;
        };
        watch.moved(Instant::now());
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(e) => {
                break Err(anyhow::anyhow!("{}{}", e.error(), e.debug().map(|d| format!(" ({d})")).unwrap_or_default()));
            }
            _ => {}
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result.with_context(|| format!("running moodmirror on '{}'", run.video.display()))?;
    let frames = std::fs::read_to_string(jsonl).map(|t| t.lines().filter(|l| !l.trim().is_empty()).count()).unwrap_or(0);
    if frames == 0 {
        bail!("'{}' gave no video frames", run.video.display());
    }
    Ok(frames)
}

/// `evaluate --video`: runs the element, scores it, prints the scores and, with `report`,
/// writes report.json, frames.jsonl and confusion_matrix.png (settled frames with a face).
pub fn evaluate(run: &VideoRun, segments_csv: &Path, drift: i64, report: Option<&Path>) -> Result<VideoScore> {
    let segments = read_segments(segments_csv)?;
    if let Some(dir) = report {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::outputs::check_folder_writable(dir, "--report", dir)?;
    }
    let scratch;
    let jsonl: PathBuf = match report {
        Some(dir) => dir.join("frames.jsonl"),
        None => {
            scratch = tempfile::tempdir().context("creating a temporary folder")?;
            scratch.path().join("frames.jsonl")
        }
    };
    let frames_run = run_element(run, &jsonl)?;
    let mut frames = read_frames(&jsonl)?;
    let last = segments.iter().map(|s| s.last_frame).max().unwrap_or(0);
    if last >= frames.len() {
        eprintln!(
            "warning: the truth runs to frame {last} but the video gave {frames_run} frames: the frames after its end count as missing faces"
        );
        frames.resize_with(last + 1, Vec::new);
    }
    let mut score = score(&segments, &frames, drift);
    score.frames = frames_run;
    println!("video: {}", run.video.display());
    print!("{}", score.to_text());
    if let Some(dir) = report {
        let mut json = serde_json::to_value(&score)?;
        json["video"] = serde_json::json!(run.video.display().to_string());
        json["segments_csv"] = serde_json::json!(segments_csv.display().to_string());
        json["drift"] = serde_json::json!(drift);
        json["settings"] = serde_json::json!(format!("detector={}{}", run.element.detector.name(), run.element.video.properties()));
        let path = dir.join("report.json");
        std::fs::write(&path, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", path.display()))?;
        if !score.settled_faces.is_empty() {
            let (probabilities, labels): (Vec<[f32; NUM_CLASSES]>, Vec<u8>) = score.settled_faces.iter().map(|(l, p)| (*p, *l)).unzip();
            let confusion = moodmirror_train::evaluate::Report::compute(&probabilities, &labels);
            moodmirror_train::plots::confusion_heatmap(&confusion, &dir.join("confusion_matrix.png"))?;
        }
        println!("report written to {}", dir.display());
    }
    Ok(score)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(cx: f64, label: usize, carried: bool) -> Reported {
        Reported { cx, cy: 50.0, label: Some(label), probabilities: [0.0; NUM_CLASSES], carried }
    }

    #[test]
    fn scores_follow_the_truth_per_region_and_frame() {
        let happy = EMOTIONS.iter().position(|e| *e == "happy").expect("happy");
        let sad = EMOTIONS.iter().position(|e| *e == "sad").expect("sad");
        // Two regions, frames 0..=5: the left face right from frame 2 (fresh), the right one
        // missing on frame 0 and carried afterwards, always right.
        let segments = vec![
            Segment { first_frame: 0, last_frame: 5, x: 0, y: 0, size: 100, label: happy },
            Segment { first_frame: 0, last_frame: 5, x: 100, y: 0, size: 100, label: sad },
        ];
        let frames: Vec<Vec<Reported>> = (0..6)
            .map(|f| {
                let mut faces = vec![face(50.0, if f < 2 { sad } else { happy }, false)];
                if f > 0 {
                    faces.push(face(150.0, sad, true));
                }
                faces
            })
            .collect();
        let s = score(&segments, &frames, 0);
        assert_eq!(s.cell_frames, 12);
        assert!((s.present - 11.0 / 12.0).abs() < 1e-9, "{s:?}");
        assert!((s.fresh - 6.0 / 12.0).abs() < 1e-9, "{s:?}");
        assert!((s.frame_accuracy - 9.0 / 12.0).abs() < 1e-9, "{s:?}");
        // Settled: frames 4 and 5 of each (5 - 5/3 = 4).
        assert_eq!(s.settled_accuracy, 1.0);
        assert_eq!(s.frames_to_right_label, 1.5);
        assert_eq!(s.segments_ever_right, 2);
        // Regions that drift: at 20 px per frame the left region has left the face (centre x 50)
        // from frame 3 on.
        let left_only: Vec<Vec<Reported>> = frames.iter().map(|f| f[..1].to_vec()).collect();
        let drifting = score(&segments[..1], &left_only, 20);
        assert!(drifting.present < 1.0, "{drifting:?}");
    }

    #[test]
    fn the_truth_csv_is_read_by_its_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "\u{feff}segment,cell,first_frame,last_frame,x,y,size,image,label\n0,0,0,44,20,160,400,a.jpg,happy\n")
            .expect("write");
        let s = read_segments(&path).expect("read");
        assert_eq!(s, vec![Segment { first_frame: 0, last_frame: 44, x: 20, y: 160, size: 400, label: 3 }]);
        std::fs::write(&path, "first_frame,last_frame,x,y,size,label\n0,4,0,0,10,glee\n").expect("write");
        let err = read_segments(&path).expect_err("unknown label");
        assert!(err.to_string().contains("glee"), "{err}");
        std::fs::write(&path, "first_frame,x,y\n").expect("write");
        assert!(read_segments(&path).expect_err("columns").to_string().contains("last_frame"));
    }
}
