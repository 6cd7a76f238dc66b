//! The `moodmirror` element: finds faces, classifies their emotion, attaches metadata, draws.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct MoodMirror(ObjectSubclass<imp::MoodMirror>)
        @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    crate::detect::DetectorKind::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    crate::emotion::DeviceKind::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(Some(plugin), "moodmirror", gst::Rank::NONE, MoodMirror::static_type())
}
