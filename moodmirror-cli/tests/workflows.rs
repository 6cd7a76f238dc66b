//! Users' workflows end to end: `moodmirror annotate` on a generated clip, the JSON-lines schema,
//! bad input, and an RTSP server and client on loopback with moodmirror on both ends.

use std::path::Path;
use std::process::Command;

// The plugin's test helpers: GStreamer and plugin set-up, fixture paths.
#[path = "../../tests/common/mod.rs"]
mod common;

use common::{fixture, init};
use gst::prelude::*;
use gst_rtsp_server::prelude::*;

/// Runs a pipeline to EOS (panics on error) and returns its buffers from `appsink name=sink`.
fn run_to_eos(description: &str) -> Vec<gst::Buffer> {
    let pipeline = gst::parse::launch(description).expect("pipeline").downcast::<gst::Pipeline>().expect("pipeline");
    let sink = pipeline.by_name("sink").and_then(|s| s.downcast::<gst_app::AppSink>().ok());
    pipeline.set_state(gst::State::Playing).expect("playing");
    let bus = pipeline.bus().expect("bus");
    let mut buffers = Vec::new();
    loop {
        if let Some(sink) = &sink {
            while let Some(s) = sink.try_pull_sample(gst::ClockTime::ZERO) {
                buffers.extend(s.buffer_owned());
            }
        }
        match bus.timed_pop(gst::ClockTime::from_mseconds(20)).map(|m| m.view().clone_message_view()) {
            Some(MessageKind::Eos) => break,
            Some(MessageKind::Error(e)) => panic!("pipeline error: {e}"),
            _ => {}
        }
    }
    if let Some(sink) = &sink {
        while let Some(s) = sink.try_pull_sample(gst::ClockTime::ZERO) {
            buffers.extend(s.buffer_owned());
        }
    }
    pipeline.set_state(gst::State::Null).expect("null");
    buffers
}

enum MessageKind {
    Eos,
    Error(String),
    Other,
}

trait CloneView {
    fn clone_message_view(&self) -> MessageKind;
}

impl CloneView for gst::MessageView<'_> {
    fn clone_message_view(&self) -> MessageKind {
        match self {
            gst::MessageView::Eos(_) => MessageKind::Eos,
            gst::MessageView::Error(e) => MessageKind::Error(format!("{} {:?}", e.error(), e.debug())),
            _ => MessageKind::Other,
        }
    }
}

/// A 40-frame H.264 MP4 of the fixture with an AAC audio track.
fn make_clip(path: &Path) {
    run_to_eos(&format!(
        "filesrc location={} ! jpegdec ! videoconvert ! imagefreeze num-buffers=40 ! video/x-raw,framerate=20/1 \
         ! videoconvert ! x264enc ! mux. audiotestsrc num-buffers=90 ! audioconvert ! avenc_aac ! mux. \
         mp4mux name=mux ! filesink location={}",
        fixture("astronaut.jpg").display(),
        path.display()
    ));
}

#[test]
fn annotate_writes_every_frame_and_a_valid_json_line_per_frame() {
    init();
    let dir = tempfile::tempdir().expect("tmp");
    let clip = dir.path().join("clip.mp4");
    make_clip(&clip);
    let out = dir.path().join("out.mp4");
    let jsonl = dir.path().join("out.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_moodmirror"))
        .args(["annotate", "--quiet"])
        .arg(&clip)
        .arg("-o")
        .arg(&out)
        .arg("--jsonl")
        .arg(&jsonl)
        .output()
        .expect("run annotate");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    // Frames out == frames in.
    let frames = run_to_eos(&format!(
        "filesrc location={} ! qtdemux name=d d.video_0 ! queue ! h264parse ! avdec_h264 ! appsink name=sink sync=false \
         d.audio_0 ! queue ! fakesink",
        out.display()
    ));
    assert_eq!(frames.len(), 40);
    // The audio track was carried over.
    let audio =
        run_to_eos(&format!("filesrc location={} ! qtdemux name=d d.audio_0 ! queue ! appsink name=sink sync=false", out.display()));
    assert!(!audio.is_empty(), "no audio in the annotated file");
    let text = std::fs::read_to_string(&jsonl).expect("jsonl");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 40);
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        gstmoodmirror::export::validate_frame(&v).expect("schema");
        assert_eq!(v["objects"].as_array().map(Vec::len), Some(1), "one face per frame");
    }
    assert!(!dir.path().join("out.mp4.partial").exists());
}

