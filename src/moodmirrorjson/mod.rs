//! The `moodmirrorjson` element: passes video through and writes each frame's moodmirror
//! results as one JSON line (see [`crate::export`]) to a file or standard output.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct MoodMirrorJson(ObjectSubclass<imp::MoodMirrorJson>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "moodmirrorjson", gst::Rank::NONE, MoodMirrorJson::static_type())
}
