//! `moodmirror report` (and `annotate --report`): a recording's emotions at a glance, from the
//! JSON lines `moodmirrorjson` writes. Per track a timeline of the seven (smoothed)
//! probabilities, a stacked share-of-time bar per face, `summary.csv`, and one overview of the
//! whole video; colours are the ones the element draws with.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

use moodmirror::draw::EMOTION_COLORS;
use moodmirror::emotion::{CLASS_NAMES, NUM_CLASSES};

#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ReportArgs {
    /// JSON lines from `moodmirrorjson` or `moodmirror annotate --jsonl`.
    pub jsonl: PathBuf,
    /// Folder for summary.csv and the PNGs (created if missing).
    #[cfg_attr(feature = "clap", arg(long))]
    pub out: PathBuf,
    /// Timelines only for tracks visible at least this long (summary.csv lists every track);
    /// by default every track gets one.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.0))]
    pub min_seconds: f64,
}

/// One frame a track appears in.
#[derive(Debug, Clone)]
struct Sample {
    frame: usize,
    probabilities: [f64; NUM_CLASSES],
    label: usize,
}

/// What a JSON-lines file holds, frame by frame.
#[derive(Debug, Default, Clone)]
pub struct Recording {
    /// Start of each frame, seconds.
    times: Vec<f64>,
    /// How long each frame stands for: to the next frame's start (the last: the median step).
    durations: Vec<f64>,
    tracks: BTreeMap<u64, Vec<Sample>>,
    /// Faces without a track id (still images), left out of the per-track outputs.
    pub untracked: usize,
    /// `(line number, reason)` of lines that could not be read.
    pub skipped: Vec<(usize, String)>,
}

fn class_array(v: &serde_json::Value) -> Option<[f64; NUM_CLASSES]> {
    let mut out = [0f64; NUM_CLASSES];
    for (o, name) in out.iter_mut().zip(CLASS_NAMES) {
        *o = v.get(name)?.as_f64()?;
    }
    Some(out)
}

/// A recording read one frame at a time: a file's lines, or messages from a broker.
#[derive(Debug, Default, Clone)]
pub struct RecordingBuilder {
    rec: Recording,
    /// Each frame's timestamp in seconds, when it has one.
    stamps: Vec<Option<f64>>,
    /// Faces (objects) read, with or without a track id.
    pub faces: usize,
}

impl RecordingBuilder {
    /// Adds one frame, `line` being its JSON (numbered `number` in what is skipped); false when it
    /// is not a frame of moodmirror's JSON (the reason is in `skipped`).
    pub fn push_line(&mut self, line: &str, number: usize) -> bool {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => self.push(&v, number),
            Err(e) => {
                self.rec.skipped.push((number, format!("not JSON: {e}")));
                false
            }
        }
    }

    /// [`RecordingBuilder::push_line`] for a parsed frame.
    pub fn push(&mut self, v: &serde_json::Value, number: usize) -> bool {
        let Some(objects) = v.get("objects").and_then(|o| o.as_array()) else {
            self.rec.skipped.push((number, "no \"objects\" array".into()));
            return false;
        };
        let frame = self.stamps.len();
        self.stamps.push(v.get("timestamp").and_then(|t| t.as_u64()).map(|ns| ns as f64 / 1e9));
        for o in objects {
            let emotion = &o["emotion"];
            let probabilities = class_array(&emotion["probabilities"]);
            let label = emotion["label"].as_str().and_then(|l| CLASS_NAMES.iter().position(|c| *c == l));
            let (Some(probabilities), Some(label)) = (probabilities, label) else {
                self.rec.skipped.push((number, "an object without emotion label and probabilities".into()));
                continue;
            };
            self.faces += 1;
            match o["id"].as_u64() {
                Some(id) => self.rec.tracks.entry(id).or_default().push(Sample { frame, probabilities, label }),
                None => self.rec.untracked += 1,
            }
        }
        true
    }

    pub fn frames(&self) -> usize {
        self.stamps.len()
    }

    /// Forgets the frames more than `seconds` older than the newest one (by their timestamps), so
    /// that a recording read for days keeps a bounded window; returns how many were dropped.
    pub fn keep_last(&mut self, seconds: f64) -> usize {
        let Some(newest) = self.stamps.iter().rev().find_map(|s| *s) else { return 0 };
        let first_kept = self.stamps.iter().position(|s| s.is_some_and(|t| t >= newest - seconds)).unwrap_or(0);
        if first_kept == 0 {
            return 0;
        }
        self.stamps.drain(..first_kept);
        for samples in self.rec.tracks.values_mut() {
            samples.retain(|s| s.frame >= first_kept);
            samples.iter_mut().for_each(|s| s.frame -= first_kept);
        }
        self.rec.tracks.retain(|_, samples| !samples.is_empty());
        first_kept
    }

    /// What could not be read so far: `(line or message number, reason)`.
    pub fn skipped(&self) -> &[(usize, String)] {
        &self.rec.skipped
    }

    /// The recording so far, with each frame's time and duration; `None` before the first frame.
    pub fn build(&self) -> Option<Recording> {
        if self.stamps.is_empty() {
            return None;
        }
        let mut rec = self.rec.clone();
        // Frames without a timestamp: placed at 30 frames/s after the previous one.
        let mut t = 0.0;
        for (i, s) in self.stamps.iter().enumerate() {
            t = match s {
                Some(v) => *v,
                None if i == 0 => 0.0,
                None => t + 1.0 / 30.0,
            };
            rec.times.push(t);
        }
        let mut steps: Vec<f64> = rec.times.windows(2).map(|w| (w[1] - w[0]).max(0.0)).collect();
        steps.sort_by(f64::total_cmp);
        let typical = steps.get(steps.len() / 2).copied().unwrap_or(1.0 / 30.0);
        rec.durations = rec.times.windows(2).map(|w| (w[1] - w[0]).max(0.0)).collect();
        rec.durations.push(typical);
        Some(rec)
    }
}