#[test]
fn annotate_fails_cleanly_on_unreadable_input() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.mp4");
    std::fs::write(&bad, b"this is not a video").expect("write");
    for input in [bad.clone(), dir.path().join("missing.mp4")] {
        let out = dir.path().join("out.mp4");
        let result = Command::new(env!("CARGO_BIN_EXE_moodmirror"))
            .args(["annotate", "--quiet"])
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .output()
            .expect("run");
        assert!(!result.status.success());
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(stderr.contains(&input.display().to_string()), "{stderr}");
        assert!(!out.exists() && !dir.path().join("out.mp4.partial").exists(), "no output left behind");
    }
}

#[test]
fn moodmirrorjson_passes_video_through_unchanged() {
    init();
    let dir = tempfile::tempdir().expect("tmp");
    let jsonl = dir.path().join("frames.jsonl");
    let buffers = run_to_eos(&format!(
        "filesrc location={} ! jpegdec ! videoconvert ! imagefreeze num-buffers=5 ! moodmirror draw=false \
         ! moodmirrorjson location={} source=door-cam tags=\"{{\\\"site\\\":\\\"lab\\\"}}\" ! appsink name=sink sync=false",
        fixture("astronaut.jpg").display(),
        jsonl.display()
    ));
    assert_eq!(buffers.len(), 5);
    let text = std::fs::read_to_string(&jsonl).expect("jsonl");
    assert_eq!(text.lines().count(), 5);
    for (line, buffer) in text.lines().zip(&buffers) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        gstmoodmirror::export::validate_frame(&v).expect("schema");
        // A segment from 0: stream time is the PTS.
        assert_eq!(v["timestamp"].as_u64(), buffer.pts().map(|t| t.nseconds()));
        assert_eq!(v["pts"].as_u64(), buffer.pts().map(|t| t.nseconds()));
        assert_eq!(v["resolution"]["width"], 512);
        assert_eq!((v["source"].as_str(), v["tags"]["site"].as_str()), (Some("door-cam"), Some("lab")));
        // The face with DL Streamer's fields: normalised box, label ids, model name.
        let o = &v["objects"][0];
        assert_eq!(o["roi_type"], "face");
        assert!(o["detection"]["bounding_box"]["x_max"].as_f64().is_some_and(|x| x > 0.3 && x < 0.7), "{o}");
        assert!(o["emotion"]["model_name"].as_str().is_some_and(|m| !m.is_empty()), "{o}");
        assert!(o["emotion"]["raw_probabilities"].is_object(), "{o}");
    }
}

#[test]
fn moodmirrorjson_refuses_tags_that_are_not_a_json_object() {
    init();
    let dir = tempfile::tempdir().expect("tmp");
    for tags in ["site=lab", "[1, 2]"] {
        let jsonl = dir.path().join("frames.jsonl");
        let pipeline =
            gst::parse::launch(&format!("videotestsrc num-buffers=3 ! moodmirrorjson name=j location={} ! fakesink", jsonl.display()))
                .expect("pipeline")
                .downcast::<gst::Pipeline>()
                .expect("pipeline");
        pipeline.by_name("j").expect("j").set_property("tags", tags);
        let _ = pipeline.set_state(gst::State::Playing);
        let bus = pipeline.bus().expect("bus");
        let message =
            bus.timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error, gst::MessageType::Eos]).expect("a message");
        let MessageKind::Error(e) = message.view().clone_message_view() else { panic!("{tags}: no error") };
        assert!(e.contains("tags"), "{tags}: {e}");
        pipeline.set_state(gst::State::Null).expect("null");
        assert!(!jsonl.exists(), "{tags}: nothing written");
    }
}

