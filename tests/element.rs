//! The moodmirror element in harnesses and real pipelines, on a real public-domain face photo
//! (tests/fixtures/astronaut.png: one face, at about x 177, y 66, 95x95).

mod common;

use common::{fixture, init};
use gst::prelude::*;
use gstmoodmirror::meta::{self, FaceMeta};

const FACE: (i32, i32, i32, i32) = (177, 66, 95, 95);

fn astronaut_rgb() -> (Vec<u8>, u32, u32) {
    let img = image::open(fixture("astronaut.png")).expect("fixture").into_rgb8();
    let (w, h) = img.dimensions();
    (img.into_raw(), w, h)
}

fn rgb_caps(w: u32, h: u32) -> String {
    format!("video/x-raw,format=RGB,width={w},height={h},framerate=30/1")
}

fn iou(a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)) -> f64 {
    let ix = ((a.0 + a.2).min(b.0 + b.2) - a.0.max(b.0)).max(0);
    let iy = ((a.1 + a.3).min(b.1 + b.3) - a.1.max(b.1)).max(0);
    let inter = (ix * iy) as f64;
    inter / ((a.2 * a.3 + b.2 * b.3) as f64 - inter)
}

fn assert_one_face_at_the_face(faces: &[FaceMeta], what: &str) {
    assert_eq!(faces.len(), 1, "{what}: faces {faces:?}");
    let f = &faces[0];
    // FACE is a square; YuNet's boxes are taller (its full detection, (178, 65, 91, 111), has
    // IoU 0.82 with it) and boxes re-found between detections, from a coarser crop, sit a few
    // pixels from that (IoU 0.83 to 0.87 with the full detection, examples/track_refind.rs).
    let overlap = iou((f.x, f.y, f.width, f.height), FACE);
    assert!(overlap > 0.65, "{what}: box {f:?} IoU {overlap:.2} with the face");
    let sum: f64 = f.probabilities.iter().sum();
    assert!((sum - 1.0).abs() < 1e-3, "{what}: probabilities sum {sum}");
    assert!(moodmirror::emotion::CLASS_NAMES.contains(&f.emotion.as_str()));
}

/// Pushes one RGB frame through `videoconvert ! <format> ! moodmirror` and returns the output.
fn run_in_format(format: &str, props: &str) -> gst::Buffer {
    let (rgb, w, h) = astronaut_rgb();
    let mut h_ =
        gst_check::Harness::new_parse(&format!("videoconvert ! video/x-raw,format={format} ! moodmirror detection-mode=sync {props}"));
    h_.set_src_caps_str(&rgb_caps(w, h));
    let mut buffer = gst::Buffer::from_slice(rgb);
    buffer.get_mut().expect("writable").set_pts(gst::ClockTime::ZERO);
    assert_eq!(h_.push(buffer), Ok(gst::FlowSuccess::Ok));
    h_.pull().expect("output buffer")
}

#[test]
fn finds_the_face_in_every_format() {
    init();
    for format in
        ["RGB", "BGR", "RGBx", "BGRx", "xRGB", "xBGR", "RGBA", "BGRA", "ARGB", "ABGR", "GRAY8", "I420", "NV12", "YUY2", "UYVY", "YVYU"]
    {
        let out = run_in_format(format, "");
        let faces = meta::faces(&out).unwrap_or_else(|| panic!("{format}: no MoodMirrorMeta"));
        assert_one_face_at_the_face(&faces, format);
        assert_one_face_at_the_face(&meta::roi_faces(&out), &format!("{format} ROI"));
    }
}

/// Bytes of the frame in a format, without moodmirror: the reference for bit-exactness.
fn reference_in_format(format: &str) -> Vec<u8> {
    let out = run_in_format(format, "draw=false");
    let bytes = out.map_readable().expect("map").to_vec();
    bytes
}

#[test]
fn draws_on_the_face_and_only_there() {
    init();
    for format in ["RGB", "BGRx", "GRAY8", "I420", "NV12", "YUY2", "UYVY"] {
        let plain = reference_in_format(format);
        let drawn = run_in_format(format, "draw=true");
        let drawn = drawn.map_readable().expect("map");
        assert_eq!(plain.len(), drawn.len());
        let changed = plain.iter().zip(drawn.iter()).filter(|(a, b)| a != b).count();
        assert!(changed > 500, "{format}: only {changed} bytes drawn");
        assert!(changed < plain.len() / 4, "{format}: {changed} bytes changed, more than box and label");
    }
}

