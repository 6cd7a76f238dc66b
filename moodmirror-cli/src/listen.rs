//! `moodmirror listen`: subscribes to the topics `moodmirrorjson method=mqtt` publishes to and
//! keeps a live summary of every camera and its tracks (the `report` outputs per camera, and
//! fleet.csv), refreshed as messages arrive; optionally archives every frame as JSON lines.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gstmoodmirror::mqtt::{tls_config, BrokerAddress};
use moodmirror::emotion::{CLASS_NAMES, NUM_CLASSES};
use moodmirror_train::report::{self, RecordingBuilder};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, RecvTimeoutError};

use crate::outputs;

#[derive(clap::Args)]
pub struct ListenArgs {
    /// The broker and the topics: mqtt://HOST[:PORT]/FILTER, e.g. 'mqtt://localhost/moodmirror/#'
    /// (quote the #); mqtts:// for TLS. Without a filter: moodmirror/#.
    pub url: String,
    /// Folder of the live summary: fleet.csv, and per camera the `report` outputs (summary.csv,
    /// shares.png, overview.png, a timeline per track), refreshed every --refresh seconds.
    #[arg(long)]
    pub out: PathBuf,
    /// Also archive every frame received as JSON lines (each with its "topic").
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    /// Seconds between refreshes of the summary (only cameras with new frames are redrawn).
    #[arg(long, default_value_t = 5.0)]
    pub refresh: f64,
    /// The summary covers each camera's last this many seconds (older frames are forgotten, so
    /// memory stays bounded however long `listen` runs); the counts in fleet.csv cover all.
    #[arg(long, default_value_t = 3600.0)]
    pub window: f64,
    /// Stop after this many seconds [default: until Ctrl-C].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many frames, all cameras together.
    #[arg(long)]
    pub count: Option<u64>,
    /// Failed attempts to reach the broker before giving up (once connected, it reconnects
    /// without end).
    #[arg(long, default_value_t = 5)]
    pub max_connect_attempts: u32,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub password: Option<String>,
    /// PEM certificates to trust for mqtts:// (default: the system's).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// MQTT client id, for a persistent session: the broker keeps the subscription and holds
    /// the messages published while `listen` is away (QoS 1), also across a broker restart when
    /// the broker persists its sessions [default: moodmirror-listen-<process id>, a clean session].
    #[arg(long)]
    pub client_id: Option<String>,
}

/// `mqtt://host:port/filter` split into the broker and the topic filter.
fn parse_url(url: &str) -> Result<(BrokerAddress, String)> {
    let (scheme, rest) = url.split_once("://").map_or(("mqtt", url), |(s, r)| (s, r));
    let (authority, filter) = rest.split_once('/').unwrap_or((rest, ""));
    let address: BrokerAddress = format!("{scheme}://{authority}").parse().map_err(anyhow::Error::msg)?;
    let filter = if filter.is_empty() { "moodmirror/#".to_string() } else { filter.to_string() };
    if filter.contains('#') && !filter.ends_with('#') {
        bail!("topic filter '{filter}': # may only end a filter");
    }
    Ok((address, filter))
}

/// What is known of one camera: its frames, and how they arrived.
#[derive(Default)]
struct Camera {
    topic: String,
    recording: RecordingBuilder,
    online: Option<bool>,
    /// The `pts` of the last [`DEDUP_FRAMES`] frames: a second copy (QoS 1 may deliver one twice
    /// after a reconnection, soon after the first) is counted, not recorded again.
    seen: BTreeSet<u64>,
    last_pts: Option<u64>,
    duplicates: u64,
    out_of_order: u64,
    invalid: u64,
    last_message: Option<Instant>,
    /// Frames received in all (the recording keeps only the window).
    frames: u64,
    /// Faces in those frames.
    faces: u64,
    /// New frames since the report folder was last written.
    dirty: bool,
}

/// How many recent frames per camera a repeated `pts` is looked for among (a minute at 30
/// frames/s, far more than a reconnection re-sends).
const DEDUP_FRAMES: usize = 2000;

/// Folder name of a camera: its name with anything but letters, digits, `.`, `-` and `_` replaced.
fn folder_name(camera: &str) -> String {
    let name: String = camera.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    if name.trim_matches('.').is_empty() {
        "camera".into()
    } else {
        name
    }
}

struct Fleet {
    cameras: BTreeMap<String, Camera>,
    frames: u64,
    started: Instant,
}