#[test]
fn rtsp_server_and_client_on_loopback_carry_faces() {
    init();
    // Server: the fixture annotated by moodmirror, H.264 over RTSP on 127.0.0.1.
    let main_loop = glib::MainLoop::new(None, false);
    let server = gst_rtsp_server::RTSPServer::new();
    server.set_address("127.0.0.1");
    server.set_service("0");
    let factory = gst_rtsp_server::RTSPMediaFactory::new();
    factory.set_launch(&format!(
        "( filesrc location={} ! jpegdec ! videoconvert ! imagefreeze num-buffers=300 ! video/x-raw,framerate=15/1 \
           ! moodmirror ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 \
           ! rtph264pay name=pay0 pt=96 )",
        fixture("astronaut.jpg").display()
    ));
    factory.set_shared(true);
    server.mount_points().expect("mounts").add_factory("/moodmirror", factory);
    let source_id = server.attach(None).expect("attach");
    let port = server.bound_port();
    assert!(port > 0);
    let loop_thread = {
        let l = main_loop.clone();
        std::thread::spawn(move || l.run())
    };

    // Client: receive, decode, analyse again, read the metadata of 30 frames. The client is live,
    // so its full detections run in the background: the face is there from a few frames on.
    let client = gst::parse::launch(&format!(
        "rtspsrc location=rtsp://127.0.0.1:{port}/moodmirror protocols=tcp latency=0 ! rtph264depay ! h264parse \
         ! avdec_h264 ! videoconvert ! moodmirror draw=false ! appsink name=sink sync=false"
    ))
    .expect("client")
    .downcast::<gst::Pipeline>()
    .expect("pipeline");
    let sink = client.by_name("sink").and_then(|s| s.downcast::<gst_app::AppSink>().ok()).expect("appsink");
    client.set_state(gst::State::Playing).expect("client playing");
    let mut with_face = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut received = 0;
    while received < 30 && std::time::Instant::now() < deadline {
        if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(500)) {
            received += 1;
            let buffer = sample.buffer().expect("buffer");
            let faces = gstmoodmirror::meta::faces(buffer).expect("MoodMirrorMeta on received frames");
            // The server drew a box and label on the face; the client still finds it.
            if faces.len() == 1 && received > 10 {
                with_face += 1;
            }
        }
    }
    client.set_state(gst::State::Null).expect("null");
    main_loop.quit();
    let _ = loop_thread.join();
    source_id.remove();
    assert_eq!(received, 30, "frames over RTSP");
    assert!(with_face >= 16, "faces found in {with_face} of the last 20 received frames");
}

use gst::glib;

/// A faceless 320x240 H.264 MP4 of `frames` frames at 30 fps.
fn make_plain_clip(path: &Path, frames: u32) {
    run_to_eos(&format!(
        "videotestsrc num-buffers={frames} ! video/x-raw,width=320,height=240,framerate=30/1 ! x264enc speed-preset=ultrafast \
         ! mp4mux ! filesink location={}",
        path.display()
    ));
}

fn annotate_command(input: &Path, out: &Path, jsonl: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_moodmirror"));
    command.args(["annotate", "--quiet"]).arg(input).arg("-o").arg(out).arg("--jsonl").arg(jsonl);
    command
}