impl Recording {
    /// Reads `path`; a broken line is named in `skipped` and the rest is read.
    pub fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let mut builder = RecordingBuilder::default();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let number = i + 1;
            let line = line.with_context(|| format!("reading {} line {number}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            builder.push_line(&line, number);
        }
        builder.build().ok_or_else(|| {
            let why = builder.skipped().first().map(|(line, why)| format!(" (line {line}: {why})")).unwrap_or_default();
            anyhow!("{}: no frames of moodmirror's JSON lines{why}", path.display())
        })
    }

    pub fn frames(&self) -> usize {
        self.times.len()
    }

    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }
}

/// One row of summary.csv.
#[derive(Debug, Clone)]
pub struct TrackSummary {
    pub id: u64,
    pub first_seen: f64,
    pub last_seen: f64,
    pub seconds: f64,
    pub frames: usize,
    /// Share of the visible time with each emotion as the label.
    pub shares: [f64; NUM_CLASSES],
    pub dominant: usize,
}

/// One summary per track (the rows of summary.csv), without writing anything.
pub fn summaries(rec: &Recording) -> Vec<TrackSummary> {
    rec.tracks
        .iter()
        .map(|(&id, samples)| {
            let mut time = [0f64; NUM_CLASSES];
            for s in samples {
                time[s.label] += rec.durations[s.frame];
            }
            let seconds: f64 = time.iter().sum();
            let shares = time.map(|t| if seconds > 0.0 { t / seconds } else { 0.0 });
            let dominant = (0..NUM_CLASSES).max_by(|&a, &b| time[a].total_cmp(&time[b])).unwrap_or(NUM_CLASSES - 1);
            TrackSummary {
                id,
                first_seen: samples.first().map_or(0.0, |s| rec.times[s.frame]),
                last_seen: samples.last().map_or(0.0, |s| rec.times[s.frame] + rec.durations[s.frame]),
                seconds,
                frames: samples.len(),
                shares,
                dominant,
            }
        })
        .collect()
}

fn color(i: usize) -> RGBColor {
    let (r, g, b) = EMOTION_COLORS[i];
    RGBColor(r, g, b)
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("{e}")
}

/// The seven probabilities of one track over time; gaps where the face was not seen.
fn timeline(rec: &Recording, id: u64, samples: &[Sample], path: &Path) -> Result<()> {
    let (t0, t1) =
        (rec.times[samples[0].frame], rec.times[samples[samples.len() - 1].frame] + rec.durations[samples[samples.len() - 1].frame]);
    crate::plots::save_png(path, 1000, 420, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("face {id}: emotions over time (smoothed)"), (crate::plots::FONT, 20))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .right_y_label_area_size(0)
            .build_cartesian_2d(t0..t1.max(t0 + 1e-3), 0.0..1.0)
            .map_err(plot_err)?;
        chart.configure_mesh().x_desc("seconds").y_desc("probability").label_style((crate::plots::FONT, 13)).draw().map_err(plot_err)?;
        for (c, name) in CLASS_NAMES.iter().enumerate() {
            // One line per run of consecutive frames.
            let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
            let mut last = None;
            for s in samples {
                if last.is_none_or(|f: usize| s.frame != f + 1) {
                    runs.push(Vec::new());
                }
                if let Some(run) = runs.last_mut() {
                    run.push((rec.times[s.frame], s.probabilities[c]));
                }
                last = Some(s.frame);
            }
            let mut labelled = false;
            for run in runs {
                let series = chart.draw_series(LineSeries::new(run, color(c).stroke_width(2))).map_err(plot_err)?;
                if !labelled {
                    series.label(*name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color(c).stroke_width(3)));
                    labelled = true;
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((crate::plots::FONT, 13))
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })
}