impl Fleet {
    /// One message from `topic`: a frame, or a camera's retained online/offline status.
    /// Returns the frame's JSON (for the archive) when it was one.
    fn receive(&mut self, topic: &str, payload: &[u8]) -> Option<serde_json::Value> {
        let parsed = serde_json::from_slice::<serde_json::Value>(payload).ok().filter(|v| v.is_object());
        let name = parsed.as_ref().and_then(|v| v.get("source")).and_then(|s| s.as_str()).map(str::to_string);
        // A status lives on `<topic>/status`: the camera is the data topic's.
        let data_topic = topic.strip_suffix("/status").unwrap_or(topic);
        // A message without a source (or not JSON) belongs to the camera last seen on its topic.
        let name = name
            .or_else(|| self.cameras.iter().find(|(_, c)| c.topic == data_topic).map(|(n, _)| n.clone()))
            .unwrap_or_else(|| data_topic.to_string());
        let camera = self.cameras.entry(name).or_default();
        camera.topic = data_topic.to_string();
        camera.last_message = Some(Instant::now());
        let Some(v) = parsed else {
            camera.invalid += 1;
            return None;
        };
        if let Some(online) = v.get("online").and_then(|o| o.as_bool()) {
            camera.online = Some(online);
            return None;
        }
        if let Some(pts) = v.get("pts").and_then(|p| p.as_u64()) {
            if !camera.seen.insert(pts) {
                camera.duplicates += 1;
                return None;
            }
            if camera.seen.len() > DEDUP_FRAMES {
                camera.seen.pop_first();
            }
            if camera.last_pts.is_some_and(|last| pts < last) {
                camera.out_of_order += 1;
            }
            camera.last_pts = Some(camera.last_pts.map_or(pts, |last| last.max(pts)));
        }
        let number = camera.frames as usize + 1;
        let faces_before = camera.recording.faces;
        if !camera.recording.push(&v, number) {
            camera.invalid += 1;
            return None;
        }
        camera.faces += (camera.recording.faces - faces_before) as u64;
        camera.frames += 1;
        camera.dirty = true;
        camera.online.get_or_insert(true);
        self.frames += 1;
        Some(v)
    }