#[test]
fn annotate_refuses_an_input_without_video_within_seconds() {
    init();
    let dir = tempfile::tempdir().expect("tmp");
    let wav = dir.path().join("tone.wav");
    run_to_eos(&format!("audiotestsrc num-buffers=50 ! wavenc ! filesink location={}", wav.display()));
    let (out, jsonl) = (dir.path().join("out.mp4"), dir.path().join("out.jsonl"));
    let started = std::time::Instant::now();
    let mut child = annotate_command(&wav, &out, &jsonl).stderr(std::process::Stdio::piped()).spawn().expect("spawn");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed().as_secs() > 30 {
            let _ = child.kill();
            panic!("annotate on an audio-only file hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read");
    assert!(!status.success());
    assert!(stderr.contains("no video stream"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("tone.wav")], "nothing written");
}

/// Returns once annotate's output has grown past its first bytes: its signal handlers are in
/// place (installed before the pipeline starts) and frames are being written, however slowly
/// the process started on a busy machine.
fn wait_until_writing(partial: &Path) {
    let started = std::time::Instant::now();
    while std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0) < 4096 {
        assert!(started.elapsed().as_secs() < 60, "annotate wrote nothing to {} within a minute", partial.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn annotate_finishes_valid_shorter_files_on_the_first_interrupt_and_aborts_on_the_second() {
    init();
    let dir = tempfile::tempdir().expect("tmp");
    let clip = dir.path().join("clip.mp4");
    make_plain_clip(&clip, 3000);
    // One SIGINT: EOS through the pipeline, complete MP4 and JSONL of the frames so far, exit 130.
    let (out, jsonl) = (dir.path().join("out.mp4"), dir.path().join("out.jsonl"));
    let child = annotate_command(&clip, &out, &jsonl).stderr(std::process::Stdio::piped()).spawn().expect("spawn");
    wait_until_writing(&dir.path().join("out.mp4.partial"));
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let result = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("wrote the first"), "{stderr}");
    let frames =
        run_to_eos(&format!("filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! appsink name=sink sync=false", out.display()));
    let lines = std::fs::read_to_string(&jsonl).expect("jsonl").lines().count();
    assert!(!frames.is_empty() && frames.len() < 3000, "{} frames", frames.len());
    assert_eq!(lines, frames.len(), "one JSON line per written frame");
    assert!(!dir.path().join("out.mp4.partial").exists() && !dir.path().join("out.jsonl.partial").exists());

    // Two signals: abort, nothing left behind.
    let (out2, jsonl2) = (dir.path().join("out2.mp4"), dir.path().join("out2.jsonl"));
    let child = annotate_command(&clip, &out2, &jsonl2).stderr(std::process::Stdio::piped()).spawn().expect("spawn");
    wait_until_writing(&dir.path().join("out2.mp4.partial"));
    // Back to back, so both arrive before the stream can drain (a second signal after the files
    // are complete rightly changes nothing); two different signals, since a signal sent while the
    // same one is pending is merged.
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: as above.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    }
    let result = child.wait_with_output().expect("wait");
    assert!(!result.status.success());
    for name in ["out2.mp4", "out2.jsonl", "out2.mp4.partial", "out2.jsonl.partial"] {
        assert!(!dir.path().join(name).exists(), "{name} left behind");
    }
}

#[test]
fn moodmirrorjson_reports_a_write_error_once_and_the_pipeline_reaches_null() {
    init();
    if !Path::new("/dev/full").exists() {
        return;
    }
    let pipeline = gst::parse::launch("videotestsrc num-buffers=30 ! moodmirror draw=false ! moodmirrorjson location=/dev/full ! fakesink")
        .expect("pipeline");
    pipeline.set_state(gst::State::Playing).expect("playing");
    let bus = pipeline.bus().expect("bus");
    let mut errors = 0;
    while let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(10)) {
        match msg.view() {
            gst::MessageView::Error(e) => {
                errors += 1;
                assert!(e.error().to_string().contains("writing JSON lines"), "{}", e.error());
                break;
            }
            gst::MessageView::Eos(_) => break,
            _ => {}
        }
    }
    assert_eq!(errors, 1, "the write error is reported");
    let (done, tx) = (std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)), pipeline.clone());
    let flag = done.clone();
    let stopper = std::thread::spawn(move || {
        let result = tx.set_state(gst::State::Null);
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        result
    });
    let started = std::time::Instant::now();
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(started.elapsed().as_secs() < 30, "the pipeline cannot reach NULL");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stopper.join().expect("join").expect("NULL");
    // Stopping did not post a second error for the same failure.
    let again = std::iter::from_fn(|| bus.pop()).filter(|m| matches!(m.view(), gst::MessageView::Error(_))).count();
    assert_eq!(again, 0);
}

#[test]
fn image_records_unreadable_files_in_its_json_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tmp");
    let whole = std::fs::read(fixture("astronaut.jpg")).expect("fixture");
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &whole[..whole.len() / 2]).expect("write");
    let run = Command::new(env!("CARGO_BIN_EXE_moodmirror"))
        .args(["image", "--jsonl", "-"])
        .arg(fixture("astronaut.jpg"))
        .arg(&cut)
        .output()
        .expect("run image");
    assert!(!run.status.success(), "a failed input makes the exit code non-zero");
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&run.stdout).lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["faces"].as_array().map(Vec::len), Some(1), "the good photo is still analysed");
    assert!(lines[1]["error"].as_str().is_some_and(|e| e.contains("truncated")), "{}", lines[1]);
    assert!(lines[1].get("faces").is_none());
}