/// Draws a horizontal stacked bar of `shares` in `[x0, x1] x [y0, y1]`.
fn stacked_bar(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    (x0, x1): (i32, i32),
    (y0, y1): (i32, i32),
    shares: &[f64; NUM_CLASSES],
) -> Result<()> {
    let mut x = x0 as f64;
    for (c, share) in shares.iter().enumerate() {
        let w = share * (x1 - x0) as f64;
        if w > 0.0 {
            area.draw(&Rectangle::new([(x.round() as i32, y0), ((x + w).round() as i32, y1)], color(c).filled())).map_err(plot_err)?;
        }
        x += w;
    }
    Ok(())
}

fn legend(area: &DrawingArea<BitMapBackend, plotters::coord::Shift>, x: i32, y: i32) -> Result<()> {
    for (c, name) in CLASS_NAMES.iter().enumerate() {
        let x = x + c as i32 * 105;
        area.draw(&Rectangle::new([(x, y), (x + 14, y + 14)], color(c).filled())).map_err(plot_err)?;
        area.draw(&Text::new(*name, (x + 18, y), (crate::plots::FONT, 14))).map_err(plot_err)?;
    }
    Ok(())
}

/// One stacked share-of-time bar per face, longest visible first.
fn shares_chart(summaries: &[TrackSummary], path: &Path) -> Result<()> {
    let mut rows: Vec<&TrackSummary> = summaries.iter().collect();
    rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    rows.truncate(40);
    let height = 90 + 26 * rows.len().max(1) as u32;
    crate::plots::save_png(path, 900, height, |root| {
        root.draw(&Text::new("share of visible time per face", (20, 12), (crate::plots::FONT, 20))).map_err(plot_err)?;
        legend(root, 20, 44)?;
        for (i, s) in rows.iter().enumerate() {
            let y = 76 + 26 * i as i32;
            root.draw(&Text::new(format!("face {} ({:.1} s)", s.id, s.seconds), (20, y + 2), (crate::plots::FONT, 14)))
                .map_err(plot_err)?;
            stacked_bar(root, (190, 880), (y, y + 20), &s.shares)?;
        }
        Ok(())
    })
}

/// The whole video: per time slice, the share of the faces on screen showing each emotion.
fn overview(rec: &Recording, summaries: &[TrackSummary], path: &Path) -> Result<()> {
    let end = rec.times.last().copied().unwrap_or(0.0) + rec.durations.last().copied().unwrap_or(0.0);
    let start = rec.times.first().copied().unwrap_or(0.0);
    let bins = 120usize;
    let span = (end - start).max(1e-6);
    let mut time = vec![[0f64; NUM_CLASSES]; bins];
    for samples in rec.tracks.values() {
        for s in samples {
            let b = (((rec.times[s.frame] - start) / span * bins as f64) as usize).min(bins - 1);
            time[b][s.label] += rec.durations[s.frame];
        }
    }
    let total_seconds: f64 = summaries.iter().map(|s| s.seconds).sum();
    let mut overall = [0f64; NUM_CLASSES];
    for s in summaries {
        for (o, share) in overall.iter_mut().zip(s.shares) {
            *o += share * s.seconds / total_seconds.max(1e-9);
        }
    }
    crate::plots::save_png(path, 1000, 480, |root| {
        let title = format!("{} faces over {:.1} s: emotions on screen", summaries.len(), span);
        root.draw(&Text::new(title, (20, 10), (crate::plots::FONT, 20))).map_err(plot_err)?;
        legend(root, 20, 40)?;
        root.draw(&Text::new("whole video", (20, 72), (crate::plots::FONT, 14))).map_err(plot_err)?;
        stacked_bar(root, (120, 980), (70, 92), &overall)?;
        let (x0, x1, y0, y1) = (60i32, 980i32, 110i32, 430i32);
        for (b, t) in time.iter().enumerate() {
            let sum: f64 = t.iter().sum();
            if sum <= 0.0 {
                continue;
            }
            let (bx0, bx1) =
                (x0 + ((x1 - x0) as f64 * b as f64 / bins as f64) as i32, x0 + ((x1 - x0) as f64 * (b + 1) as f64 / bins as f64) as i32);
            let mut y = y1 as f64;
            for (c, v) in t.iter().enumerate() {
                let h = v / sum * (y1 - y0) as f64;
                root.draw(&Rectangle::new([(bx0, (y - h).round() as i32), (bx1, y.round() as i32)], color(c).filled()))
                    .map_err(plot_err)?;
                y -= h;
            }
        }
        root.draw(&Rectangle::new([(x0, y0), (x1, y1)], BLACK.stroke_width(1))).map_err(plot_err)?;
        for k in 0..=5 {
            let x = x0 + (x1 - x0) * k / 5;
            root.draw(&Text::new(format!("{:.0} s", start + span * k as f64 / 5.0), (x - 12, y1 + 8), (crate::plots::FONT, 13)))
                .map_err(plot_err)?;
        }
        root.draw(&Text::new("share of faces", (x0, y0 - 16), (crate::plots::FONT, 13))).map_err(plot_err)?;
        Ok(())
    })
}