#[test]
fn draw_false_and_faceless_frames_are_bit_exact() {
    init();
    let (rgb, w, h) = astronaut_rgb();
    // A face frame with draw=false, and a faceless frame (the top-left corner, sky and flag)
    // with draw=true: both leave every byte as it was.
    let corner: Vec<u8> = (0..120).flat_map(|y| rgb[y * w as usize * 3..][..160 * 3].to_vec()).collect();
    for (data, fw, fh, draw) in [(rgb.clone(), w, h, false), (corner, 160, 120, true)] {
        let mut harness = gst_check::Harness::new("moodmirror");
        harness.element().expect("element").set_property_from_str("detection-mode", "sync");
        harness.element().expect("element").set_property("draw", draw);
        harness.set_src_caps_str(&rgb_caps(fw, fh));
        assert_eq!(harness.push(gst::Buffer::from_slice(data.clone())), Ok(gst::FlowSuccess::Ok));
        let out = harness.pull().expect("output");
        assert_eq!(out.map_readable().expect("map").as_slice(), data.as_slice(), "{fw}x{fh} draw={draw}");
        let faces = meta::faces(&out).expect("meta on every frame");
        assert_eq!(faces.len(), if draw { 0 } else { 1 });
    }
}

#[test]
fn follows_a_resolution_change_mid_stream() {
    init();
    let (rgb, w, h) = astronaut_rgb();
    let mut harness = gst_check::Harness::new_parse("videoscale ! capsfilter name=size ! moodmirror detection-mode=sync");
    // (the harness bin holds the three elements; the capsfilter is found by name)
    harness.set_src_caps_str(&rgb_caps(w, h));
    let capsfilter = harness.element().expect("bin").downcast::<gst::Bin>().expect("bin").by_name("size").expect("capsfilter");
    for (ow, oh) in [(512, 512), (320, 320), (1024, 1024), (512, 512)] {
        capsfilter.set_property("caps", gst::Caps::builder("video/x-raw").field("width", ow).field("height", oh).build());
        assert_eq!(harness.push(gst::Buffer::from_slice(rgb.clone())), Ok(gst::FlowSuccess::Ok));
        let out = harness.pull().expect("output");
        let faces = meta::faces(&out).expect("meta");
        let s = ow as f64 / 512.0;
        let expected = ((FACE.0 as f64 * s) as i32, (FACE.1 as f64 * s) as i32, (FACE.2 as f64 * s) as i32, (FACE.3 as f64 * s) as i32);
        // The face is found at every size (the 2x upscale also shows one Haar false positive).
        assert!(faces.iter().any(|f| iou((f.x, f.y, f.width, f.height), expected) > 0.6), "{ow}x{oh}: {faces:?}");
    }
}

#[test]
fn tiny_odd_and_strided_frames_do_not_fail() {
    init();
    let cases = [(1, 1, "RGB"), (7, 5, "I420"), (33, 17, "NV12"), (31, 13, "GRAY8"), (15, 9, "BGR"), (1, 1, "YUY2"), (35, 7, "UYVY")];
    for (w, h, format) in cases {
        let mut harness =
            gst_check::Harness::new_parse(&format!("videoconvert ! video/x-raw,format={format} ! moodmirror detection-mode=sync"));
        harness.set_src_caps_str(&rgb_caps(w, h));
        // RGB rows are padded to 4 bytes: size the buffer from the video info.
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w, h).build().expect("info");
        let data = vec![128u8; info.size()];
        assert_eq!(harness.push(gst::Buffer::from_slice(data)), Ok(gst::FlowSuccess::Ok), "{w}x{h} {format}");
        let out = harness.pull().expect("output");
        assert_eq!(meta::faces(&out).map(|f| f.len()), Some(0));
    }
}

