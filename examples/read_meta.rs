//! Reading moodmirror's metadata from an appsink in Rust: both the per-frame MoodMirrorMeta and
//! the per-face ROI metas.
//!
//!     cargo run --release --example read_meta [-- image.jpg]

use gst::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    gst::init()?;
    gstmoodmirror::plugin_register_static()?;
    let image = std::env::args().nth(1).unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/astronaut.jpg").into());
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{image}\" ! jpegdec ! videoconvert ! imagefreeze num-buffers=3 ! moodmirror \
         ! appsink name=sink sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    let sink = pipeline.by_name("sink").and_then(|s| s.downcast::<gst_app::AppSink>().ok()).ok_or("no appsink")?;
    pipeline.set_state(gst::State::Playing)?;
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(5)) {
        let Some(buffer) = sample.buffer() else { continue };
        let pts = buffer.pts().map(|t| t.mseconds()).unwrap_or(0);
        for face in gstmoodmirror::meta::faces(buffer).unwrap_or_default() {
            println!(
                "{pts} ms: face at {},{} {}x{} → {} {:.0}% (probabilities {:?})",
                face.x,
                face.y,
                face.width,
                face.height,
                face.emotion,
                face.confidence * 100.0,
                face.probabilities
            );
        }
        for roi in buffer.iter_meta::<gst_video::VideoRegionOfInterestMeta>() {
            let emotion = roi.param("emotion").and_then(|s| s.get::<String>("label").ok());
            println!("{pts} ms: ROI {} {:?} emotion {emotion:?}", roi.roi_type(), roi.rect());
        }
    }
    pipeline.set_state(gst::State::Null)?;
    Ok(())
}
