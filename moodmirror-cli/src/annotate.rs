//! `moodmirror annotate`: decode any file GStreamer reads, run moodmirror on its video, encode
//! H.264 in MP4 with the audio carried over, and write the results as JSON lines. Outputs are
//! written to `*.partial` files and renamed only when the whole input went through.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use gst::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};

use crate::image_cmd::DetectorArg;
use crate::outputs::{check_output, distinct_names, partial, OutputLock};
use crate::stall::{stall_error, StallWatch, CUT_OFF_HINT, STALL_LIMIT};

#[derive(Debug, Clone, clap::Args)]
pub struct AnnotateArgs {
    /// Any files GStreamer can decode (MP4, MKV, WebM, AVI, MOV…), or folders of them.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Annotated video (H.264 in MP4) [default: INPUT's name with `.moodmirror.mp4`]; with
    /// several inputs or a folder, the folder the outputs go to [default: beside each input].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Also write one JSON object per frame here (see the README for the schema), `-` for
    /// standard output. With several inputs the lines always go to `NAME.moodmirror.jsonl`
    /// beside each output.
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    /// Annotate this many files at a time (several inputs or a folder).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Skip inputs whose annotated video and JSON lines both exist (outputs appear only when complete).
    #[arg(long)]
    pub resume: bool,
    /// Do not draw: the video is re-encoded unchanged, results go to --jsonl only.
    #[arg(long)]
    pub no_draw: bool,
    #[arg(long, value_enum, default_value = "yunet")]
    pub detector: DetectorArg,
    #[arg(long, default_value_t = 40)]
    pub min_face_size: u32,
    /// Emotion model weights; the embedded default when omitted.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Arithmetic of the emotion CNN (the element's `precision`): auto, f32 or int8.
    #[arg(long, default_value = "auto")]
    pub precision: moodmirror::emotion::Precision,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Also write the report of `moodmirror report` here (timelines per face, share bars,
    /// summary.csv, overview); the JSON lines go to DIR/frames.jsonl unless --jsonl says where.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub video: VideoSettings,
}

/// The element's video settings, for `annotate` and `evaluate --video`; unset ones keep the
/// element's defaults (see `gst-inspect-1.0 moodmirror`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VideoSettings {
    /// Run the full face detector every N frames (1: every frame, e.g. for a study); in between,
    /// faces are found again near their last position.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub detect_interval: Option<u32>,
    /// Reclassify each tracked face every N frames.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub classify_interval: Option<u32>,
    /// Weight of the past in each face's running average of probabilities (0 = off, < 1).
    #[arg(long, value_parser = parse_smoothing)]
    pub smoothing: Option<f64>,
    /// Where full detections run: auto, sync or async (files default to sync: reproducible).
    #[arg(long, value_parser = ["auto", "sync", "async"])]
    pub detection_mode: Option<String>,
    /// Most faces per frame.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_faces: Option<u32>,
}

fn parse_smoothing(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=0.99).contains(&v) {
        Ok(v)
    } else {
        Err(format!("smoothing must be between 0 and 0.99, not {v}"))
    }
}

impl VideoSettings {
    /// The settings as element properties for a pipeline description.
    pub fn properties(&self) -> String {
        let mut out = String::new();
        let mut push = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                out.push_str(&format!(" {name}={v}"));
            }
        };
        push("detect-interval", self.detect_interval.map(|v| v.to_string()));
        push("classify-interval", self.classify_interval.map(|v| v.to_string()));
        push("smoothing", self.smoothing.map(|v| v.to_string()));
        push("detection-mode", self.detection_mode.clone());
        push("max-faces", self.max_faces.map(|v| v.to_string()));
        out
    }
}