fn run_pipeline(description: &str) -> (Vec<gst::Message>, Vec<gst::Buffer>) {
    let pipeline = gst::parse::launch(description).expect("pipeline").downcast::<gst::Pipeline>().expect("pipeline");
    let sink = pipeline.by_name("sink").and_then(|s| s.downcast::<gst_app::AppSink>().ok());
    let bus = pipeline.bus().expect("bus");
    let _ = pipeline.set_state(gst::State::Playing);
    let mut messages = Vec::new();
    let mut buffers = Vec::new();
    loop {
        if let Some(sink) = &sink {
            while let Some(sample) = sink.try_pull_sample(gst::ClockTime::ZERO) {
                buffers.extend(sample.buffer_owned());
            }
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(50)) else { continue };
        let done = matches!(msg.view(), gst::MessageView::Eos(_) | gst::MessageView::Error(_));
        messages.push(msg);
        if done {
            break;
        }
    }
    if let Some(sink) = &sink {
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::ZERO) {
            buffers.extend(sample.buffer_owned());
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    (messages, buffers)
}

#[test]
fn pipeline_delivers_roi_meta_custom_meta_and_bus_messages() {
    init();
    let jpeg = fixture("astronaut.jpg");
    let (messages, buffers) = run_pipeline(&format!(
        "filesrc location={} ! jpegdec ! videoconvert ! imagefreeze num-buffers=10 ! moodmirror post-messages=true ! appsink name=sink sync=false",
        jpeg.display()
    ));
    assert!(messages.iter().any(|m| matches!(m.view(), gst::MessageView::Eos(_))), "no EOS: {messages:?}");
    assert_eq!(buffers.len(), 10);
    for b in &buffers {
        assert_one_face_at_the_face(&meta::faces(b).expect("custom meta"), "custom meta");
        assert_one_face_at_the_face(&meta::roi_faces(b), "ROI meta");
    }
    let faces_messages: Vec<&gst::StructureRef> = messages
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Element(e) => e.structure().filter(|s| s.name() == "moodmirror"),
            _ => None,
        })
        .collect();
    assert_eq!(faces_messages.len(), 10);
    for (i, s) in faces_messages.iter().enumerate() {
        assert_eq!(s.get::<u64>("timestamp").expect("timestamp"), buffers[i].pts().expect("pts").nseconds());
        assert!(s.get::<u64>("running-time").is_ok() && s.get::<u64>("stream-time").is_ok() && s.get::<u64>("duration").is_ok());
        let faces = s.get::<gst::List>("faces").expect("faces");
        assert_eq!(faces.len(), 1);
        let face = faces.iter().next().and_then(|v| v.get::<gst::Structure>().ok()).expect("face structure");
        assert!(face.get::<String>("emotion").is_ok() && face.get::<f64>("confidence").is_ok());
    }
}

fn error_text(model_location: &str) -> String {
    let (messages, _) = run_pipeline(&format!("videotestsrc num-buffers=3 ! moodmirror model-location=\"{model_location}\" ! fakesink"));
    messages
        .iter()
        .find_map(|m| match m.view() {
            gst::MessageView::Error(e) => Some(format!("{} {:?}", e.error(), e.debug())),
            _ => None,
        })
        .expect("an error on the bus")
}

#[test]
fn bad_model_location_gives_a_bus_error_naming_the_file() {
    init();
    let text = error_text("/nonexistent/model.safetensors");
    assert!(text.contains("/nonexistent/model.safetensors"), "{text}");
    // The file is in the error's message itself, not only in its debug details.
    assert!(!text.contains("Could not configure supporting library"), "{text}");

    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not safetensors").expect("write");
    let text = error_text(&garbage.display().to_string());
    assert!(text.contains("garbage.safetensors") && text.contains("not a valid safetensors"), "{text}");

    // Right format, wrong shapes: the error names the tensor.
    let wrong = dir.path().join("wrong.safetensors");
    let t = candle_core::Tensor::zeros((3, 3), candle_core::DType::F32, &candle_core::Device::Cpu).expect("tensor");
    let tensors = std::collections::HashMap::from([("stage0.0.conv.weight".to_string(), t)]);
    // No metadata: the architecture defaults to vgg.
    candle_core::safetensors::save(&tensors, &wrong).expect("save");
    let text = error_text(&wrong.display().to_string());
    assert!(text.contains("stage0.0.conv.weight"), "{text}");
}

#[test]
fn restarts_cleanly_through_null_and_playing() {
    init();
    let pipeline = gst::parse::launch("videotestsrc is-live=false num-buffers=1000 ! moodmirror ! fakesink").expect("pipeline");
    for _ in 0..3 {
        pipeline.set_state(gst::State::Playing).expect("playing");
        let _ = pipeline.state(gst::ClockTime::from_seconds(5));
        pipeline.set_state(gst::State::Null).expect("null");
    }
}