#[test]
fn image_finds_a_face_that_fills_the_picture_with_a_padded_retry() {
    let dir = tempfile::tempdir().expect("tmp");
    // The astronaut's face cut edge to edge (eyebrows to chin) and scaled to 64 px, as data sets
    // store faces: no margin around it for the detector.
    let photo = image::open(fixture("astronaut.png")).expect("fixture").into_rgb8();
    let face = image::imageops::crop_imm(&photo, 190, 80, 70, 80).to_image();
    let tight = image::imageops::resize(&face, 56, 64, image::imageops::FilterType::Triangle);
    let path = dir.path().join("tight.png");
    tight.save(&path).expect("save");
    // MTCNN needs the retry on a padded copy; YuNet (the default) finds it directly.
    for (detector, retried) in [("mtcnn", true), ("yunet", false)] {
        let run =
            Command::new(env!("CARGO_BIN_EXE_moodmirror")).args(["image", "--detector", detector]).arg(&path).output().expect("run image");
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let v: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
        assert_eq!(v["padded_retry"].as_bool().unwrap_or(false), retried, "{detector}: {v}");
        let faces = v["faces"].as_array().expect("faces");
        assert_eq!(faces.len(), 1, "{detector}: {v}");
        let (x, y, w, h) = (faces[0]["x"].as_i64(), faces[0]["y"].as_i64(), faces[0]["width"].as_i64(), faces[0]["height"].as_i64());
        let (x, y, w, h) = (x.expect("x"), y.expect("y"), w.expect("w"), h.expect("h"));
        assert!(x >= 0 && y >= 0 && x + w <= 56 && y + h <= 64, "the box is inside the picture: {v}");
        assert!(w * h > 56 * 64 / 3, "the box covers the face: {v}");
    }
}

#[test]
fn a_missing_model_file_names_the_os_reason_once() {
    let run = Command::new(env!("CARGO_BIN_EXE_moodmirror"))
        .args(["image", "--model", "/nonexistent/model.safetensors"])
        .arg(fixture("astronaut.jpg"))
        .output()
        .expect("run image");
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("/nonexistent/model.safetensors"), "{stderr}");
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}

#[test]
fn annotate_report_writes_a_timeline_per_track_and_seconds_that_add_up() {
    init();
    let dir = tempfile::tempdir().expect("tmp");
    let clip = dir.path().join("clip.mp4");
    make_clip(&clip);
    let report = dir.path().join("report");
    let run = Command::new(env!("CARGO_BIN_EXE_moodmirror"))
        .args(["annotate", "--quiet", "--report"])
        .arg(&report)
        .arg("-o")
        .arg(dir.path().join("out.mp4"))
        .arg(&clip)
        .output()
        .expect("run annotate");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // 40 frames at 20 frames/s: the one face is visible for 2 s, in the CSV as in the lines.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(report.join("frames.jsonl"))
        .expect("frames.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 40);
    let csv = std::fs::read_to_string(report.join("summary.csv")).expect("summary.csv");
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 1, "{csv}");
    let seconds: f64 = rows[0][3].parse().expect("seconds");
    assert!((seconds - 2.0).abs() < 0.01, "{csv}");
    let shares: f64 = rows[0][5..12].iter().map(|s| s.parse::<f64>().expect("share")).sum();
    assert!((shares - 1.0).abs() < 1e-3, "{csv}");
    for png in ["overview.png", "shares.png", &format!("track-{}.png", rows[0][0])] {
        let img = image::open(report.join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(img.width() > 400, "{png}");
    }
}

#[test]
fn annotate_a_folder_n_at_a_time_reports_failures_and_resumes() {
    init();
    let dir = tempfile::tempdir().expect("tmp");
    let videos = dir.path().join("videos");
    std::fs::create_dir(&videos).expect("mkdir");
    make_clip(&videos.join("a.mp4"));
    std::fs::copy(videos.join("a.mp4"), videos.join("b.mp4")).expect("copy");
    std::fs::write(videos.join("broken.mp4"), b"not a video").expect("write");
    let out = dir.path().join("out");
    let annotate = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_moodmirror"))
            .args(["annotate", "--quiet", "--jobs", "2", "-o"])
            .arg(&out)
            .args(extra)
            .arg(&videos)
            .output()
            .expect("run annotate")
    };
    let run = annotate(&[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "a failed file makes the exit code non-zero: {stderr}");
    assert!(stderr.contains("broken.mp4") && stderr.contains("1 of 3 files failed"), "{stderr}");
    for name in ["a", "b"] {
        assert!(out.join(format!("{name}.moodmirror.mp4")).is_file(), "{name}: {stderr}");
        let lines = std::fs::read_to_string(out.join(format!("{name}.moodmirror.jsonl"))).expect("jsonl");
        assert_eq!(lines.lines().count(), 40);
    }
    assert!(!out.join("broken.moodmirror.mp4").exists());
    // Again with --resume: the two done files are skipped, the broken one fails again.
    let run = annotate(&["--resume"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(stderr.matches("already annotated, skipped").count(), 2, "{stderr}");
    assert!(stderr.contains("annotated 0 of 3 files (2 skipped as done, 1 failed)"), "{stderr}");
}

/// tests/fixtures/astronaut.png's one face, at about x 177, y 66, 95x95.
const ASTRONAUT_FACE: (i32, i32, i32, i32) = (177, 66, 95, 95);

fn iou(a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)) -> f64 {
    let ix = ((a.0 + a.2).min(b.0 + b.2) - a.0.max(b.0)).max(0) as f64;
    let iy = ((a.1 + a.3).min(b.1 + b.3) - a.1.max(b.1)).max(0) as f64;
    let inter = ix * iy;
    inter / ((a.2 * a.3 + b.2 * b.3) as f64 - inter)
}

#[test]
fn image_command_writes_json_for_the_fixture() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moodmirror"))
        .args(["image", "--jsonl", "-"])
        .arg(fixture("astronaut.png"))
        .output()
        .expect("run moodmirror image");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).expect("utf8");
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON object");
    assert_eq!(v["width"], 512);
    assert_eq!(v["height"], 512);
    let faces = v["faces"].as_array().expect("faces");
    assert_eq!(faces.len(), 1);
    let f = &faces[0];
    let b = |k: &str| f[k].as_i64().expect("int") as i32;
    assert!(iou((b("x"), b("y"), b("width"), b("height")), ASTRONAUT_FACE) > 0.7);
    let p = f["probabilities"].as_object().expect("probabilities");
    assert_eq!(p.len(), 7);
    let sum: f64 = p.values().map(|v| v.as_f64().expect("number")).sum();
    assert!((sum - 1.0).abs() < 1e-3);
    assert!(f["emotion"].as_str().is_some());

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_moodmirror")).args(["image", "/nonexistent.png"]).output().expect("run");
    assert!(!bad.status.success());
}

