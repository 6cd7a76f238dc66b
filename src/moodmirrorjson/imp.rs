use std::io::Write;
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::BaseTransformExtManual;
use gst_base::subclass::prelude::*;

use crate::state::{lock, not_started};
use crate::{export, meta};

static CAT: LazyLock<gst::DebugCategory> =
    LazyLock::new(|| gst::DebugCategory::new("moodmirrorjson", gst::DebugColorFlags::empty(), Some("moodmirror JSON-lines export")));

const DEFAULT_LOCATION: &str = "-";

#[derive(Debug, Clone)]
struct Settings {
    location: String,
    /// Stamped on every line as `source` (a camera or site name), as gvametaconvert's `source`.
    source: Option<String>,
    /// A JSON object stamped on every line as `tags`, as gvametaconvert's `tags`.
    tags: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self { location: DEFAULT_LOCATION.into(), source: None, tags: None }
    }
}

struct State {
    out: Box<dyn Write + Send>,
    width: u32,
    height: u32,
    line: Vec<u8>,
    source: Option<String>,
    tags: Option<serde_json::Value>,
    /// A write failed and was reported: nothing more is written, and stopping does not fail
    /// again on the flush (a failing stop() would keep the pipeline from reaching NULL).
    failed: bool,
}

#[derive(Default)]
pub struct MoodMirrorJson {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

#[glib::object_subclass]
impl ObjectSubclass for MoodMirrorJson {
    const NAME: &'static str = "GstMoodMirrorJson";
    type Type = super::MoodMirrorJson;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for MoodMirrorJson {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("location")
                    .nick("Location")
                    .blurb("File to write JSON lines to ('-' = standard output); replaced when the element starts")
                    .default_value(Some(DEFAULT_LOCATION))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("source")
                    .nick("Source")
                    .blurb("Written on every line as \"source\" (e.g. a camera name), as gvametaconvert's source; none by default")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("tags")
                    .nick("Tags")
                    .blurb("A JSON object written on every line as \"tags\", as gvametaconvert's tags, e.g. {\"site\":\"lab\"}; checked when the element starts")
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let text = value.get::<Option<String>>().ok().flatten().filter(|s| !s.is_empty());
        let mut settings = lock(&self.settings);
        match pspec.name() {
            "location" => settings.location = text.unwrap_or_else(|| DEFAULT_LOCATION.into()),
            "source" => settings.source = text,
            "tags" => settings.tags = text,
            _ => {}
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "location" => lock(&self.settings).location.to_value(),
            "source" => lock(&self.settings).source.to_value(),
            "tags" => lock(&self.settings).tags.to_value(),
            _ => pspec.default_value().clone(),
        }
    }
}

impl GstObjectImpl for MoodMirrorJson {}

impl ElementImpl for MoodMirrorJson {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "moodmirror JSON-lines export",
                "Filter/Analyzer/Video",
                "Passes video through and writes the faces and emotions moodmirror attached to each \
                 frame as one JSON object per line (timestamp, resolution, objects)",
                "The moodmirror developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::builder("video/x-raw").build();
            [gst::PadDirection::Src, gst::PadDirection::Sink]
                .into_iter()
                .filter_map(|dir| {
                    let name = if dir == gst::PadDirection::Src { "src" } else { "sink" };
                    gst::PadTemplate::new(name, dir, gst::PadPresence::Always, &caps).ok()
                })
                .collect()
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for MoodMirrorJson {
    const MODE: gst_base::subclass::BaseTransformMode = gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = true;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = true;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let location = settings.location.clone();
        // A bad tags value fails the start with a message naming it, before any file is made.
        let tags = match &settings.tags {
            None => None,
            Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(v) if v.is_object() => Some(v),
                Ok(_) => return Err(gst::error_msg!(gst::LibraryError::Settings, ("tags must be a JSON object, got '{}'", text))),
                Err(e) => return Err(gst::error_msg!(gst::LibraryError::Settings, ("tags '{}' is not JSON: {}", text, e))),
            },
        };
        let out: Box<dyn Write + Send> = if location == "-" {
            Box::new(std::io::stdout())
        } else {
            let file = std::fs::File::create(&location)
                .map_err(|e| gst::error_msg!(gst::ResourceError::OpenWrite, ("cannot write JSON lines to '{}': {}", location, e)))?;
            Box::new(std::io::BufWriter::new(file))
        };
        *lock(&self.state) = Some(State { out, width: 0, height: 0, line: Vec::new(), source: settings.source, tags, failed: false });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let state = lock(&self.state).take();
        if let Some(mut state) = state.filter(|s| !s.failed) {
            // Reported on the bus, not returned: stop() must succeed so the pipeline can reach NULL.
            if let Err(e) = state.out.flush() {
                gst::element_imp_error!(self, gst::ResourceError::Write, ("flushing JSON lines: {}", e));
            }
        }
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let s = incaps.structure(0).ok_or_else(|| gst::loggable_error!(CAT, "empty caps"))?;
        let width = s.get::<i32>("width").unwrap_or(0).max(0) as u32;
        let height = s.get::<i32>("height").unwrap_or(0).max(0) as u32;
        if let Some(state) = lock(&self.state).as_mut() {
            state.width = width;
            state.height = height;
        }
        Ok(())
    }

    fn transform_ip_passthrough(&self, buf: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let faces = meta::faces(buf).unwrap_or_default();
        let mut guard = lock(&self.state);
        let Some(state) = guard.as_mut() else {
            return Err(not_started(self));
        };
        if state.failed {
            return Err(gst::FlowError::Error);
        }
        // Stream time, as gvametaconvert writes it: the PTS through the current segment.
        let stream_time = buf.pts().and_then(|pts| {
            let segment = self.obj().segment();
            segment.downcast_ref::<gst::ClockTime>().and_then(|s| s.to_stream_time(pts))
        });
        let info = export::FrameInfo {
            timestamp: stream_time,
            pts: buf.pts(),
            width: state.width,
            height: state.height,
            source: state.source.as_deref(),
            tags: state.tags.as_ref(),
        };
        let frame = export::frame_json(&info, &faces);
        state.line.clear();
        let written = serde_json::to_writer(&mut state.line, &frame).map_err(std::io::Error::other).and_then(|_| {
            state.line.push(b'\n');
            state.out.write_all(&state.line)?;
            // One complete line per frame, visible to `tail -f` and pipes right away.
            state.out.flush()
        });
        if let Err(e) = written {
            state.failed = true;
            gst::element_imp_error!(self, gst::ResourceError::Write, ("writing JSON lines: {}", e));
            return Err(gst::FlowError::Error);
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