#[test]
fn tracks_a_moving_face_with_one_id_between_detections() {
    init();
    let (rgb, w, h) = astronaut_rgb();
    // A 640x512 canvas with the photo moving right 6 px per frame.
    let (cw, ch) = (640u32, 512u32);
    // A harness answers latency queries as a live source: the frame-exact check needs sync.
    let mut harness = gst_check::Harness::new("moodmirror");
    let mm = harness.element().expect("element");
    mm.set_property_from_str("detection-mode", "sync");
    mm.set_property("detect-interval", 5u32);
    mm.set_property("draw", false);
    harness.set_src_caps_str(&rgb_caps(cw, ch));
    let mut xs = Vec::new();
    let mut ids = Vec::new();
    for frame in 0..15u64 {
        let shift = (frame * 6) as usize;
        let mut canvas = vec![90u8; (cw * ch * 3) as usize];
        for y in 0..h as usize {
            let src = &rgb[y * w as usize * 3..][..w as usize * 3];
            canvas[(y * cw as usize + shift) * 3..][..w as usize * 3].copy_from_slice(src);
        }
        let mut buffer = gst::Buffer::from_slice(canvas);
        buffer.get_mut().expect("writable").set_pts(gst::ClockTime::from_mseconds(frame * 33));
        assert_eq!(harness.push(buffer), Ok(gst::FlowSuccess::Ok));
        let out = harness.pull().expect("output");
        let faces = meta::faces(&out).expect("meta");
        let shifted = (FACE.0 + (frame * 6) as i32, FACE.1, FACE.2, FACE.3);
        let face = faces
            .iter()
            .find(|f| iou((f.x, f.y, f.width, f.height), shifted) > 0.5)
            .unwrap_or_else(|| panic!("frame {frame}: face not reported: {faces:?}"));
        xs.push(face.x - (frame * 6) as i32);
        ids.push(face.track_id);
        assert!(!face.carried, "frame {frame}: the face is in this frame: {face:?}");
    }
    // The face leaves: on the next frame its track still reports it, marked as carried over.
    let mut buffer = gst::Buffer::from_slice(vec![90u8; (cw * ch * 3) as usize]);
    buffer.get_mut().expect("writable").set_pts(gst::ClockTime::from_mseconds(15 * 33));
    assert_eq!(harness.push(buffer), Ok(gst::FlowSuccess::Ok));
    let faces = meta::faces(&harness.pull().expect("output")).expect("meta");
    assert!(!faces.is_empty() && faces.iter().all(|f| f.carried && f.track_id == ids[0]), "{faces:?}");
    assert!(ids.iter().all(|id| id.is_some() && *id == ids[0]), "one track id: {ids:?}");
    // The box follows the face on the frames between full detections too.
    assert!(xs.iter().all(|dx| (dx - FACE.0).abs() <= 12), "box offsets from the moving face: {xs:?}");
}

#[test]
fn mtcnn_detector_finds_the_face_with_landmarks_in_yuv_and_rgb() {
    init();
    for format in ["I420", "RGB", "GRAY8"] {
        let out = run_in_format(format, "detector=mtcnn min-face-size=20");
        let faces = meta::faces(&out).expect("meta");
        assert_one_face_at_the_face(&faces, &format!("mtcnn {format}"));
        let landmarks = faces[0].landmarks.unwrap_or_else(|| panic!("{format}: no landmarks"));
        assert!(landmarks[0][0] < landmarks[1][0], "{format}: eyes {landmarks:?}");
        assert_eq!(meta::roi_faces(&out)[0].landmarks, faces[0].landmarks);
    }
}

#[test]
fn precision_f32_and_int8_agree_on_the_face() {
    init();
    let results: Vec<FaceMeta> = ["precision=f32", "precision=int8", ""]
        .iter()
        .map(|props| {
            let faces = meta::faces(&run_in_format("RGB", props)).expect("MoodMirrorMeta");
            assert_one_face_at_the_face(&faces, props);
            faces[0].clone()
        })
        .collect();
    let (f32_face, int8_face) = (&results[0], &results[1]);
    assert_eq!(f32_face.emotion, int8_face.emotion);
    for (a, b) in f32_face.probabilities.iter().zip(&int8_face.probabilities) {
        assert!((a - b).abs() < 0.02, "f32 {:?} vs int8 {:?}", f32_face.probabilities, int8_face.probabilities);
    }
    let element = gst::ElementFactory::make("moodmirror").build().expect("element");
    assert_eq!(element.property_value("precision").get::<gstmoodmirror::Precision>().ok(), Some(gstmoodmirror::Precision::Auto));
}