#[test]
fn image_reads_the_pictures_of_a_folder_and_keeps_its_copies_out_of_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(photos.join("older")).expect("mkdir");
    std::fs::copy(fixture("astronaut.png"), photos.join("b.png")).expect("copy");
    std::fs::copy(fixture("astronaut.jpg"), photos.join("a.JPG")).expect("copy");
    std::fs::copy(fixture("astronaut.jpg"), photos.join("older/c.jpg")).expect("copy");
    std::fs::write(photos.join("notes.txt"), b"not a picture").expect("write");
    let copies = dir.path().join("copies");
    let run = moodmirror(&[&"image", &"--annotate", &copies, &photos]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let files: Vec<String> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["file"].as_str().expect("file").to_owned())
        .collect();
    let names: Vec<&str> = files.iter().map(|f| f.rsplit('/').next().unwrap_or_default()).collect();
    assert_eq!(names, ["a.JPG", "b.png"], "the folder's pictures, sorted; not its subfolder or other files");
    assert_eq!(std::fs::read_dir(&copies).expect("copies").count(), 2);
    // Copies into the folder read would be taken for photos on the next run: refused.
    let run = moodmirror(&[&"image", &"--annotate", &photos, &photos]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("--annotate") && stderr.contains("folder of their own"), "{stderr}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let run = moodmirror(&[&"image", &empty]);
    assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains("no image files"));
}

/// Runs the `moodmirror` binary with `args` (words and paths alike).
fn moodmirror(args: &[&dyn AsRef<std::ffi::OsStr>]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_moodmirror")).args(args.iter().map(|a| a.as_ref())).output().expect("run moodmirror")
}

