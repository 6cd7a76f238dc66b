use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;

use moodmirror::analysis::{FaceAnalyzer, VideoParams};
use moodmirror::detect::{DetectParams, Detector};
use moodmirror::draw::{Canvas, Painter};
use moodmirror::emotion::{select_device, EmotionClassifier};
use moodmirror::face::FaceResult;
use moodmirror::image::{luma, FramePlanes, PixelLayout};

use super::clock::{frame_ns, TrackClock};
use super::{DetectionMode, DetectorKind, DeviceKind, Precision};
use crate::state::{lock, not_started};
use crate::{frame, meta};

static CAT: LazyLock<gst::DebugCategory> =
    LazyLock::new(|| gst::DebugCategory::new("moodmirror", gst::DebugColorFlags::empty(), Some("Facial emotion estimation")));

const DEFAULT_DRAW: bool = true;
const DEFAULT_DETECTOR: DetectorKind = DetectorKind::Yunet;
const DEFAULT_MIN_FACE_SIZE: u32 = 40;
const DEFAULT_MAX_FACES: u32 = 16;
const DEFAULT_SCALE_FACTOR: f64 = 1.1;
const DEFAULT_MIN_NEIGHBORS: u32 = 3;
const DEFAULT_MODEL_LOCATION: &str = "";
const DEFAULT_DEVICE: DeviceKind = DeviceKind::Auto;
const DEFAULT_PRECISION: Precision = Precision::Auto;
const DEFAULT_LOGIT_BIAS: bool = true;
const DEFAULT_POST_MESSAGES: bool = false;
const DEFAULT_DETECT_INTERVAL: u32 = 10;
const DEFAULT_DETECTION_MODE: DetectionMode = DetectionMode::Auto;
/// Five times a second at 30 fps: with every tracked face now found and classified (not only
/// the third that tracking used to re-find), 5 cost the crowded clip of 12 real faces 10 % of
/// its frame rate for a label shown 1 frame sooner (README, "Accuracy on video").
const DEFAULT_CLASSIFY_INTERVAL: u32 = 6;
const DEFAULT_SMOOTHING: f64 = 0.6;
const DEFAULT_TRACK_TIMEOUT_MS: u32 = 500;

#[derive(Debug, Clone)]
struct Settings {
    draw: bool,
    detector: DetectorKind,
    min_face_size: u32,
    max_faces: u32,
    scale_factor: f64,
    min_neighbors: u32,
    model_location: String,
    device: DeviceKind,
    precision: Precision,
    logit_bias: bool,
    post_messages: bool,
    detect_interval: u32,
    classify_interval: u32,
    smoothing: f64,
    track_timeout_ms: u32,
    detection_mode: DetectionMode,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            draw: DEFAULT_DRAW,
            detector: DEFAULT_DETECTOR,
            min_face_size: DEFAULT_MIN_FACE_SIZE,
            max_faces: DEFAULT_MAX_FACES,
            scale_factor: DEFAULT_SCALE_FACTOR,
            min_neighbors: DEFAULT_MIN_NEIGHBORS,
            model_location: DEFAULT_MODEL_LOCATION.into(),
            device: DEFAULT_DEVICE,
            precision: DEFAULT_PRECISION,
            logit_bias: DEFAULT_LOGIT_BIAS,
            post_messages: DEFAULT_POST_MESSAGES,
            detect_interval: DEFAULT_DETECT_INTERVAL,
            detection_mode: DEFAULT_DETECTION_MODE,
            classify_interval: DEFAULT_CLASSIFY_INTERVAL,
            smoothing: DEFAULT_SMOOTHING,
            track_timeout_ms: DEFAULT_TRACK_TIMEOUT_MS,
        }
    }
}

/// What one frame needs from the settings: copied once per frame, no allocation.
#[derive(Debug, Clone, Copy)]
struct FrameSettings {
    draw: bool,
    detector: DetectorKind,
    params: DetectParams,
    video: VideoParams,
    post_messages: bool,
    detection_mode: DetectionMode,
}