#[test]
fn logit_bias_shifts_probabilities_toward_frequent_classes_and_can_be_switched_off() {
    init();
    let with_bias = meta::faces(&run_in_format("RGB", "")).expect("MoodMirrorMeta");
    let raw = meta::faces(&run_in_format("RGB", "logit-bias=false")).expect("MoodMirrorMeta");
    assert_one_face_at_the_face(&with_bias, "");
    assert_one_face_at_the_face(&raw, "logit-bias=false");
    // The shipped model's bias lowers rare disgust (index 1) and raises frequent happy (3).
    let (b, r) = (&with_bias[0].probabilities, &raw[0].probabilities);
    assert!(b[1] < r[1] && b[3] > r[3], "with bias {b:?}, raw {r:?}");
    let element = gst::ElementFactory::make("moodmirror").build().expect("element");
    assert_eq!(element.property_value("logit-bias").get::<bool>().ok(), Some(true));
}

#[test]
fn background_detection_keeps_every_frame_and_finds_the_face_a_few_frames_later() {
    init();
    // detection-mode=async on a file pipeline (paced at 10 ms a frame: unpaced, all 40 frames
    // pass before the first detection ends), and auto behind a live source: the face reaches
    // the metadata of later frames; no frame is lost or reordered.
    for (source, mode) in
        [("imagefreeze num-buffers=40 ! identity sleep-time=10000", "async"), ("imagefreeze num-buffers=40 is-live=true", "auto")]
    {
        let (messages, buffers) = run_pipeline(&format!(
            "filesrc location={} ! jpegdec ! videoconvert ! {source} ! video/x-raw,framerate=30/1 ! videoconvert \
             ! moodmirror detection-mode={mode} draw=false ! appsink name=sink sync=false",
            fixture("astronaut.jpg").display()
        ));
        assert!(!messages.iter().any(|m| matches!(m.view(), gst::MessageView::Error(_))), "{mode}: an error on the bus");
        assert_eq!(buffers.len(), 40, "{mode}: every frame comes out");
        let pts: Vec<_> = buffers.iter().map(|b| b.pts()).collect();
        assert!(pts.windows(2).all(|w| w[0] < w[1]), "{mode}: in order");
        let with_face: Vec<usize> = (0..40).filter(|&i| meta::faces(&buffers[i]).is_some_and(|f| f.len() == 1)).collect();
        assert!(with_face.len() >= 20, "{mode}: the face is reported on most frames: {with_face:?}");
        let last = meta::faces(&buffers[39]).expect("meta");
        assert_one_face_at_the_face(&last, mode);
    }
}

#[test]
fn upstream_detector_classifies_every_face_facedetect_reports() {
    init();
    if gst::ElementFactory::find("facedetect").is_none() {
        panic!("facedetect (gstreamer1.0-opencv) is missing: scripts/setup.sh installs it");
    }
    // facedetect loads its cascade from opencv-data; without it, it finds nothing and says so
    // only on stderr.
    let cascade = std::path::Path::new("/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml");
    assert!(
        cascade.is_file(),
        "facedetect needs {} (Debian's opencv-data, a recommend of gstreamer1.0-opencv): scripts/setup.sh installs it",
        cascade.display()
    );
    // facedetect (OpenCV's Haar cascade) finds the faces; moodmirror only classifies them.
    let (_, buffers) = run_pipeline(&format!(
        "filesrc location={} ! jpegdec ! videoconvert ! imagefreeze num-buffers=3 ! videoconvert \
         ! facedetect display=false ! videoconvert ! moodmirror detector=upstream draw=false ! appsink name=sink sync=false",
        fixture("astronaut.jpg").display()
    ));
    assert_eq!(buffers.len(), 3);
    for buffer in &buffers {
        let rois: Vec<_> = buffer.iter_meta::<gst_video::VideoRegionOfInterestMeta>().filter(|m| m.roi_type() == "face").collect();
        assert!(!rois.is_empty(), "facedetect found the face");
        // No ROI of our own next to facedetect's: each of its ROIs carries our emotion.
        for roi in &rois {
            let emotion = roi.param("emotion").unwrap_or_else(|| panic!("ROI {:?} not classified", roi.rect()));
            assert!(emotion.get::<String>("model_name").is_ok());
        }
        let faces = meta::faces(buffer).expect("MoodMirrorMeta");
        assert_eq!(faces.len(), rois.len());
        assert_one_face_at_the_face(&faces, "upstream");
    }
}

