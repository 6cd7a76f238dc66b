//! The `moodmirrorjson` element: passes video through and writes each frame's moodmirror
//! results as one JSON line (see [`crate::export`]) to a file or standard output, or publishes
//! it to an MQTT broker (`method=mqtt`, [`mqtt`]).

use gst::glib;
use gst::prelude::*;

mod imp;
pub mod mqtt;

/// The `method` property, as gvametapublish's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstMoodMirrorJsonMethod")]
pub enum Method {
    #[enum_value(name = "File: JSON lines to location ('-' = standard output)", nick = "file")]
    File = 0,
    #[enum_value(name = "MQTT: one message per frame to topic at address", nick = "mqtt")]
    Mqtt = 1,
}

glib::wrapper! {
    pub struct MoodMirrorJson(ObjectSubclass<imp::MoodMirrorJson>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    Method::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(Some(plugin), "moodmirrorjson", gst::Rank::NONE, MoodMirrorJson::static_type())
}