/// The moodmirror element as `annotate` and `evaluate --video` run it, on frames turned upright
/// by the stream's orientation tag (a phone's rotated video).
pub struct ElementStage<'a> {
    pub detector: DetectorArg,
    /// The element's default when `None`.
    pub min_face_size: Option<u32>,
    pub precision: Option<moodmirror::emotion::Precision>,
    pub model: Option<&'a Path>,
    pub draw: bool,
    pub video: &'a VideoSettings,
}

impl ElementStage<'_> {
    /// `videoflip ! videoconvert ! moodmirror name=mm …` for a pipeline description.
    pub fn description(&self) -> String {
        let detector: moodmirror::detect::DetectorKind = self.detector.into();
        let mut out =
            format!("videoflip video-direction=auto ! videoconvert ! moodmirror name=mm draw={} detector={}", self.draw, detector.nick());
        if let Some(min) = self.min_face_size {
            out += &format!(" min-face-size={min}");
        }
        if let Some(precision) = self.precision {
            out += &format!(" precision={}", precision.nick());
        }
        if let Some(model) = self.model {
            out += &format!(" model-location=\"{}\"", quote(model));
        }
        out + &self.video.properties()
    }
}

/// The muxer for an output name: MP4 (and MOV) or Matroska, chosen by its extension.
fn muxer_for(output: &Path) -> Result<&'static str> {
    match output.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
        Some("mp4" | "m4v") => Ok("mp4mux"),
        Some("mov") => Ok("qtmux"),
        Some("mkv") => Ok("matroskamux"),
        other => bail!(
            "-o {}: cannot tell the container from {}: name it .mp4, .mov or .mkv",
            output.display(),
            other.map(|e| format!("'.{e}'")).unwrap_or_else(|| "a name without extension".into())
        ),
    }
}

fn make(factory: &str) -> Result<gst::Element> {
    gst::ElementFactory::make(factory)
        .build()
        .with_context(|| format!("GStreamer element '{factory}' is missing: install it (scripts/setup.sh installs the Debian packages)"))
}

/// `path` as a quoted value in a pipeline description.
pub fn quote(path: &Path) -> String {
    path.display().to_string().replace('\\', "\\\\").replace('"', "\\\"")
}

/// Links a new decodebin pad: video into the analysis branch, audio into an AAC encoder.
fn link_decoded_pad(pipeline: &gst::Pipeline, pad: &gst::Pad, video_sink: &gst::Pad, mux: &gst::Element) -> Result<()> {
    let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None))).context("pad without caps")?;
    let name = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
    if name.starts_with("video/") {
        if !video_sink.is_linked() {
            pad.link(video_sink).context("linking the decoded video")?;
        }
    } else if name.starts_with("audio/") {
        let chain = ["queue", "audioconvert", "audioresample", "avenc_aac", "queue"].iter().map(|f| make(f)).collect::<Result<Vec<_>>>()?;
        pipeline.add_many(&chain)?;
        gst::Element::link_many(&chain)?;
        let last = chain.last().context("empty chain")?;
        let mux_pad = mux.request_pad_simple("audio_%u").context("the muxer has no audio pad")?;
        last.static_pad("src").context("queue src")?.link(&mux_pad)?;
        for e in &chain {
            e.sync_state_with_parent()?;
        }
        pad.link(&chain[0].static_pad("sink").context("queue sink")?)?;
    }
    Ok(())
}

