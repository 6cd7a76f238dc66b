use std::io::Write;
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::BaseTransformExtManual;
use gst_base::subclass::prelude::*;

use super::mqtt::{self, MqttPublisher, PublisherEvent, PublisherSettings, Queued};
use super::Method;
use crate::state::{lock, not_started};
use crate::{export, meta};

static CAT: LazyLock<gst::DebugCategory> =
    LazyLock::new(|| gst::DebugCategory::new("moodmirrorjson", gst::DebugColorFlags::empty(), Some("moodmirror JSON-lines export")));

const DEFAULT_LOCATION: &str = "-";
const DEFAULT_ADDRESS: &str = "localhost:1883";
const DEFAULT_TOPIC: &str = "moodmirror";
const DEFAULT_QOS: u32 = 1;
const DEFAULT_MAX_CONNECT_ATTEMPTS: u32 = 1;
const DEFAULT_MAX_RECONNECT_INTERVAL: u32 = 30;
const DEFAULT_QUEUE_SIZE: u32 = 1000;
const DEFAULT_QUEUE_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone)]
struct Settings {
    method: Method,
    location: String,
    /// Stamped on every line as `source` (a camera or site name), as gvametaconvert's `source`.
    source: Option<String>,
    /// A JSON object stamped on every line as `tags`, as gvametaconvert's `tags`.
    tags: Option<String>,
    /// Only frames with at least one face are written or published.
    faces_only: bool,
    address: String,
    topic: String,
    client_id: Option<String>,
    qos: u32,
    username: Option<String>,
    password: Option<String>,
    ca_file: Option<String>,
    max_connect_attempts: u32,
    max_reconnect_interval: u32,
    queue_size: u32,
    queue_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            method: Method::File,
            location: DEFAULT_LOCATION.into(),
            source: None,
            tags: None,
            faces_only: false,
            address: DEFAULT_ADDRESS.into(),
            topic: DEFAULT_TOPIC.into(),
            client_id: None,
            qos: DEFAULT_QOS,
            username: None,
            password: None,
            ca_file: None,
            max_connect_attempts: DEFAULT_MAX_CONNECT_ATTEMPTS,
            max_reconnect_interval: DEFAULT_MAX_RECONNECT_INTERVAL,
            queue_size: DEFAULT_QUEUE_SIZE,
            queue_bytes: DEFAULT_QUEUE_BYTES,
        }
    }
}

/// Where the lines go.
enum Output {
    File(Box<dyn Write + Send>),
    Mqtt(MqttPublisher),
}