impl Settings {
    fn frame_settings(&self) -> FrameSettings {
        FrameSettings {
            draw: self.draw,
            detector: self.detector,
            params: DetectParams {
                min_size: self.min_face_size as usize,
                max_size: None,
                scale_factor: self.scale_factor,
                min_neighbors: self.min_neighbors as usize,
                max_faces: self.max_faces as usize,
            },
            video: VideoParams {
                detect_interval: self.detect_interval,
                classify_interval: self.classify_interval,
                tracker: moodmirror::tracking::TrackerParams {
                    smoothing: self.smoothing as f32,
                    max_age_ns: self.track_timeout_ms as u64 * 1_000_000,
                    ..Default::default()
                },
            },
            post_messages: self.post_messages,
            detection_mode: self.detection_mode,
        }
    }
}

/// Negotiated format.
struct Format {
    info: gst_video::VideoInfo,
    layout: PixelLayout,
    luma_range: (u8, u8),
}

/// Created in `start`, dropped in `stop`.
struct State {
    device: moodmirror::Device,
    analyzer: FaceAnalyzer,
    painter: Painter,
    format: Option<Format>,
    gray: Vec<u8>,
    results: Vec<FaceResult>,
    /// Frames seen since start (the detect/classify intervals count them).
    frame: u64,
    /// Set by a QoS event saying we are late: the next frame skips full detection.
    late: bool,
    /// Run the full detector on the next frame whatever the interval (after a discontinuity).
    detect_next: bool,
    /// The time tracks age by.
    clock: TrackClock,
    /// Whether upstream is live (asked once, on the first frame): `detection-mode=auto`.
    live: Option<bool>,
    /// `detector=upstream`: the frame's face ROI metas, their boxes, and those skipped.
    upstream: Vec<meta::UpstreamFace>,
    given: Vec<moodmirror::detect::Face>,
    skipped: Vec<(u32, u32, u32, u32)>,
}

impl State {
    /// A discontinuity (a flushing seek, a new stream, a new frame size): no face of before is
    /// shown again, and the next frame gets a full detection.
    fn forget_faces(&mut self) {
        self.analyzer.forget_faces();
        self.results.clear();
        self.detect_next = true;
        self.late = false;
    }
}