pub fn run(args: &AnnotateArgs) -> Result<()> {
    let batch = args.inputs.len() > 1 || args.inputs.iter().any(|i| i.is_dir());
    if !batch {
        let interrupts = crate::signals::Interrupts::install();
        let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(1000) };
        return annotate_with_report(args, &bar, &interrupts);
    }
    if args.jsonl.is_some() {
        bail!("--jsonl names one file: with several inputs the JSON lines go to NAME.moodmirror.jsonl beside each output");
    }
    let files = crate::inputs::expand_folders(&args.inputs, &crate::inputs::VIDEO_EXTENSIONS, |p| {
        p.to_string_lossy().ends_with(".moodmirror.mp4")
    })?;
    if files.is_empty() {
        bail!("no video files in {}", args.inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    if let Some(dir) = &args.output {
        if dir.is_file() {
            bail!("-o {}: with several inputs -o names a folder, and this is a file", dir.display());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // One job per file, its outputs named after it; inputs that share a stem get distinct names.
    const SUFFIX: &str = ".moodmirror.mp4";
    let videos = distinct_names(&files, args.output.as_deref(), SUFFIX);
    let jobs: Vec<AnnotateArgs> = files
        .iter()
        .zip(videos)
        .map(|(file, video)| {
            let name = video.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let stem = name.strip_suffix(SUFFIX).unwrap_or(&name).to_string();
            AnnotateArgs {
                inputs: vec![file.clone()],
                jsonl: Some(video.with_file_name(format!("{stem}.moodmirror.jsonl"))),
                output: Some(video),
                report: args.report.as_ref().map(|r| r.join(&stem)),
                ..args.clone()
            }
        })
        .collect();
    let (todo, done): (Vec<&AnnotateArgs>, Vec<&AnnotateArgs>) =
        jobs.iter().partition(|j| !(args.resume && [&j.output, &j.jsonl].iter().all(|o| o.as_ref().is_some_and(|o| o.is_file()))));
    for j in &done {
        eprintln!("{}: already annotated, skipped (--resume)", j.inputs[0].display());
    }
    let bars = if args.quiet {
        indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
    } else {
        indicatif::MultiProgress::new()
    };
    let overall = bars.add(ProgressBar::new(todo.len() as u64));
    overall.set_style(
        ProgressStyle::with_template("files [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let interrupts = crate::signals::Interrupts::install();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.clamp(1, todo.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = todo.get(i) else { break };
                if interrupts.count() > 0 {
                    break;
                }
                let bar = bars.insert_before(&overall, ProgressBar::new(1000));
                bar.set_prefix(job.inputs[0].file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default());
                let result = annotate_with_report(job, &bar, &interrupts);
                bars.remove(&bar);
                match result {
                    Ok(()) => overall.inc(1),
                    Err(e) => {
                        overall.inc(1);
                        let message = format!("{}: {e:#}", job.inputs[0].display());
                        overall.suspend(|| eprintln!("failed: {message}"));
                        failures.lock().unwrap_or_else(|e| e.into_inner()).push(message);
                    }
                }
            });
        }
    });
    overall.finish_and_clear();
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    let annotated = todo.len() - failures.len();
    eprintln!("annotated {annotated} of {} files ({} skipped as done, {} failed)", files.len(), done.len(), failures.len());
    if !failures.is_empty() {
        bail!("{} of {} files failed:\n  {}", failures.len(), files.len(), failures.join("\n  "));
    }
    Ok(())
}