    /// Writes the report folder of every camera with new frames, and fleet.csv; prints one line
    /// per camera. Each camera's recording is first cut to its last `window` seconds.
    fn refresh(&mut self, out: &Path, window: f64, quiet: bool) -> Result<()> {
        let mut csv = String::from(
            "camera,topic,online,frames,faces,tracks,duplicates,out_of_order,invalid,seconds_since_last_message,dominant_emotion\n",
        );
        for (name, camera) in self.cameras.iter_mut() {
            camera.recording.keep_last(window);
            let mut tracks = 0;
            let mut dominant = String::new();
            if let Some(recording) = camera.recording.build() {
                let folder = out.join(folder_name(name));
                let summaries = if camera.dirty {
                    camera.dirty = false;
                    report::write(&recording, &folder, 0.0)?
                } else {
                    report::summaries(&recording)
                };
                tracks = summaries.len();
                let mut time = [0f64; NUM_CLASSES];
                for s in &summaries {
                    time.iter_mut().zip(&s.shares).for_each(|(t, share)| *t += share * s.seconds);
                }
                if time.iter().any(|t| *t > 0.0) {
                    dominant = CLASS_NAMES[moodmirror::emotion::argmax(&time.map(|t| t as f32)).0].to_string();
                }
            }
            let since = camera.last_message.map(|t| format!("{:.1}", t.elapsed().as_secs_f64())).unwrap_or_default();
            let online = camera.online.map(|o| if o { "yes" } else { "no" }).unwrap_or("unknown");
            let quoted = |s: &str| if s.contains([',', '"']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() };
            csv += &format!(
                "{},{},{online},{},{},{tracks},{},{},{},{since},{dominant}\n",
                quoted(name),
                quoted(&camera.topic),
                camera.frames,
                camera.faces,
                camera.duplicates,
                camera.out_of_order,
                camera.invalid
            );
            if !quiet {
                say(format_args!(
                    "{name}: {} frames, {tracks} tracks, online {online}{}{}",
                    camera.frames,
                    if dominant.is_empty() { String::new() } else { format!(", mostly {dominant}") },
                    if camera.duplicates + camera.out_of_order + camera.invalid > 0 {
                        format!(" ({} duplicates, {} out of order, {} invalid)", camera.duplicates, camera.out_of_order, camera.invalid)
                    } else {
                        String::new()
                    }
                ));
            }
        }
        let path = out.join("fleet.csv");
        let partial = outputs::partial(&path);
        std::fs::write(&partial, csv).with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

pub fn run(args: &ListenArgs) -> Result<()> {
    let (address, filter) = parse_url(&args.url)?;
    if !(args.refresh > 0.0 && args.refresh.is_finite()) {
        bail!("--refresh {}: expected a positive number of seconds", args.refresh);
    }
    if args.window.is_nan() || args.window <= 0.0 {
        bail!("--window {}: expected a positive number of seconds", args.window);
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    outputs::check_folder_writable(&args.out, "--out", &args.out)?;
    let mut archive = match &args.jsonl {
        Some(path) => {
            outputs::check_output(path, "--jsonl", &[], true)?;
            let file = std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
            Some((path.clone(), std::io::BufWriter::new(file)))
        }
        None => None,
    };
    let client_id = args.client_id.clone().unwrap_or_else(|| format!("moodmirror-listen-{}", std::process::id()));
    let mut options = MqttOptions::new(client_id, address.host.clone(), address.port);
    options.set_keep_alive(Duration::from_secs(10)).set_clean_session(args.client_id.is_none()).set_max_packet_size(16 << 20, 1 << 20);
    if let Some(user) = &args.username {
        options.set_credentials(user.clone(), args.password.clone().unwrap_or_default());
    }
    if address.tls {
        let tls = tls_config(args.ca_file.as_deref()).map_err(anyhow::Error::msg)?;
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(tls))));
    }
    let (client, mut connection) = Client::new(options, 16);
    let interrupts = crate::signals::Interrupts::install();
    let mut fleet = Fleet { cameras: BTreeMap::new(), frames: 0, started: Instant::now() };
    let mut last_refresh = Instant::now();
    let (mut ever_connected, mut failures) = (false, 0u32);
    say(format_args!("listening to {filter} at {address}; summary in {}", args.out.display()));
    loop {
        if interrupts.count() > 0
            || args.duration.is_some_and(|d| fleet.started.elapsed().as_secs_f64() >= d)
            || args.count.is_some_and(|n| fleet.frames >= n)
        {
            break;
        }
        if last_refresh.elapsed().as_secs_f64() >= args.refresh {
            fleet.refresh(&args.out, args.window, false)?;
            last_refresh = Instant::now();
        }
        match connection.recv_timeout(Duration::from_millis(200)) {
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                ever_connected = true;
                failures = 0;
                // Made again on every connection: a clean session starts without it.
                client.try_subscribe(filter.clone(), QoS::AtLeastOnce).context("subscribing")?;
            }
            Ok(Ok(Event::Incoming(Packet::Publish(message)))) => {
                if let Some(mut frame) = fleet.receive(&message.topic, &message.payload) {
                    if let Some((path, out)) = &mut archive {
                        if let Some(object) = frame.as_object_mut() {
                            object.insert("topic".into(), message.topic.clone().into());
                        }
                        serde_json::to_writer(&mut *out, &frame)
                            .map_err(std::io::Error::other)
                            .and_then(|_| out.write_all(b"\n"))
                            .and_then(|_| out.flush())
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                failures += 1;
                if !ever_connected && failures >= args.max_connect_attempts.max(1) {
                    bail!("cannot connect to the MQTT broker at {address} after {failures} attempts: {error}");
                }
                let wait = Duration::from_millis(250).saturating_mul(1 << (failures - 1).min(5)).min(Duration::from_secs(5));
                eprintln!("listen: {error}; next attempt in {:.2} s", wait.as_secs_f64());
                std::thread::sleep(wait);
            }
        }
    }
    let _ = client.disconnect();
    fleet.refresh(&args.out, args.window, false)?;
    say(format_args!(
        "{} frames from {} camera{} in {:.1} s; summary in {}",
        fleet.frames,
        fleet.cameras.len(),
        if fleet.cameras.len() == 1 { "" } else { "s" },
        fleet.started.elapsed().as_secs_f64(),
        args.out.display()
    ));
    // A run that ended (--duration, --count) before the broker ever answered heard nothing:
    // a script must not take its empty summary for a quiet fleet.
    if !ever_connected {
        bail!("the MQTT broker at {address} was never reached ({failures} failed attempts)");
    }
    Ok(())
}

/// A line on standard output; a reader that went away (`listen … | head`) does not stop the
/// summary, which is the real output.
fn say(line: std::fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_broker_and_filter() {
        let (a, f) = parse_url("mqtt://localhost:1999/moodmirror/#").unwrap();
        assert_eq!((a.host.as_str(), a.port, a.tls, f.as_str()), ("localhost", 1999, false, "moodmirror/#"));
        let (a, f) = parse_url("mqtts://broker").unwrap();
        assert_eq!((a.port, a.tls, f.as_str()), (8883, true, "moodmirror/#"));
        assert!(parse_url("mqtt://h/a/#/b").is_err());
        assert!(parse_url("http://h/x").is_err());
    }

    #[test]
    fn duplicates_and_statuses_are_told_apart_from_frames() {
        let mut fleet = Fleet { cameras: BTreeMap::new(), frames: 0, started: Instant::now() };
        let frame = |pts: u64| format!(r#"{{"source":"door","pts":{pts},"timestamp":{pts},"objects":[]}}"#);
        assert!(fleet.receive("site/door/status", br#"{"source":"door","online":true}"#).is_none());
        for pts in [0, 33, 66, 33, 99, 50] {
            fleet.receive("site/door", frame(pts).as_bytes());
        }
        fleet.receive("site/door", b"not json");
        let door = &fleet.cameras["door"];
        assert_eq!((door.frames, door.duplicates, door.out_of_order, door.invalid), (5, 1, 1, 1));
        assert_eq!((door.topic.as_str(), door.online), ("site/door", Some(true)));
        assert_eq!(fleet.cameras.len(), 1, "the broken message counts against the camera of its topic");
        assert_eq!(folder_name("a/b c"), "a_b_c");
        assert_eq!(folder_name(".."), "camera");
    }
}
