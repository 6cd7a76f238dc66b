//! The `moodmirror` element: finds faces, classifies their emotion, attaches metadata, draws.

/**
 * SECTION:element-moodmirror
 *
 * Finds every face in every frame (YuNet, MTCNN, Haar, or the face ROI metas already on the
 * buffer), tracks it with a stable id, classifies it into one of FER2013's seven emotions
 * (angry, disgust, fear, happy, sad, surprise, neutral) with an embedded CNN, and attaches the
 * results as `GstVideoRegionOfInterestMeta` (type `face`, with `detection`, `emotion` and
 * `object_id` params as DL Streamer reads them) and a `MoodMirrorMeta` custom meta; draws a box
 * and a label per face when `draw` is true. Full detections run every `detect-interval` frames,
 * on a worker thread behind live sources; faces are re-found in between.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 v4l2src ! videoconvert ! moodmirror ! videoconvert ! autovideosink
 * ]|
 * Analyses a webcam and shows each face's emotion. `GST_DEBUG=moodmirror:6` logs, per frame,
 * the faces found and how long the frame took.
 */
use gst::glib;
use gst::prelude::*;

mod clock;
mod enums;
mod imp;

pub use enums::{DetectionMode, DetectorKind, DeviceKind, Precision};

glib::wrapper! {
    pub struct MoodMirror(ObjectSubclass<imp::MoodMirror>)
        @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    // Every enum a property uses, so that gst-inspect and the docs list their values.
    DetectorKind::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    DeviceKind::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    Precision::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    DetectionMode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(Some(plugin), "moodmirror", gst::Rank::NONE, MoodMirror::static_type())
}