fn write_summary(summaries: &[TrackSummary], path: &Path) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?);
    write!(out, "track_id,first_seen_s,last_seen_s,seconds_visible,frames")?;
    for name in CLASS_NAMES {
        write!(out, ",{name}")?;
    }
    writeln!(out, ",dominant_emotion")?;
    for s in summaries {
        write!(out, "{},{:.3},{:.3},{:.3},{}", s.id, s.first_seen, s.last_seen, s.seconds, s.frames)?;
        for share in s.shares {
            write!(out, ",{share:.4}")?;
        }
        writeln!(out, ",{}", CLASS_NAMES[s.dominant])?;
    }
    out.flush()?;
    Ok(())
}

/// At most this many `track-ID.png` timelines, for the faces seen longest: a crowded recording
/// has thousands of tracks (3,000 made 388 MB of pictures); summary.csv keeps every one.
pub const MAX_TIMELINES: usize = 200;

/// Writes summary.csv, shares.png, overview.png and one `track-ID.png` per track visible at
/// least `min_seconds` (the [`MAX_TIMELINES`] seen longest) into `dir`; returns the summaries.
pub fn write(rec: &Recording, dir: &Path, min_seconds: f64) -> Result<Vec<TrackSummary>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let summaries = summaries(rec);
    write_summary(&summaries, &dir.join("summary.csv"))?;
    shares_chart(&summaries, &dir.join("shares.png"))?;
    overview(rec, &summaries, &dir.join("overview.png"))?;
    let mut charted: Vec<&TrackSummary> = summaries.iter().filter(|s| s.seconds >= min_seconds).collect();
    if charted.len() > MAX_TIMELINES {
        eprintln!("report: {} faces; timelines for the {MAX_TIMELINES} seen longest (summary.csv lists all)", charted.len());
        charted.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(a.id.cmp(&b.id)));
        charted.truncate(MAX_TIMELINES);
    }
    for s in charted {
        timeline(rec, s.id, &rec.tracks[&s.id], &dir.join(format!("track-{}.png", s.id)))?;
    }
    Ok(summaries)
}