#[test]
fn outputs_never_replace_inputs_and_same_stem_inputs_get_distinct_outputs() {
    init();
    let dir = tempfile::tempdir().expect("tmp");
    let clip = dir.path().join("t.mp4");
    make_clip(&clip);
    let photo = dir.path().join("a.png");
    std::fs::copy(fixture("astronaut.png"), &photo).expect("copy");
    let (clip_bytes, photo_bytes) = (std::fs::read(&clip).expect("clip"), std::fs::read(&photo).expect("photo"));
    // The path after --jsonl forgotten; outputs over inputs; -o an existing folder.
    let other = dir.path().join("o.mp4");
    let attempts: [&[&dyn AsRef<std::ffi::OsStr>]; 4] = [
        &[&"image", &"--jsonl", &photo, &fixture("astronaut.jpg")],
        &[&"annotate", &"--quiet", &clip, &"-o", &clip],
        &[&"annotate", &"--quiet", &clip, &"-o", &other, &"--jsonl", &clip],
        &[&"annotate", &"--quiet", &clip, &"-o", &dir.path()],
    ];
    for (k, args) in attempts.iter().enumerate() {
        let started = std::time::Instant::now();
        let out = moodmirror(args);
        assert!(!out.status.success(), "attempt {k} succeeded");
        assert!(started.elapsed().as_secs() < 10, "attempt {k}: refused only after the work");
    }
    assert_eq!(std::fs::read(&clip).expect("clip"), clip_bytes, "the input video changed");
    assert_eq!(std::fs::read(&photo).expect("photo"), photo_bytes, "the input photo changed");
    assert!(!dir.path().join("o.mp4").exists() && !dir.path().join("o.mp4.partial").exists());
    // t.mp4 and t.mov into one folder: two results, neither lost.
    let mov = dir.path().join("t.mov");
    std::fs::copy(&clip, &mov).expect("copy");
    let out_dir = dir.path().join("out");
    let out = moodmirror(&[&"annotate", &"--quiet", &clip, &mov, &"-o", &out_dir]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut names: Vec<String> =
        std::fs::read_dir(&out_dir).expect("out").filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    // `--jsonl -`: the lines on standard output, no file named '-'.
    let out = Command::new(env!("CARGO_BIN_EXE_moodmirror"))
        .current_dir(dir.path())
        .args(["annotate", "--quiet", "t.mp4", "-o", "stdout.mp4", "--jsonl", "-"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 40);
    assert!(!dir.path().join("-").exists() && !dir.path().join("-.partial").exists());
}

#[test]
fn evaluate_video_scores_the_elements_pipeline_against_labelled_regions() {
    init();
    let dir = tempfile::tempdir().expect("tmp");
    let clip = dir.path().join("clip.mp4");
    make_clip(&clip);
    // The astronaut (happy) at about (177, 66, 95, 95) for all 40 frames; an empty region.
    let truth = dir.path().join("truth.csv");
    std::fs::write(&truth, "first_frame,last_frame,x,y,size,label\n0,39,150,40,150,happy\n0,39,350,350,100,sad\n").expect("csv");
    let report = dir.path().join("report");
    let out = moodmirror(&[&"evaluate", &"--video", &clip, &"--segments", &truth, &"--report", &report]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).expect("report")).expect("json");
    // 80 cell-frames: the face's 40 found (fresh), the empty region's 40 not.
    assert_eq!(json["cell_frames"], 80);
    assert_eq!(json["present"], 0.5, "{json}");
    assert_eq!(json["fresh"], 0.5, "{json}");
    assert_eq!(json["settled_recall"]["happy"], 1.0, "{json}");
    assert_eq!(json["settled_recall"]["sad"], 0.0, "{json}");
    assert_eq!(json["frames_to_right_label"], 0.0, "{json}");
    assert!(report.join("confusion_matrix.png").is_file() && report.join("frames.jsonl").is_file());
    // A truth file naming an unknown emotion is an error naming it.
    std::fs::write(&truth, "first_frame,last_frame,x,y,size,label\n0,39,150,40,150,glee\n").expect("csv");
    let out = moodmirror(&[&"evaluate", &"--video", &clip, &"--segments", &truth]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("glee"));
}

#[test]
fn annotate_turns_a_rotated_phone_video_upright() {
    init();
    let dir = tempfile::tempdir().expect("tmp");
    // The astronaut stored sideways (turned 90 degrees to the left), as a phone held upright
    // records it, with the track's matrix saying "turn 90 degrees clockwise to show".
    let clip = dir.path().join("phone.mp4");
    run_to_eos(&format!(
        "filesrc location={} ! jpegdec ! videoconvert ! videoflip video-direction=90l ! videoconvert \
         ! imagefreeze num-buffers=10 ! video/x-raw,framerate=20/1 ! videoconvert ! x264enc ! mp4mux ! filesink location={}",
        fixture("astronaut.jpg").display(),
        clip.display()
    ));
    let mut bytes = std::fs::read(&clip).expect("clip");
    let tkhd = bytes.windows(4).position(|w| w == b"tkhd").expect("a track header");
    // Version 0: flags, times, track id, reserved, duration, reserved, layer, group, volume,
    // reserved, then the 3x3 matrix (16.16 and 2.30 fixed point).
    let matrix = tkhd + 4 + 4 + 20 + 8 + 8;
    let rotate_90: [u32; 9] = [0, 0x0001_0000, 0, 0xFFFF_0000, 0, 0, 0, 0, 0x4000_0000];
    for (k, v) in rotate_90.iter().enumerate() {
        bytes[matrix + 4 * k..matrix + 4 * k + 4].copy_from_slice(&v.to_be_bytes());
    }
    std::fs::write(&clip, &bytes).expect("write");
    let (out, jsonl) = (dir.path().join("out.mp4"), dir.path().join("out.jsonl"));
    let run = moodmirror(&[&"annotate", &"--quiet", &clip, &"-o", &out, &"--jsonl", &jsonl]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // Upright, the face is where it is in the photo and reads as the photo does (sideways it
    // was found at about (92, 244) and read as sad).
    for line in std::fs::read_to_string(&jsonl).expect("jsonl").lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let faces = v["objects"].as_array().expect("objects");
        assert_eq!(faces.len(), 1, "{line}");
        let (x, y) = (faces[0]["x"].as_f64().unwrap_or(0.0), faces[0]["y"].as_f64().unwrap_or(0.0));
        assert!((150.0..220.0).contains(&x) && (40.0..110.0).contains(&y), "the face at ({x}, {y}): not upright");
        assert_eq!(faces[0]["emotion"]["label"], "happy", "{line}");
    }
}

#[test]
fn annotate_encodes_odd_sized_video_and_names_a_video_too_small_for_h264() {
    init();
    let dir = tempfile::tempdir().expect("tmp");
    let clip = |name: &str, w: u32, h: u32| {
        let path = dir.path().join(name);
        run_to_eos(&format!(
            "videotestsrc num-buffers=10 ! video/x-raw,width={w},height={h} ! jpegenc ! matroskamux ! filesink location={}",
            path.display()
        ));
        path
    };
    // x264 refuses odd sides in 4:2:0: the video loses its last column and row, the JSON sees all.
    let odd = clip("odd.mkv", 321, 241);
    let (video, jsonl) = (dir.path().join("odd.mp4"), dir.path().join("odd.jsonl"));
    let out = moodmirror(&[&"annotate", &odd, &"-o", &video, &"--jsonl", &jsonl]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&jsonl).expect("jsonl").lines().next().expect("a line")).expect("json");
    assert_eq!((first["resolution"]["width"].as_u64(), first["resolution"]["height"].as_u64()), (Some(321), Some(241)));
    let decoded =
        run_to_eos(&format!("filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! appsink name=sink sync=false", video.display()));
    assert_eq!(decoded.len(), 10);
    // A video smaller than x264's 16 px: an error that says so, and nothing written.
    let tiny = clip("tiny.mkv", 8, 8);
    let tiny_out = dir.path().join("tiny.mp4");
    let out = moodmirror(&[&"annotate", &tiny, &"-o", &tiny_out]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("8x8") && stderr.contains("at least 16x16"), "{stderr}");
    assert!(!tiny_out.exists());
}

