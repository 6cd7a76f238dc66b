//! What `moodmirror annotate` does, as a few lines of Rust: decode a file, run moodmirror, write
//! JSON lines and an H.264 MP4 (video only here; the command also carries the audio over).
//!
//!     cargo run --release --example annotate -- input.mp4 output.mp4 output.jsonl

use gst::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output, jsonl] = args.as_slice() else {
        return Err("usage: annotate INPUT OUTPUT.mp4 OUTPUT.jsonl".into());
    };
    gst::init()?;
    gstmoodmirror::plugin_register_static()?;
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{input}\" ! decodebin ! videoconvert ! moodmirror ! moodmirrorjson location=\"{jsonl}\" \
         ! videoconvert ! x264enc ! mp4mux ! filesink location=\"{output}\""
    ))?;
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().ok_or("no bus")?;
    let mut result = Ok(());
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                result = Err(format!("{}: {}", input, e.error()).into());
                break;
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    result
}
