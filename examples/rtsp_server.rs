//! An RTSP server whose stream is annotated by moodmirror.
//!
//!     cargo run --release --example rtsp_server [-- "v4l2src ! videoconvert"]   # default: the bundled photo
//!     # then, e.g. on the same machine:
//!     gst-launch-1.0 rtspsrc location=rtsp://127.0.0.1:8554/moodmirror latency=200 ! rtph264depay \
//!         ! h264parse ! avdec_h264 ! videoconvert ! autovideosink
//!
//! The argument is the source part of a pipeline producing raw video. Listens on 127.0.0.1:8554;
//! set MOODMIRROR_RTSP_ADDRESS=0.0.0.0 to serve other machines.

use gst_rtsp_server::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    gst::init()?;
    gstmoodmirror::plugin_register_static()?;
    let source = std::env::args().nth(1).unwrap_or_else(|| {
        format!(
            "filesrc location={}/tests/fixtures/astronaut.jpg ! jpegdec ! videoconvert ! imagefreeze \
             ! video/x-raw,framerate=15/1",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let server = gst_rtsp_server::RTSPServer::new();
    server.set_address(&std::env::var("MOODMIRROR_RTSP_ADDRESS").unwrap_or_else(|_| "127.0.0.1".into()));
    server.set_service("8554");
    let factory = gst_rtsp_server::RTSPMediaFactory::new();
    factory.set_launch(&format!(
        "( {source} ! videoconvert ! moodmirror ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast \
           ! rtph264pay name=pay0 pt=96 )"
    ));
    factory.set_shared(true);
    server.mount_points().ok_or("no mount points")?.add_factory("/moodmirror", factory);
    let _id = server.attach(None)?;
    println!("serving rtsp://{}:8554/moodmirror", server.address().unwrap_or_default());
    glib::MainLoop::new(None, false).run();
    Ok(())
}

use gst::glib;