#[test]
fn upstream_rois_of_zero_size_or_outside_the_frame_are_skipped() {
    init();
    let (rgb, w, h) = astronaut_rgb();
    let mut harness = gst_check::Harness::new("moodmirror");
    harness.element().expect("element").set_property_from_str("detector", "upstream");
    harness.element().expect("element").set_property("draw", false);
    harness.set_src_caps_str(&rgb_caps(w, h));
    let mut buffer = gst::Buffer::from_slice(rgb);
    {
        let b = buffer.get_mut().expect("writable");
        gst_video::VideoRegionOfInterestMeta::add(b, "face", (FACE.0 as u32, FACE.1 as u32, FACE.2 as u32, FACE.3 as u32));
        gst_video::VideoRegionOfInterestMeta::add(b, "face", (10, 10, 0, 40));
        gst_video::VideoRegionOfInterestMeta::add(b, "face", (w + 5, 10, 40, 40));
        gst_video::VideoRegionOfInterestMeta::add(b, "person", (0, 0, 100, 100));
    }
    assert_eq!(harness.push(buffer), Ok(gst::FlowSuccess::Ok));
    let out = harness.pull().expect("output");
    let faces = meta::faces(&out).expect("meta");
    assert_one_face_at_the_face(&faces, "the one valid face ROI");
    let classified = out.iter_meta::<gst_video::VideoRegionOfInterestMeta>().filter(|m| m.param("emotion").is_some()).count();
    assert_eq!(classified, 1);
    assert_eq!(out.iter_meta::<gst_video::VideoRegionOfInterestMeta>().count(), 4, "no ROI added or removed");
}

/// Greyscale 640x360 frames with `portrait` (220 px) at `x`, `y` on a mid-grey background.
fn grey_frame(portrait: Option<&image::GrayImage>, x: u32, y: u32) -> Vec<u8> {
    let (cw, ch) = (640u32, 360u32);
    let mut canvas = image::GrayImage::from_pixel(cw, ch, image::Luma([90]));
    if let Some(p) = portrait {
        image::imageops::overlay(&mut canvas, p, i64::from(x), i64::from(y));
    }
    canvas.into_raw()
}

/// Runs GRAY8 frames through moodmirror (sync detections, `props`) and returns their faces.
fn faces_of_grey_frames(frames: &[Vec<u8>], props: &[(&str, &str)]) -> Vec<Vec<FaceMeta>> {
    let mut harness = gst_check::Harness::new("moodmirror");
    let mm = harness.element().expect("element");
    mm.set_property_from_str("detection-mode", "sync");
    mm.set_property("draw", false);
    for (name, value) in props {
        mm.set_property_from_str(name, value);
    }
    harness.set_src_caps_str("video/x-raw,format=GRAY8,width=640,height=360,framerate=30/1");
    push_grey_frames(&mut harness, frames, 0, std::time::Duration::ZERO)
}