#[test]
fn annotate_warns_when_a_file_ends_before_the_duration_it_declares() {
    init();
    let dir = tempfile::tempdir().expect("tmp");
    let whole = dir.path().join("whole.mp4");
    // The index first (faststart), as cameras and editors write it: a cut-off copy still plays.
    run_to_eos(&format!(
        "videotestsrc num-buffers=90 ! video/x-raw,width=160,height=120,framerate=30/1 ! x264enc ! mp4mux faststart=true ! filesink location={}",
        whole.display()
    ));
    let bytes = std::fs::read(&whole).expect("clip");
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let out = moodmirror(&[&"annotate", &cut, &"-o", &dir.path().join("cut-out.mp4")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("declares 3.0 s") && stderr.contains("looks truncated"), "{stderr}");
    // The whole file: no warning.
    let out = moodmirror(&[&"annotate", &whole, &"-o", &dir.path().join("whole-out.mp4")]);
    assert!(out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("truncated"));
    // Cut before its index (the usual MP4): an error that says what that means.
    let plain = dir.path().join("plain.mp4");
    run_to_eos(&format!("videotestsrc num-buffers=30 ! x264enc ! mp4mux ! filesink location={}", plain.display()));
    let bytes = std::fs::read(&plain).expect("clip");
    let cut = dir.path().join("cut-plain.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let out = moodmirror(&[&"annotate", &cut, &"-o", &dir.path().join("cut-plain-out.mp4")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("cut off before it finished"), "{stderr}");
}