/// One file, then its report when `--report` asks for one.
fn annotate_with_report(args: &AnnotateArgs, bar: &ProgressBar, interrupts: &crate::signals::Interrupts) -> Result<()> {
    let Some(dir) = &args.report else {
        return annotate(args, bar, interrupts);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let args = AnnotateArgs { jsonl: Some(args.jsonl.clone().unwrap_or_else(|| dir.join("frames.jsonl"))), ..args.clone() };
    annotate(&args, bar, interrupts)?;
    let jsonl = args.jsonl.as_deref().unwrap_or(dir);
    let rec = moodmirror_train::report::Recording::read(jsonl)?;
    let summaries = moodmirror_train::report::write(&rec, dir, 0.0)?;
    bar.suspend(|| eprintln!("report: {} faces → {}", summaries.len(), dir.display()));
    Ok(())
}

fn annotate(args: &AnnotateArgs, bar: &ProgressBar, interrupts: &crate::signals::Interrupts) -> Result<()> {
    let input = &args.inputs[0];
    if !input.is_file() {
        bail!("cannot read '{}': no such file", input.display());
    }
    std::fs::File::open(input).with_context(|| format!("cannot read '{}'", input.display()))?;
    let output = match &args.output {
        Some(o) if o.is_dir() => {
            bail!("-o {} is a folder: name the video file (or give several inputs to fill a folder)", o.display())
        }
        Some(o) => o.clone(),
        None => distinct_names(std::slice::from_ref(input), None, ".moodmirror.mp4").remove(0),
    };
    // Every output is checked before any work: never over the input, never over each other.
    let muxer = muxer_for(&output)?;
    check_output(&output, "-o", std::slice::from_ref(input), false)?;
    // `--jsonl -`: the lines go to standard output as they are made (no file, no rename).
    let to_stdout = args.jsonl.as_deref() == Some(Path::new("-"));
    let jsonl_file = args.jsonl.as_ref().filter(|_| !to_stdout);
    if let Some(jsonl) = jsonl_file {
        check_output(jsonl, "--jsonl", &[input.clone(), output.clone()], true)?;
    }
    let _locks = [Some(&output), jsonl_file].into_iter().flatten().map(|o| OutputLock::acquire(o)).collect::<Result<Vec<_>>>()?;
    gst::init()?;
    gstmoodmirror::plugin_register_static()?;
    for needed in ["decodebin", "x264enc", muxer, "videoconvert", "videoflip", "videocrop"] {
        make(needed)?;
    }
    let (video_tmp, jsonl_tmp) = (partial(&output), jsonl_file.map(|j| partial(j)));
    let json_stage = match &jsonl_tmp {
        Some(p) => format!("! moodmirrorjson location=\"{}\" ", quote(p)),
        None if to_stdout => "! moodmirrorjson location=/dev/stdout ".to_string(),
        None => String::new(),
    };
    let element = ElementStage {
        detector: args.detector,
        min_face_size: Some(args.min_face_size),
        precision: Some(args.precision),
        model: args.model.as_deref(),
        draw: !args.no_draw,
        video: &args.video,
    };
    let description = format!(
        "filesrc location=\"{input}\" ! decodebin name=dec queue name=vin ! {element} {json_stage}\
         ! videocrop name=even ! videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset=veryfast ! queue ! {muxer} name=mux \
         ! filesink location=\"{out}\"",
        input = quote(input),
        element = element.description(),
        out = quote(&video_tmp),
    );
    let pipeline = gst::parse::launch(&description)?.downcast::<gst::Pipeline>().map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let by_name = |n: &str| pipeline.by_name(n).with_context(|| format!("pipeline lacks {n}"));
    let (dec, vin, mux, mm) = (by_name("dec")?, by_name("vin")?, by_name("mux")?, by_name("mm")?);
    fit_frames_to_h264(&pipeline, &vin, &by_name("even")?)?;
    let video_sink = vin.static_pad("sink").context("queue sink")?;
    let weak = pipeline.downgrade();
    let mux_for_pads = mux.clone();
    dec.connect_pad_added(move |_, pad| {
        if let Some(pipeline) = weak.upgrade() {
            if let Err(e) = link_decoded_pad(&pipeline, pad, &video_sink, &mux_for_pads) {
                let _ = pipeline.post_message(gst::message::Application::new(
                    gst::Structure::builder("moodmirror-annotate-error").field("reason", e.to_string()).build(),
                ));
            }
        }
    });
    // A file without video (audio only, or nothing decodable) would leave mp4mux waiting for
    // video forever: once decodebin has exposed all its pads, no linked video is an error.
    let weak = pipeline.downgrade();
    let video_pad = vin.static_pad("sink").context("queue sink")?;
    dec.connect_no_more_pads(move |_| {
        if let Some(pipeline) = weak.upgrade() {
            if !video_pad.is_linked() {
                let _ = pipeline.post_message(gst::message::Application::new(
                    gst::Structure::builder("moodmirror-annotate-error")
                        .field("reason", "the input has no video stream (nothing to annotate)")
                        .build(),
                ));
            }
        }
    });
    let frames = Arc::new(AtomicU64::new(0));
    let counter = frames.clone();
    // Where the stream got to (end of the last frame, ns): a truncated file ends before the
    // duration its container declares.
    let reached = Arc::new(AtomicU64::new(0));
    let reached_by_probe = reached.clone();
    mm.static_pad("src").context("moodmirror src")?.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
            if let Some(pts) = buffer.pts() {
                let end = pts + buffer.duration().unwrap_or(gst::ClockTime::ZERO);
                reached_by_probe.fetch_max(end.nseconds(), Ordering::Relaxed);
            }
        }
        gst::PadProbeReturn::Ok
    });
    let mut declared: Option<gst::ClockTime> = None;

    let cleanup = || {
        let _ = std::fs::remove_file(&video_tmp);
        if let Some(p) = &jsonl_tmp {
            let _ = std::fs::remove_file(p);
        }
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} {spinner} [{bar:40}] {percent:>3}% {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = Instant::now();
    if pipeline.set_state(gst::State::Playing).is_err() {
        // The bus has the reason.
    }
    let bus = pipeline.bus().context("pipeline bus")?;
    let mut finishing = false;
    let mut watch = StallWatch::new(started);
    let result: Result<()> = loop {
        match interrupts.count() {
            0 => {}
            1 if !finishing => {
                // First Ctrl-C / SIGTERM: end the stream here so the MP4 and JSONL are complete.
                finishing = true;
                bar.suspend(|| eprintln!("interrupted: finishing the files with the frames so far (again to abort)"));
                pipeline.send_event(gst::event::Eos::new());
            }
            1 => {}
            _ => break Err(anyhow::anyhow!("interrupted twice")),
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else {
            let position = pipeline.query_position::<gst::ClockTime>();
            let duration = pipeline.query_duration::<gst::ClockTime>();
            declared = declared.or(duration);
            if let (Some(p), Some(d)) = (position, duration) {
                if d.nseconds() > 0 {
                    bar.set_position(p.nseconds() * 1000 / d.nseconds());
                }
            }
            let n = frames.load(Ordering::Relaxed);
            bar.set_message(format!("{n} frames, {:.1} frames/s", n as f64 / started.elapsed().as_secs_f64()));
            if watch.stalled(n, position, Instant::now(), STALL_LIMIT) {
                break Err(stall_error(input, n));
            }
            continue;
        };
        watch.moved(Instant::now());
        match msg.view() {
            // A second signal may land while the stream drains: it still means abort.
            gst::MessageView::Eos(_) if interrupts.count() > 1 => break Err(anyhow::anyhow!("interrupted twice")),
            gst::MessageView::Eos(_) => {
                // A short file can end before the progress bar ever asked for the duration.
                declared = declared.or(pipeline.query_duration::<gst::ClockTime>());
                break Ok(());
            }
            gst::MessageView::Error(e) => {
                // An MP4 cut off before its index was written (a recording that did not finish)
                // has no streams for the demuxer: say what that usually means.
                let hint = if e.error().to_string().contains("no playable streams") { CUT_OFF_HINT } else { "" };
                break Err(anyhow::anyhow!("{}{hint}{}", e.error(), e.debug().map(|d| format!(" ({d})")).unwrap_or_default()));
            }
            gst::MessageView::Application(a) => {
                if let Some(s) = a.structure().filter(|s| s.name() == "moodmirror-annotate-error") {
                    break Err(anyhow::anyhow!("{}", s.get::<String>("reason").unwrap_or_default()));
                }
            }
            _ => {}
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    bar.finish_and_clear();
    let n = frames.load(Ordering::Relaxed);
    if let Err(e) = result {
        cleanup();
        return Err(e.context(format!("annotating '{}' failed; no output written", input.display())));
    }
    if n == 0 {
        cleanup();
        bail!("'{}' has no video frames; no output written", input.display());
    }
    std::fs::rename(&video_tmp, &output).with_context(|| format!("writing {}", output.display()))?;
    if let (Some(tmp), Some(jsonl)) = (&jsonl_tmp, jsonl_file) {
        std::fs::rename(tmp, jsonl).with_context(|| format!("writing {}", jsonl.display()))?;
    }
    let secs = started.elapsed().as_secs_f64();
    let reached = gst::ClockTime::from_nseconds(reached.load(Ordering::Relaxed));
    if let Some(declared) = declared.filter(|d| !finishing && looks_truncated(reached, *d)) {
        eprintln!(
            "warning: '{}' declares {:.1} s of video but its frames end at {:.1} s ({n} frames): the file looks \
             truncated; the outputs hold the frames that were there",
            input.display(),
            declared.seconds_f64(),
            reached.seconds_f64()
        );
    }
    if finishing {
        eprintln!(
            "interrupted: wrote the first {n} frames → {}{}",
            output.display(),
            args.jsonl.as_ref().map(|j| format!(", {}", j.display())).unwrap_or_default()
        );
        return Err(Interrupted { frames: n }.into());
    }
    eprintln!(
        "annotated {n} frames in {secs:.1} s ({:.1} frames/s) → {}{}",
        n as f64 / secs,
        output.display(),
        args.jsonl.as_ref().map(|j| format!(", {}", j.display())).unwrap_or_default()
    );
    Ok(())
}

/// H.264 in 4:2:0 takes frames of at least [`H264_MIN_SIDE`] pixels with even sides: a smaller
/// video is an error that says so (x264 only says "not negotiated"), and an odd side loses its
/// last column or row in the video (`videocrop`; x264 refuses to start otherwise). The element and
/// the JSON lines see every pixel.
fn fit_frames_to_h264(pipeline: &gst::Pipeline, decoded: &gst::Element, crop: &gst::Element) -> Result<()> {
    let weak = pipeline.downgrade();
    decoded.static_pad("sink").context("queue sink")?.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        if let Some((w, h)) = caps_size(info) {
            if w < H264_MIN_SIDE || h < H264_MIN_SIDE {
                if let Some(pipeline) = weak.upgrade() {
                    let reason =
                        format!("the video is {w}x{h} pixels: the annotated H.264 output needs at least {H264_MIN_SIDE}x{H264_MIN_SIDE}");
                    let _ = pipeline.post_message(gst::message::Application::new(
                        gst::Structure::builder("moodmirror-annotate-error").field("reason", reason).build(),
                    ));
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
    let cropper = crop.downgrade();
    crop.static_pad("sink").context("videocrop sink")?.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        if let (Some((w, h)), Some(crop)) = (caps_size(info), cropper.upgrade()) {
            crop.set_property("right", w % 2);
            crop.set_property("bottom", h % 2);
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// Whether a stream that ended at `reached` fell short of the container's `declared` duration by
/// more than rounding and a last frame's length (5 %, at least half a second).
fn looks_truncated(reached: gst::ClockTime, declared: gst::ClockTime) -> bool {
    let slack = (declared.nseconds() / 20).max(500_000_000);
    reached.nseconds() + slack < declared.nseconds()
}

/// The smallest side x264 encodes.
const H264_MIN_SIDE: i32 = 16;

/// Width and height of a caps event.
fn caps_size(info: &gst::PadProbeInfo) -> Option<(i32, i32)> {
    let Some(gst::PadProbeData::Event(event)) = &info.data else { return None };
    let gst::EventView::Caps(caps) = event.view() else { return None };
    let s = caps.caps().structure(0)?;
    Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?))
}

/// `annotate` was stopped by a signal after writing complete, shorter outputs.
#[derive(Debug, thiserror::Error)]
#[error("interrupted after {frames} frames (the outputs hold those frames)")]
pub struct Interrupted {
    pub frames: u64,
}
