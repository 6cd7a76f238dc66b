//! Webcam with emotions: `v4l2src → moodmirror → display`, printing each face's dominant emotion
//! whenever it changes.
//!
//!     cargo run --release --example webcam [-- /dev/video0]

use gst::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    gst::init()?;
    gstmoodmirror::plugin_register_static()?;
    let device = std::env::args().nth(1).unwrap_or_else(|| "/dev/video0".into());
    let pipeline =
        gst::parse::launch(&format!("v4l2src device={device} ! videoconvert ! moodmirror name=mm ! videoconvert ! autovideosink"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "not a pipeline")?;
    let mm = pipeline.by_name("mm").ok_or("no moodmirror")?;
    // Read each frame's metadata where moodmirror hands it on.
    let last = std::sync::Mutex::new(Vec::<String>::new());
    mm.static_pad("src").ok_or("no src pad")?.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer() {
            let labels: Vec<String> = gstmoodmirror::meta::faces(buffer)
                .unwrap_or_default()
                .iter()
                .map(|f| format!("{} ({:.0}%)", f.emotion, f.confidence * 100.0))
                .collect();
            let names: Vec<String> = labels.iter().map(|l| l.split(' ').next().unwrap_or("").to_string()).collect();
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            if names != *last {
                println!(
                    "{:>8.2}s  {}",
                    buffer.pts().map(|t| t.seconds_f64()).unwrap_or(0.0),
                    if labels.is_empty() { "no face".to_string() } else { labels.join(", ") }
                );
                *last = names;
            }
        }
        gst::PadProbeReturn::Ok
    });
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().ok_or("no bus")?;
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                eprintln!("error: {} ({:?})", e.error(), e.debug());
                break;
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    Ok(())
}