#[test]
fn greyscale_portraits_stay_found_between_detections_and_their_labels_follow_changes() {
    init();
    // Four real greyscale portraits (tests/fixtures/README.md), each shown for 30 frames in
    // the same place, drifting 4 px per frame (2 % of the face's width), then nothing: as a
    // person changing in front of an IR camera, then leaving.
    let portraits =
        [("Aaron_Peirsol_0001", "happy"), ("Aidan_Quinn_0001", "neutral"), ("Amy_Smart_0001", "happy"), ("Albrecht_Mentz_0001", "neutral")];
    let mut frames = Vec::new();
    for (name, _) in &portraits {
        let photo = image::open(fixture(&format!("portraits/{name}.jpg"))).expect("portrait").into_luma8();
        let photo = image::imageops::resize(&photo, 220, 220, image::imageops::FilterType::Triangle);
        frames.extend((0..30).map(|t| grey_frame(Some(&photo), 100 + 4 * t, 70)));
    }
    frames.extend((0..40).map(|_| grey_frame(None, 0, 0)));
    let tracked = faces_of_grey_frames(&frames, &[]);
    let every_frame = faces_of_grey_frames(&frames, &[("detect-interval", "1"), ("classify-interval", "1"), ("smoothing", "0")]);
    let every_frame_raw = faces_of_grey_frames(&frames, &[("classify-interval", "1"), ("smoothing", "0")]);
    for (k, (name, label)) in portraits.iter().enumerate() {
        let range = k * 30..(k + 1) * 30;
        // Found in the frame itself (not carried) on every frame but at most one, full
        // detection or not.
        let on_photo = |i: usize, f: &FaceMeta| {
            let (cx, x0) = (f.x + f.width / 2, 100 + 4 * (i - range.start) as i32);
            (x0..x0 + 220).contains(&cx) && (70..290).contains(&(f.y + f.height / 2))
        };
        let fresh = range.clone().filter(|&i| tracked[i].iter().any(|f| !f.carried && on_photo(i, f))).count();
        // The previous face, gone, may still be shown (carried) for the report grace time.
        let extra = range.clone().filter(|&i| tracked[i].len() > 1).count();
        assert!(extra <= 6, "{name}: {extra} frames with more than one face");
        let boxes: Vec<String> = tracked[range.clone()]
            .iter()
            .map(|faces| faces.iter().map(|f| format!("({} {} {} {} {})", f.x, f.y, f.width, f.carried, f.emotion)).collect())
            .collect();
        assert!(fresh >= 29, "{name}: found fresh in {fresh} of 30 frames (x, y, width, carried, label): {boxes:?}");
        // The label follows the new face within 10 frames and stays.
        let right = |i: usize| tracked[i].iter().any(|f| !f.carried && on_photo(i, f) && f.emotion == *label);
        let first_right = range.clone().find(|&i| right(i)).map(|i| i - range.start);
        assert!(first_right.is_some_and(|f| f <= 10), "{name}: right label from frame {first_right:?} of its 30");
        assert!(range.clone().skip(12).all(right), "{name}: the label does not hold");
        // The crop the classifier sees between detections is the crop of a full detection:
        // the same label on (almost) every frame, and close probabilities.
        let mut agree = 0;
        for i in range.clone() {
            let pick = |faces: &[FaceMeta]| faces.iter().find(|f| !f.carried && on_photo(i, f)).cloned();
            let (Some(a), Some(b)) = (pick(&every_frame_raw[i]), pick(&every_frame[i])) else { continue };
            agree += usize::from(a.emotion == b.emotion);
            let (pa, pb) = (a.raw_probabilities.expect("raw"), b.raw_probabilities.expect("raw"));
            let gap = pa.iter().zip(&pb).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(gap < 0.25, "{name} frame {i}: tracked crop {pa:?} vs full detection {pb:?}");
        }
        assert!(agree >= 28, "{name}: tracked and fully detected crops agree on {agree} of 30 frames");
    }
    // Gone: no face is invented on the empty frames, and the track ends.
    let after = &tracked[4 * 30..];
    assert!(after.iter().all(|faces| faces.iter().all(|f| f.carried)), "a face found on an empty frame: {after:?}");
    assert!(after[after.len() - 5..].iter().all(Vec::is_empty), "the track outlived the face: {:?}", &after[after.len() - 5..]);
    // MTCNN re-finds them with O-Net on the box: most frames fresh, nothing on empty frames.
    let tracked = faces_of_grey_frames(&frames, &[("detector", "mtcnn")]);
    let fresh = (0..120).filter(|&i| tracked[i].iter().any(|f| !f.carried)).count();
    assert!(fresh >= 110, "mtcnn: found fresh in {fresh} of 120 frames");
    let after = &tracked[4 * 30..];
    assert!(after.iter().all(|faces| faces.iter().all(|f| f.carried)), "mtcnn: a face found on an empty frame: {after:?}");
    assert!(after[after.len() - 5..].iter().all(Vec::is_empty), "mtcnn: the track outlived the face");
}

/// Pushes GRAY8 frames (33 ms apart from `start_ms`, `pace` apart in real time) into `harness`
/// and returns their faces.
fn push_grey_frames(harness: &mut gst_check::Harness, frames: &[Vec<u8>], start_ms: u64, pace: std::time::Duration) -> Vec<Vec<FaceMeta>> {
    frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            std::thread::sleep(pace);
            let mut buffer = gst::Buffer::from_slice(frame.clone());
            buffer.get_mut().expect("writable").set_pts(gst::ClockTime::from_mseconds(start_ms + i as u64 * 33));
            assert_eq!(harness.push(buffer), Ok(gst::FlowSuccess::Ok));
            meta::faces(&harness.pull().expect("output")).unwrap_or_default()
        })
        .collect()
}