pub fn run(args: &ReportArgs) -> Result<()> {
    let rec = Recording::read(&args.jsonl)?;
    for (line, reason) in &rec.skipped {
        eprintln!("{} line {line}: {reason} (skipped)", args.jsonl.display());
    }
    let summaries = write(&rec, &args.out, args.min_seconds)?;
    let timelines = summaries.iter().filter(|s| s.seconds >= args.min_seconds).count();
    println!(
        "{} frames, {} tracks ({} timelines, faces without a track id: {}) → {}",
        rec.frames(),
        summaries.len(),
        timelines,
        rec.untracked,
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ts_ms: u64, faces: &[(u64, &str)]) -> String {
        let objects: Vec<serde_json::Value> = faces
            .iter()
            .map(|(id, label)| {
                let probabilities: serde_json::Map<String, serde_json::Value> =
                    CLASS_NAMES.iter().map(|c| (c.to_string(), serde_json::json!(if c == label { 0.9 } else { 0.1 / 6.0 }))).collect();
                serde_json::json!({"id": id, "emotion": {"label": label, "probabilities": probabilities}})
            })
            .collect();
        serde_json::json!({"timestamp": ts_ms * 1_000_000, "objects": objects}).to_string()
    }

    #[test]
    fn timelines_are_capped_to_the_faces_seen_longest() {
        // MAX_TIMELINES + 5 one-frame tracks and one seen on every frame.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frames.jsonl");
        let face = |id: usize| {
            format!(
                "{{\"id\": {id}, \"emotion\": {{\"label\": \"happy\", \"probabilities\": {{\"angry\": 0, \"disgust\": 0, \"fear\": 0, \"happy\": 1, \"sad\": 0, \"surprise\": 0, \"neutral\": 0}}}}}}"
            )
        };
        let n = MAX_TIMELINES + 5;
        let text: String = (0..n).map(|i| format!("{{\"objects\": [{}, {}]}}\n", face(i + 1), face(0))).collect();
        std::fs::write(&path, text).unwrap();
        let rec = Recording::read(&path).unwrap();
        let out = dir.path().join("report");
        let summaries = write(&rec, &out, 0.0).unwrap();
        assert_eq!(summaries.len(), n + 1);
        let pictures =
            std::fs::read_dir(&out).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("track-")).count();
        assert_eq!(pictures, MAX_TIMELINES);
        assert!(out.join("track-0.png").is_file(), "the face seen longest has its timeline");
    }

    #[test]
    fn an_empty_or_foreign_file_is_an_error_not_an_empty_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frames.jsonl");
        std::fs::write(&path, "").unwrap();
        assert!(Recording::read(&path).unwrap_err().to_string().contains("no frames"));
        std::fs::write(&path, "{\"name\": \"something else\"}\n").unwrap();
        let err = Recording::read(&path).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("objects"), "{err}");
        // A recording whose frames have no faces is a recording.
        std::fs::write(&path, "{\"objects\": []}\n").unwrap();
        assert_eq!(Recording::read(&path).unwrap().frames(), 1);
    }

    #[test]
    fn seconds_add_up_broken_lines_are_named_and_pictures_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frames.jsonl");
        let mut text = String::new();
        // 30 frames at 100 ms: face 1 happy for 20 frames then sad for 10; face 2 from frame 10.
        for f in 0..30u64 {
            let mut faces = vec![(1, if f < 20 { "happy" } else { "sad" })];
            if f >= 10 {
                faces.push((2, "neutral"));
            }
            text.push_str(&line(f * 100, &faces));
            text.push('\n');
            if f == 5 {
                text.push_str("{not json\n");
            }
        }
        std::fs::write(&path, text).unwrap();
        let rec = Recording::read(&path).unwrap();
        assert_eq!(rec.frames(), 30);
        assert_eq!(rec.skipped.len(), 1);
        assert_eq!(rec.skipped[0].0, 7, "the broken line is named by its number");
        let out = dir.path().join("report");
        let summaries = write(&rec, &out, 0.5).unwrap();
        let one = summaries.iter().find(|s| s.id == 1).unwrap();
        assert!((one.seconds - 3.0).abs() < 1e-9, "{one:?}");
        assert!((one.shares[3] - 2.0 / 3.0).abs() < 1e-9 && (one.shares[4] - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(CLASS_NAMES[one.dominant], "happy");
        let two = summaries.iter().find(|s| s.id == 2).unwrap();
        assert!((two.seconds - 2.0).abs() < 1e-9 && (two.first_seen - 1.0).abs() < 1e-9);
        let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
        assert_eq!(csv.lines().count(), 3);
        assert!(csv.lines().nth(1).unwrap().starts_with("1,0.000,3.000,3.000,30,"));
        for png in ["shares.png", "overview.png", "track-1.png", "track-2.png"] {
            let img = image::open(out.join(png)).unwrap().into_rgb8();
            // Drawn on: some pixels in an emotion's colour.
            let (r, g, b) = EMOTION_COLORS[3];
            assert!(img.pixels().any(|p| p.0 == [r, g, b]) || png == "track-2.png", "{png}");
        }
    }

    #[test]
    fn a_live_recording_keeps_only_its_window() {
        let mut builder = RecordingBuilder::default();
        // 10 s at 10 frames/s: track 1 for the first 4 s, track 2 throughout.
        for i in 0..100u64 {
            let faces: Vec<(u64, &str)> = if i < 40 { vec![(1, "sad"), (2, "happy")] } else { vec![(2, "happy")] };
            assert!(builder.push_line(&line(i * 100, &faces), i as usize + 1));
        }
        assert_eq!(builder.keep_last(20.0), 0, "all of it is within 20 s");
        assert_eq!(builder.keep_last(5.0), 49, "frames before 4.9 s are forgotten");
        let rec = builder.build().expect("frames");
        assert_eq!(rec.frames(), 51);
        assert_eq!(rec.track_count(), 1, "track 1 ended before the window");
        let summary = summaries(&rec);
        assert!((summary[0].seconds - 5.1).abs() < 1e-6, "{summary:?}");
    }
}