#[derive(Default)]
pub struct MoodMirror {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

#[glib::object_subclass]
impl ObjectSubclass for MoodMirror {
    const NAME: &'static str = "GstMoodMirror";
    type Type = super::MoodMirror;
    type ParentType = gst_video::VideoFilter;
}

impl ObjectImpl for MoodMirror {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecBoolean::builder("draw")
                    .nick("Draw")
                    .blurb("Draw a box and an emotion label on each face (false: metadata only, pixels untouched)")
                    .default_value(DEFAULT_DRAW)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("detector", DEFAULT_DETECTOR)
                    .nick("Detector")
                    .blurb("Face detector: yunet (one-pass CNN with landmarks, eye-aligned crops; cost independent of the number of faces), mtcnn (CNN cascade with landmarks), haar (Viola-Jones cascade), or upstream (classify the face ROI metas already on the buffer)")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("min-face-size")
                    .nick("Minimum face size")
                    .blurb("Smallest face side to look for, in pixels")
                    .minimum(12)
                    .maximum(4096)
                    .default_value(DEFAULT_MIN_FACE_SIZE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-faces")
                    .nick("Maximum faces")
                    .blurb("At most this many faces per frame (the most confident ones)")
                    .minimum(1)
                    .maximum(256)
                    .default_value(DEFAULT_MAX_FACES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("scale-factor")
                    .nick("Scale factor")
                    .blurb("Step between the detector's image-pyramid scales (smaller: slower, finds more sizes)")
                    .minimum(1.01)
                    .maximum(2.0)
                    .default_value(DEFAULT_SCALE_FACTOR)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("min-neighbors")
                    .nick("Minimum neighbours")
                    .blurb("Haar: overlapping raw detections needed to keep a face (higher: fewer false faces)")
                    .minimum(0)
                    .maximum(100)
                    .default_value(DEFAULT_MIN_NEIGHBORS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("model-location")
                    .nick("Model location")
                    .blurb("Emotion model weights (.safetensors from `moodmirror train`); empty: the embedded default")
                    .default_value(Some(DEFAULT_MODEL_LOCATION))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("device", DEFAULT_DEVICE)
                    .nick("Device")
                    .blurb("Where the neural networks run")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("precision", DEFAULT_PRECISION)
                    .nick("Precision")
                    .blurb("Arithmetic of the emotion CNN on the CPU: auto is int8 on x86-64 CPUs with AVX2 (AVX-512 VNNI, AVX-VNNI or AVX2 kernels, 3.5-10x faster, accuracy within 0.2 points of f32; MOODMIRROR_INT8_KERNEL=avx512-vnni|avx-vnni|avx2 forces one), else f32")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("logit-bias")
                    .nick("Logit bias")
                    .blurb("Apply the model's logit bias (metadata written by moodmirror train, its share set by moodmirror calibrate): it undoes the class weighting of training, wholly (labels follow how often each emotion occurs: best plain accuracy) or in part (the embedded default: 0.4 of it, for balanced accuracy); false gives the raw network, which favours rare emotions such as disgust")
                    .default_value(DEFAULT_LOGIT_BIAS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("detect-interval")
                    .nick("Detection interval")
                    .blurb("Run the full face detector every N frames; in between, faces are followed by searching near their last position")
                    .minimum(1)
                    .maximum(1000)
                    .default_value(DEFAULT_DETECT_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("detection-mode", DEFAULT_DETECTION_MODE)
                    .nick("Detection mode")
                    .blurb("Where full detections run: auto = on a worker thread when the pipeline is live (no frame waits for a detection; faces reach the tracker a few frames later), on the streaming thread otherwise (reproducible file processing); sync; async")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("classify-interval")
                    .nick("Classification interval")
                    .blurb("Reclassify each tracked face every N frames; reuse its last result in between")
                    .minimum(1)
                    .maximum(1000)
                    .default_value(DEFAULT_CLASSIFY_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("smoothing")
                    .nick("Smoothing")
                    .blurb("Weight of the past in each face's running average of emotion probabilities (0 = off)")
                    .minimum(0.0)
                    .maximum(0.99)
                    .default_value(DEFAULT_SMOOTHING)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("track-timeout")
                    .nick("Track timeout")
                    .blurb("Forget a face (and its track id) after it has not been seen for this many milliseconds")
                    .minimum(0)
                    .maximum(600_000)
                    .default_value(DEFAULT_TRACK_TIMEOUT_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("post-messages")
                    .nick("Post messages")
                    .blurb("Post a `moodmirror` element message with the faces of every frame on the bus")
                    .default_value(DEFAULT_POST_MESSAGES)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = lock(&self.settings);
        // Types are checked by GObject against the ParamSpecs above before we get here.
        match pspec.name() {
            "draw" => settings.draw = value.get().unwrap_or(DEFAULT_DRAW),
            "detector" => settings.detector = value.get().unwrap_or(DEFAULT_DETECTOR),
            "min-face-size" => settings.min_face_size = value.get().unwrap_or(DEFAULT_MIN_FACE_SIZE),
            "max-faces" => settings.max_faces = value.get().unwrap_or(DEFAULT_MAX_FACES),
            "scale-factor" => settings.scale_factor = value.get().unwrap_or(DEFAULT_SCALE_FACTOR),
            "min-neighbors" => settings.min_neighbors = value.get().unwrap_or(DEFAULT_MIN_NEIGHBORS),
            "model-location" => settings.model_location = value.get::<Option<String>>().ok().flatten().unwrap_or_default(),
            "device" => settings.device = value.get().unwrap_or(DEFAULT_DEVICE),
            "precision" => settings.precision = value.get().unwrap_or(DEFAULT_PRECISION),
            "logit-bias" => settings.logit_bias = value.get().unwrap_or(DEFAULT_LOGIT_BIAS),
            "post-messages" => settings.post_messages = value.get().unwrap_or(DEFAULT_POST_MESSAGES),
            "detect-interval" => settings.detect_interval = value.get().unwrap_or(DEFAULT_DETECT_INTERVAL),
            "detection-mode" => settings.detection_mode = value.get().unwrap_or(DEFAULT_DETECTION_MODE),
            "classify-interval" => settings.classify_interval = value.get().unwrap_or(DEFAULT_CLASSIFY_INTERVAL),
            "smoothing" => settings.smoothing = value.get().unwrap_or(DEFAULT_SMOOTHING),
            "track-timeout" => settings.track_timeout_ms = value.get().unwrap_or(DEFAULT_TRACK_TIMEOUT_MS),
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
        gst::debug!(CAT, imp = self, "set {} = {:?}", pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = lock(&self.settings);
        match pspec.name() {
            "draw" => settings.draw.to_value(),
            "detector" => settings.detector.to_value(),
            "min-face-size" => settings.min_face_size.to_value(),
            "max-faces" => settings.max_faces.to_value(),
            "scale-factor" => settings.scale_factor.to_value(),
            "min-neighbors" => settings.min_neighbors.to_value(),
            "model-location" => settings.model_location.to_value(),
            "device" => settings.device.to_value(),
            "precision" => settings.precision.to_value(),
            "logit-bias" => settings.logit_bias.to_value(),
            "post-messages" => settings.post_messages.to_value(),
            "detect-interval" => settings.detect_interval.to_value(),
            "detection-mode" => settings.detection_mode.to_value(),
            "classify-interval" => settings.classify_interval.to_value(),
            "smoothing" => settings.smoothing.to_value(),
            "track-timeout" => settings.track_timeout_ms.to_value(),
            _ => pspec.default_value().clone(),
        }
    }
}

impl GstObjectImpl for MoodMirror {}

impl ElementImpl for MoodMirror {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Facial emotion estimation",
                "Filter/Analyzer/Video",
                "Finds faces, classifies each into one of seven emotions (FER2013) with a CNN, \
                 attaches ROI and MoodMirrorMeta metadata and optionally draws them",
                "The moodmirror developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new().format_list(frame::FORMATS).build();
            let src = gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, &caps);
            let sink = gst::PadTemplate::new("sink", gst::PadDirection::Sink, gst::PadPresence::Always, &caps);
            match (src, sink) {
                (Ok(src), Ok(sink)) => vec![src, sink],
                _ => Vec::new(),
            }
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for MoodMirror {
    const MODE: gst_base::subclass::BaseTransformMode = gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let (device, warning) =
            select_device(settings.device.into()).map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{}", e)))?;
        if let Some(warning) = warning {
            gst::warning!(CAT, imp = self, "{warning}");
            gst::element_imp_warning!(self, gst::LibraryError::Settings, ("{}", warning));
        }
        let mut classifier = EmotionClassifier::load(&settings.model_location, &device)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("model-location: {}", e)))?;
        classifier
            .set_precision(settings.precision.into())
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("precision: {}", e)))?;
        classifier.set_logit_bias_enabled(settings.logit_bias);
        let detector = Detector::new(settings.detector.into(), &device)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("face detector: {}", e)))?;
        let painter = Painter::new().map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("{}", e)))?;
        gst::info!(
            CAT,
            imp = self,
            "started: emotion model {} (arch {}, {}), detector {:?}, device {:?}",
            if settings.model_location.is_empty() { "<embedded>" } else { &settings.model_location },
            classifier.arch.name(),
            classifier.arithmetic(),
            settings.detector,
            device
        );
        let device = device.clone();
        *lock(&self.state) = Some(State {
            device,
            analyzer: FaceAnalyzer::new(detector, classifier),
            painter,
            format: None,
            gray: Vec::new(),
            results: Vec::new(),
            frame: 0,
            late: false,
            detect_next: true,
            clock: TrackClock::default(),
            live: None,
            upstream: Vec::new(),
            given: Vec::new(),
            skipped: Vec::new(),
        });
        Ok(())
    }