#[test]
fn a_flushing_seek_or_a_new_stream_ends_the_tracks_of_before() {
    init();
    // A face for 3 s, then a flushing seek back to the start (running time starts again at
    // 0), a new stream, or times that start again at 0 with neither: what was on screen before
    // is not on screen now, whatever the clock says. Before, tracks 3 s "younger" than the new running time never aged and
    // were carried as ghosts for seconds, until the new clock passed their old one.
    let photo = image::open(fixture("portraits/Aaron_Peirsol_0001.jpg")).expect("portrait").into_luma8();
    let photo = image::imageops::resize(&photo, 220, 220, image::imageops::FilterType::Triangle);
    let before: Vec<Vec<u8>> = (0..90).map(|_| grey_frame(Some(&photo), 100, 70)).collect();
    let empty: Vec<Vec<u8>> = (0..10).map(|_| grey_frame(None, 0, 0)).collect();
    let elsewhere: Vec<Vec<u8>> = (0..40).map(|_| grey_frame(Some(&photo), 380, 120)).collect();
    for (what, background) in [("flush", false), ("stream-start", false), ("time runs back", false), ("flush, async detection", true)] {
        let mut harness = gst_check::Harness::new("moodmirror");
        let mm = harness.element().expect("element");
        mm.set_property_from_str("detection-mode", if background { "async" } else { "sync" });
        mm.set_property("draw", false);
        // In the background, a detection on every frame and frames a few ms apart: the worker
        // is busy with a frame from before when the flush comes, and its faces must not count.
        let pace = std::time::Duration::from_millis(if background { 10 } else { 0 });
        if background {
            mm.set_property_from_str("detect-interval", "1");
        }
        harness.set_src_caps_str("video/x-raw,format=GRAY8,width=640,height=360,framerate=30/1");
        let seen = push_grey_frames(&mut harness, &before, 0, pace);
        let old_ids: Vec<u64> = seen.iter().flatten().filter_map(|f| f.track_id).collect();
        let shown: Vec<usize> = seen[60..].iter().map(Vec::len).collect();
        assert!(shown.iter().filter(|&&n| n == 1).count() >= 28, "{what}: faces on the last 30 frames before: {shown:?}");
        if what.starts_with("flush") {
            assert!(harness.push_event(gst::event::FlushStart::new()));
            assert!(harness.push_event(gst::event::FlushStop::new(true)));
        } else if what == "stream-start" {
            assert!(harness.push_event(gst::event::StreamStart::new("second")));
        }
        // (without a flush or a new stream: a source that restarted its clock)
        if what != "time runs back" {
            assert!(harness.push_event(gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new())));
        }
        let after = push_grey_frames(&mut harness, &empty, 0, pace);
        let shown: Vec<usize> = after.iter().map(Vec::len).collect();
        assert!(shown.iter().all(|&n| n == 0), "{what}: faces from before shown on empty frames: {shown:?}");
        let later = push_grey_frames(&mut harness, &elsewhere, 330, pace);
        let found = later.iter().filter(|faces| faces.iter().any(|f| !f.carried && (380..600).contains(&(f.x + f.width / 2)))).count();
        // (in the background, once a detection of a frame with it has had time to finish)
        assert!(found >= if background { 20 } else { 40 }, "{what}: the new face found in {found} of 40 frames");
        // Track ids stay unique within the element's run: the new face is a new track.
        assert!(later.iter().flatten().all(|f| f.track_id.is_some_and(|id| !old_ids.contains(&id))), "{what}: an old track id reused");
    }
}

#[test]
fn frames_without_timestamps_still_age_their_tracks() {
    init();
    // A source that stamps no times (appsrc without do-timestamp, some raw network sources):
    // the tracks age by frames at the caps' frame rate instead of staying "just seen" forever.
    let photo = image::open(fixture("portraits/Aidan_Quinn_0001.jpg")).expect("portrait").into_luma8();
    let photo = image::imageops::resize(&photo, 220, 220, image::imageops::FilterType::Triangle);
    let mut frames: Vec<Vec<u8>> = (0..30).map(|_| grey_frame(Some(&photo), 100, 70)).collect();
    frames.extend((0..60).map(|_| grey_frame(None, 0, 0)));
    let mut harness = gst_check::Harness::new("moodmirror");
    let mm = harness.element().expect("element");
    mm.set_property_from_str("detection-mode", "sync");
    mm.set_property("draw", false);
    harness.set_src_caps_str("video/x-raw,format=GRAY8,width=640,height=360,framerate=30/1");
    let faces: Vec<usize> = frames
        .iter()
        .map(|frame| {
            assert_eq!(harness.push(gst::Buffer::from_slice(frame.clone())), Ok(gst::FlowSuccess::Ok));
            meta::faces(&harness.pull().expect("output")).map_or(0, |f| f.len())
        })
        .collect();
    assert!(faces[..30].iter().filter(|&&n| n == 1).count() >= 29, "the face while there: {faces:?}");
    // Carried for the report grace time (200 ms, 6 frames at 30/s) at most, then gone.
    assert!(faces[30 + 8..].iter().all(|&n| n == 0), "the face outlived itself on frames without times: {faces:?}");
}