struct State {
    out: Output,
    faces_only: bool,
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
    /// Messages the MQTT queue had no room for, since the element started.
    dropped: std::sync::atomic::AtomicU64,
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
                glib::ParamSpecEnum::builder_with_default("method", Method::File)
                    .nick("Method")
                    .blurb("Where the JSON goes, as gvametapublish's method: a file (location) or an MQTT broker (address, topic)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("faces-only")
                    .nick("Faces only")
                    .blurb("Write or publish only frames with at least one face (default: every frame)")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("address")
                    .nick("Address")
                    .blurb("method=mqtt: the broker, host[:port], mqtt://host[:port] or mqtts://host[:port] (TLS)")
                    .default_value(Some(DEFAULT_ADDRESS))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("topic")
                    .nick("Topic")
                    .blurb("method=mqtt: the topic of each frame's message; '<topic>/status' carries a retained online/offline message (also the last will)")
                    .default_value(Some(DEFAULT_TOPIC))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("mqtt-client-id")
                    .nick("MQTT client id")
                    .blurb("method=mqtt: the client id (unique per broker); default: moodmirror-<source or element name>-<process id>")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("qos")
                    .nick("QoS")
                    .blurb("method=mqtt: 0 (at most once) or 1 (at least once: every frame's message is kept until the broker acknowledges it, and sent again, in order, after a reconnection)")
                    .maximum(1)
                    .default_value(DEFAULT_QOS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("username").nick("Username").blurb("method=mqtt: user name for the broker").mutable_ready().build(),
                glib::ParamSpecString::builder("password").nick("Password").blurb("method=mqtt: password for the broker (needs username)").mutable_ready().build(),
                glib::ParamSpecString::builder("ca-file")
                    .nick("CA file")
                    .blurb("method=mqtt with mqtts://: PEM certificates to trust (default: the system's)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-connect-attempts")
                    .nick("Max connect attempts")
                    .blurb("method=mqtt: failed attempts to reach the broker before an error on the bus (once connected, it reconnects without end)")
                    .minimum(1)
                    .default_value(DEFAULT_MAX_CONNECT_ATTEMPTS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-reconnect-interval")
                    .nick("Max reconnect interval")
                    .blurb("method=mqtt: the longest wait between attempts, in seconds (waits double from 0.25 s)")
                    .minimum(1)
                    .default_value(DEFAULT_MAX_RECONNECT_INTERVAL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("queue-size")
                    .nick("Queue size")
                    .blurb("method=mqtt: messages kept while the broker is away or slow; what does not fit is dropped, counted (dropped-messages) and reported on the bus")
                    .minimum(1)
                    .default_value(DEFAULT_QUEUE_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("queue-bytes")
                    .nick("Queue bytes")
                    .blurb("method=mqtt: bytes of messages kept while the broker is away or slow (with queue-size, whichever is reached first)")
                    .minimum(1024)
                    .default_value(DEFAULT_QUEUE_BYTES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("dropped-messages")
                    .nick("Dropped messages")
                    .blurb("method=mqtt: messages dropped because the queue was full, since the element started")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let text = || value.get::<Option<String>>().ok().flatten().filter(|s| !s.is_empty());
        let number = || value.get::<u32>().unwrap_or_default();
        let mut settings = lock(&self.settings);
        match pspec.name() {
            "location" => settings.location = text().unwrap_or_else(|| DEFAULT_LOCATION.into()),
            "source" => settings.source = text(),
            "tags" => settings.tags = text(),
            "method" => settings.method = value.get().unwrap_or(Method::File),
            "faces-only" => settings.faces_only = value.get().unwrap_or(false),
            "address" => settings.address = text().unwrap_or_else(|| DEFAULT_ADDRESS.into()),
            "topic" => settings.topic = text().unwrap_or_else(|| DEFAULT_TOPIC.into()),
            "mqtt-client-id" => settings.client_id = text(),
            "qos" => settings.qos = number(),
            "username" => settings.username = text(),
            "password" => settings.password = text(),
            "ca-file" => settings.ca_file = text(),
            "max-connect-attempts" => settings.max_connect_attempts = number(),
            "max-reconnect-interval" => settings.max_reconnect_interval = number(),
            "queue-size" => settings.queue_size = number(),
            "queue-bytes" => settings.queue_bytes = value.get().unwrap_or(DEFAULT_QUEUE_BYTES),
            _ => {}
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = lock(&self.settings);
        match pspec.name() {
            "location" => settings.location.to_value(),
            "source" => settings.source.to_value(),
            "tags" => settings.tags.to_value(),
            "method" => settings.method.to_value(),
            "faces-only" => settings.faces_only.to_value(),
            "address" => settings.address.to_value(),
            "topic" => settings.topic.to_value(),
            "mqtt-client-id" => settings.client_id.to_value(),
            "qos" => settings.qos.to_value(),
            "username" => settings.username.to_value(),
            // Write-only in spirit: reading it back shows whether one is set, not what it is.
            "password" => settings.password.as_ref().map(|_| "********").to_value(),
            "ca-file" => settings.ca_file.to_value(),
            "max-connect-attempts" => settings.max_connect_attempts.to_value(),
            "max-reconnect-interval" => settings.max_reconnect_interval.to_value(),
            "queue-size" => settings.queue_size.to_value(),
            "queue-bytes" => settings.queue_bytes.to_value(),
            "dropped-messages" => self.dropped.load(std::sync::atomic::Ordering::Relaxed).to_value(),
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
                 frame as one JSON object per line (timestamp, resolution, objects) to a file, or \
                 publishes it to an MQTT broker (method=mqtt)",
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
        let out = match settings.method {
            Method::Mqtt => Output::Mqtt(self.start_publisher(&settings)?),
            Method::File if location == "-" => Output::File(Box::new(std::io::stdout())),
            Method::File => {
                let file = std::fs::File::create(&location)
                    .map_err(|e| gst::error_msg!(gst::ResourceError::OpenWrite, ("cannot write JSON lines to '{}': {}", location, e)))?;
                Output::File(Box::new(std::io::BufWriter::new(file)))
            }
        };
        self.dropped.store(0, std::sync::atomic::Ordering::Relaxed);
        *lock(&self.state) = Some(State {
            out,
            faces_only: settings.faces_only,
            width: 0,
            height: 0,
            line: Vec::new(),
            source: settings.source,
            tags,
            failed: false,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let state = lock(&self.state).take();
        let Some(state) = state else { return Ok(()) };
        match state.out {
            // Reported on the bus, not returned: stop() must succeed so the pipeline can reach NULL.
            Output::File(mut out) if !state.failed => {
                if let Err(e) = out.flush() {
                    gst::element_imp_error!(self, gst::ResourceError::Write, ("flushing JSON lines: {}", e));
                }
            }
            Output::File(_) => {}
            Output::Mqtt(publisher) => {
                let totals = publisher.stop(mqtt::DRAIN_TIMEOUT);
                gst::info!(
                    CAT,
                    imp = self,
                    "MQTT: {} messages delivered, {} dropped, {} undelivered",
                    totals.delivered,
                    totals.dropped,
                    totals.undelivered
                );
                if totals.undelivered > 0 {
                    gst::warning!(CAT, imp = self, "{} messages were not delivered (broker unreachable)", totals.undelivered);
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::Write,
                        (
                            "{} messages were not delivered: the MQTT broker was unreachable for the last {} s",
                            totals.undelivered,
                            mqtt::DRAIN_TIMEOUT.as_secs()
                        )
                    );
                }
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
        if state.faces_only && faces.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        let frame = export::frame_json(&info, &faces);
        if let Output::Mqtt(publisher) = &state.out {
            if let Some(reason) = publisher.failed() {
                state.failed = true;
                gst::debug!(CAT, imp = self, "publisher stopped: {reason}");
                return Err(gst::FlowError::Error);
            }
            let payload = serde_json::to_vec(&frame).map_err(|_| gst::FlowError::Error)?;
            if let Queued::Dropped { first, total } = publisher.publish(payload) {
                self.dropped.store(total, std::sync::atomic::Ordering::Relaxed);
                if first {
                    self.post_overflow(total);
                }
            }
            return Ok(gst::FlowSuccess::Ok);
        }
        let Output::File(out) = &mut state.out else { return Err(gst::FlowError::Error) };
        state.line.clear();
        let written = serde_json::to_writer(&mut state.line, &frame).map_err(std::io::Error::other).and_then(|_| {
            state.line.push(b'\n');
            out.write_all(&state.line)?;
            // One complete line per frame, visible to `tail -f` and pipes right away.
            out.flush()
        });
        if let Err(e) = written {
            state.failed = true;
            gst::element_imp_error!(self, gst::ResourceError::Write, ("writing JSON lines: {}", e));
            return Err(gst::FlowError::Error);
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

impl MoodMirrorJson {
    /// The MQTT publisher for `settings` (connecting in the background); a bad setting fails the
    /// start naming it.
    fn start_publisher(&self, settings: &Settings) -> Result<MqttPublisher, gst::ErrorMessage> {
        let bad = |what: String| gst::error_msg!(gst::LibraryError::Settings, ("{}", what));
        let address = settings.address.parse::<mqtt::BrokerAddress>().map_err(bad)?;
        let qos = match settings.qos {
            0 => rumqttc::QoS::AtMostOnce,
            _ => rumqttc::QoS::AtLeastOnce,
        };
        let name = settings.source.clone().unwrap_or_else(|| self.obj().name().to_string());
        let client_id = settings.client_id.clone().unwrap_or_else(|| format!("moodmirror-{name}-{}", std::process::id()));
        let status_source = name.clone();
        let publisher_settings = PublisherSettings {
            address,
            topic: settings.topic.clone(),
            client_id,
            qos,
            username: settings.username.clone(),
            password: settings.password.clone(),
            ca_file: settings.ca_file.clone().map(Into::into),
            max_connect_attempts: settings.max_connect_attempts,
            max_reconnect_interval: std::time::Duration::from_secs(settings.max_reconnect_interval.into()),
            queue_messages: settings.queue_size as usize,
            queue_bytes: usize::try_from(settings.queue_bytes).unwrap_or(usize::MAX),
            status_payload: Box::new(move |online| {
                serde_json::to_vec(&serde_json::json!({ "source": status_source, "online": online })).unwrap_or_default()
            }),
        };
        let element = self.obj().downgrade();
        let events = Box::new(move |event: PublisherEvent| {
            let Some(element) = element.upgrade() else { return };
            match event {
                PublisherEvent::Connected { after_attempts } => {
                    gst::info!(CAT, obj = element, "connected to the MQTT broker (attempt {after_attempts})")
                }
                PublisherEvent::Disconnected { reason, retry_in } => {
                    gst::warning!(CAT, obj = element, "MQTT: {reason}; next attempt in {:.2} s", retry_in.as_secs_f64())
                }
                PublisherEvent::GaveUp { reason } => gst::element_error!(element, gst::ResourceError::OpenWrite, ("{}", reason)),
            }
        });
        MqttPublisher::start(publisher_settings, events).map_err(bad)
    }

    /// The queue overflowed for the first time: logged once and said on the bus (an element
    /// message `moodmirror-mqtt-overflow` with the count); `dropped-messages` keeps counting.
    fn post_overflow(&self, total: u64) {
        gst::warning!(CAT, imp = self, "MQTT queue full: messages are being dropped (see dropped-messages)");
        let structure = gst::Structure::builder("moodmirror-mqtt-overflow").field("dropped", total).build();
        let _ = self.obj().post_message(gst::message::Element::builder(structure).src(&*self.obj()).build());
    }
}