    fn src_event(&self, event: gst::Event) -> bool {
        // Behind a live source that falls behind, skip the next full detection (tracks are
        // still followed locally) rather than add latency.
        if let gst::EventView::Qos(qos) = event.view() {
            let (_, _, diff, _) = qos.get();
            if diff > 0 {
                if let Some(state) = lock(&self.state).as_mut() {
                    state.late = true;
                }
            }
        }
        self.parent_src_event(event)
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        // A flushing seek or a new stream: the faces of before are gone (and after a seek back
        // the running time starts again below their last sightings, so they would never age).
        if matches!(event.view(), gst::EventView::FlushStop(_) | gst::EventView::StreamStart(_)) {
            if let Some(state) = lock(&self.state).as_mut() {
                gst::debug!(CAT, imp = self, "{:?}: tracks ended", event.type_());
                state.forget_faces();
                state.clock.reset();
            }
        }
        self.parent_sink_event(event)
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *lock(&self.state) = None;
        gst::info!(CAT, imp = self, "stopped");
        Ok(())
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let started = std::time::Instant::now();
        let settings = lock(&self.settings).frame_settings();
        let mut state_guard = lock(&self.state);
        let Some(state) = state_guard.as_mut() else {
            return Err(not_started(self));
        };
        let Some(format) = state.format.as_ref() else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("no caps negotiated before the first buffer"));
            return Err(gst::FlowError::NotNegotiated);
        };
        let live = *state.live.get_or_insert_with(|| self.upstream_is_live());
        let in_background = match settings.detection_mode {
            DetectionMode::Auto => live,
            DetectionMode::Sync => false,
            DetectionMode::Async => true,
        };
        let upstream = settings.detector == DetectorKind::Upstream;
        let configured = state.analyzer.configure(settings.detector.into(), in_background, &state.device);
        if configured.worker_started {
            gst::debug!(CAT, imp = self, "full detections run on a worker thread (live: {live})");
        }
        for problem in &configured.problems {
            gst::warning!(CAT, imp = self, "{problem}");
        }
        let (width, height, layout, luma_range) = (format.info.width(), format.info.height(), format.layout, format.luma_range);
        // The frame is mapped once: writable when the faces may be drawn on it, read-only
        // otherwise (no copy of shared memory for a frame that is only looked at).
        if settings.draw {
            let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(&mut *buf, &format.info).map_err(|_| {
                gst::element_imp_error!(self, gst::CoreError::Failed, ("cannot map the buffer for drawing"));
                gst::FlowError::Error
            })?;
            self.analyse(state, &settings, &frame, layout, luma_range, upstream)?;
            if !state.results.is_empty() {
                let strides = frame.plane_stride();
                let strides =
                    [strides[0] as usize, strides.get(1).copied().unwrap_or(0) as usize, strides.get(2).copied().unwrap_or(0) as usize];
                let [p0, p1, p2, _] = frame.planes_data_mut();
                let mut canvas = Canvas {
                    planes: [p0, p1, p2],
                    strides,
                    width: width as usize,
                    height: height as usize,
                    layout,
                    video_range: luma_range != (0, 255),
                };
                state.painter.draw(&mut canvas, &state.results);
            }
        } else {
            let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(&*buf, &format.info).map_err(|_| {
                gst::element_imp_error!(self, gst::CoreError::Failed, ("cannot map the input buffer"));
                gst::FlowError::Error
            })?;
            self.analyse(state, &settings, &frame, layout, luma_range, upstream)?;
        }
        if upstream {
            meta::attach_to_upstream(buf, &state.results, width, height, &state.analyzer.classifier.name);
        } else {
            meta::attach(buf, &state.results, width, height, &state.analyzer.classifier.name);
        }
        if CAT.threshold() >= gst::DebugLevel::Log {
            let faces: Vec<String> = state
                .results
                .iter()
                .map(|r| {
                    format!(
                        "#{} {}x{}+{}+{} {} {:.2}{}",
                        r.track_id.map_or(-1, |i| i as i64),
                        r.face.width,
                        r.face.height,
                        r.face.x,
                        r.face.y,
                        r.label(),
                        r.confidence,
                        if r.carried { " (carried)" } else { "" }
                    )
                })
                .collect();
            gst::log!(
                CAT,
                imp = self,
                "frame {}: {} faces in {:.2} ms: {}",
                state.frame - 1,
                faces.len(),
                started.elapsed().as_secs_f64() * 1e3,
                faces.join(", ")
            );
        }
        let results_for_message = settings.post_messages.then(|| meta::faces_list(&state.results));
        drop(state_guard);
        if let Some(faces) = results_for_message {
            self.post_faces_message(buf, faces);
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

impl MoodMirror {
    /// Finds, tracks and classifies the faces of one mapped frame into `state.results` (with
    /// `upstream`, classifies the face ROI metas the buffer carries).
    fn analyse(
        &self,
        state: &mut State,
        settings: &FrameSettings,
        frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
        layout: PixelLayout,
        luma_range: (u8, u8),
        upstream: bool,
    ) -> Result<(), gst::FlowError> {
        let (width, height) = (frame.width(), frame.height());
        let n_planes = frame.n_planes() as usize;
        let plane = |i: usize| if i < n_planes { frame.plane_data(i as u32).unwrap_or(&[]) } else { &[] };
        let stride = |i: usize| frame.plane_stride().get(i).copied().unwrap_or(0).max(0) as usize;
        let planes = FramePlanes {
            planes: [plane(0), plane(1), plane(2)],
            strides: [stride(0), stride(1), stride(2)],
            width: width as usize,
            height: height as usize,
            layout,
            video_range: luma_range != (0, 255),
        };
        let now = self.track_time_ns(state, frame.buffer());
        let gray = luma(planes.planes[0], planes.strides[0], width as usize, height as usize, layout, &mut state.gray);
        // Full detection every `detect-interval` frames, unless QoS says we are late.
        let interval = settings.video.detect_interval.max(1) as u64;
        let forced = std::mem::take(&mut state.detect_next);
        let due = forced || state.frame.is_multiple_of(interval);
        let full = due && !std::mem::take(&mut state.late);
        let frame_index = state.frame;
        state.frame += 1;
        let analysed = if upstream {
            meta::upstream_faces(frame.buffer(), width, height, &mut state.upstream, &mut state.skipped);
            for rect in &state.skipped {
                gst::debug!(CAT, imp = self, "upstream face ROI {rect:?} is empty or outside the {width}x{height} frame: skipped");
            }
            state.given.clear();
            state.given.extend(state.upstream.iter().map(|u| u.face));
            state.analyzer.analyze_given_faces(&gray, &state.given, &settings.params, &settings.video, frame_index, now, luma_range)
        } else {
            state.analyzer.analyze_frame(&gray, Some(&planes), &settings.params, &settings.video, frame_index, now, full, luma_range)
        };
        match analysed {
            Ok(results) => {
                state.results.clear();
                state.results.extend_from_slice(results);
                // Track ids the upstream element gave (an `object_id` param) are kept.
                for r in &mut state.results {
                    if let Some(u) = state
                        .upstream
                        .iter()
                        .find(|u| u.track_id.is_some() && u.face.clipped_to(width as i32, height as i32) == Some(r.face))
                    {
                        r.track_id = u.track_id;
                    }
                }
            }
            Err(e) => {
                gst::element_imp_error!(self, gst::LibraryError::Failed, ("emotion model failed: {}", e));
                return Err(gst::FlowError::Error);
            }
        }
        Ok(())
    }

    /// Whether the source upstream is live (a latency query; not live when nobody answers).
    fn upstream_is_live(&self) -> bool {
        let mut query = gst::query::Latency::new();
        let live = self.obj().sink_pads().first().is_some_and(|pad| pad.peer_query(&mut query)) && query.result().0;
        gst::debug!(CAT, imp = self, "upstream live: {live}");
        live
    }

    /// The buffer's (running time, stream time) in the current segment.
    fn buffer_times(&self, buf: &gst::BufferRef) -> (Option<gst::ClockTime>, Option<gst::ClockTime>) {
        let pts = buf.pts();
        let segment = self.obj().segment();
        let segment = segment.downcast_ref::<gst::ClockTime>();
        (segment.and_then(|s| s.to_running_time(pts)), segment.and_then(|s| s.to_stream_time(pts)))
    }

    /// The time (ns) tracks age by ([`TrackClock`]); a clock that ran back ends the tracks.
    fn track_time_ns(&self, state: &mut State, buf: &gst::BufferRef) -> u64 {
        let time = self.buffer_times(buf).0.or(buf.pts()).map(|t| t.nseconds());
        let frame_ns = state.format.as_ref().and_then(|f| frame_ns(f.info.fps()));
        let tick = state.clock.tick(time, buf.duration().map(|d| d.nseconds()), frame_ns);
        if tick.ran_back {
            gst::debug!(CAT, imp = self, "time ran back to {} ns: tracks ended", tick.now_ns);
            state.forget_faces();
        }
        tick.now_ns
    }

    /// A `moodmirror` element message like `facedetect`'s: times of the frame and its faces.
    fn post_faces_message(&self, buf: &gst::BufferRef, faces: gst::List) {
        let obj = self.obj();
        let pts = buf.pts();
        let (running_time, stream_time) = self.buffer_times(buf);
        let s = gst::Structure::builder("moodmirror")
            .field("timestamp", pts.map(|t| t.nseconds()).unwrap_or(u64::MAX))
            .field("stream-time", stream_time.map(|t| t.nseconds()).unwrap_or(u64::MAX))
            .field("running-time", running_time.map(|t| t.nseconds()).unwrap_or(u64::MAX))
            .field("duration", buf.duration().map(|t| t.nseconds()).unwrap_or(u64::MAX))
            .field("faces", faces)
            .build();
        let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
    }
}

impl VideoFilterImpl for MoodMirror {
    fn set_info(
        &self,
        incaps: &gst::Caps,
        in_info: &gst_video::VideoInfo,
        _outcaps: &gst::Caps,
        _out_info: &gst_video::VideoInfo,
    ) -> Result<(), gst::LoggableError> {
        let Some(layout) = frame::layout_of(in_info) else {
            return Err(gst::loggable_error!(CAT, "unsupported caps {}", incaps));
        };
        gst::debug!(CAT, imp = self, "caps {incaps}");
        let format = Format { info: in_info.clone(), layout, luma_range: frame::luma_range(in_info, layout) };
        match lock(&self.state).as_mut() {
            Some(state) => {
                // Boxes of the old resolution mean nothing in the new one.
                if state.format.as_ref().is_some_and(|f| f.info.width() != format.info.width() || f.info.height() != format.info.height()) {
                    state.forget_faces();
                }
                state.format = Some(format);
                Ok(())
            }
            None => Err(gst::loggable_error!(CAT, "caps set before start")),
        }
    }
}
