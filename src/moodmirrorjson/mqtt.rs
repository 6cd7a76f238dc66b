//! Publishing `moodmirrorjson`'s lines to an MQTT broker without ever blocking the streaming
//! thread, and without losing what is made while the broker is away.
//!
//! The streaming thread appends each message to a bounded queue ([`MqttPublisher::publish`]: a
//! lock held for a push). One connection thread owns the MQTT client (rumqttc): it hands queued
//! messages to the client in order, a window at a time, and removes a message from the queue only
//! when the broker has acknowledged it (QoS 1) or it was written to the socket (QoS 0). When the
//! connection breaks, everything not yet acknowledged goes back to "not sent" and is sent again,
//! in order, after reconnecting (a clean session: the client keeps nothing of its own across
//! connections, so the queue is the one record). The same thread hands a message to the client
//! and sees the connection fail, so no message can be both lost by the client and considered sent.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, RecvTimeoutError};

/// Where the broker is: `host[:port]`, `mqtt://host[:port]` or `mqtts://host[:port]` (TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl std::str::FromStr for BrokerAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (tls, rest) = match text.split_once("://") {
            None => (false, text),
            Some(("mqtt" | "tcp", rest)) => (false, rest),
            Some(("mqtts" | "ssl", rest)) => (true, rest),
            Some((scheme, _)) => return Err(format!("address '{text}': unknown scheme '{scheme}' (mqtt:// or mqtts://)")),
        };
        let rest = rest.trim_end_matches('/');
        let default_port = if tls { 8883 } else { 1883 };
        // `[::1]:1883`, `host:1883` or `host`.
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
                let port =
                    port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("address '{text}': port '{port}' is not 1-65535"))?;
                (host, port)
            }
            _ => (rest, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(format!("address '{text}': expected host[:port], mqtt://host[:port] or mqtts://host[:port]"));
        }
        Ok(BrokerAddress { host: host.to_string(), port, tls })
    }
}

impl std::fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", if self.tls { "mqtts" } else { "mqtt" }, self.host, self.port)
    }
}

/// A topic a message can be published to: no wildcards, not empty.
pub fn check_publish_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.contains(['#', '+', '\0']) {
        return Err(format!("topic '{topic}': a publish topic is not empty and has no wildcard (# or +)"));
    }
    Ok(())
}

/// Everything the publisher needs, from the element's properties.
pub struct PublisherSettings {
    pub address: BrokerAddress,
    pub topic: String,
    pub client_id: String,
    pub qos: QoS,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Failed attempts before a broker that was never reached is an error.
    pub max_connect_attempts: u32,
    /// The longest wait between reconnection attempts (the wait doubles from 250 ms up to it).
    pub max_reconnect_interval: Duration,
    /// Bounds of the queue of messages not yet delivered.
    pub queue_messages: usize,
    pub queue_bytes: usize,
    /// The retained online/offline message on `<topic>/status` (and the last will).
    pub status_payload: Box<dyn Fn(bool) -> Vec<u8> + Send + Sync>,
}

/// How long [`MqttPublisher::stop`] waits for the queue to be delivered.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages handed to the client and not yet acknowledged, at most (below the client's own
/// in-flight limit, so that packet ids never collide).
const WINDOW: usize = 50;
const CLIENT_INFLIGHT: u16 = 100;
/// How long the connection thread waits for network events between looks at the queue.
const POLL: Duration = Duration::from_millis(5);
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// What the connection thread tells the element.
#[derive(Debug, Clone, PartialEq)]
pub enum PublisherEvent {
    Connected {
        after_attempts: u32,
    },
    /// The connection broke or an attempt failed; the thread retries after `retry_in`.
    Disconnected {
        reason: String,
        retry_in: Duration,
    },
    /// The broker was never reached in `max-connect-attempts`: the publisher has stopped.
    GaveUp {
        reason: String,
    },
}

/// What became of a message given to [`MqttPublisher::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Yes,
    /// The queue was full: the message is dropped and counted; `first` on the first drop.
    Dropped {
        first: bool,
        total: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Waiting,
    /// Handed to the client in this connection.
    Handed,
    /// Written to the broker with this packet id; waits for its acknowledgement.
    Written(u16),
    Done,
}

struct Message {
    payload: Vec<u8>,
    /// The status topic instead of the data topic (retained, not counted in the queue's bounds).
    status: bool,
    delivery: Delivery,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Message>,
    /// Bytes of the data messages in `messages`.
    bytes: usize,
    data_messages: usize,
    dropped: u64,
    delivered: u64,
    /// The element is stopping: deliver what is queued, say goodbye, end.
    closing: bool,
    /// End now, delivered or not (the drain time is over).
    abort: bool,
    /// The connection thread has ended.
    ended: bool,
    connected: bool,
    failed: Option<String>,
}

struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts at the end of a publisher's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublisherTotals {
    pub delivered: u64,
    pub dropped: u64,
    /// Still queued when the publisher stopped (broker away for the whole drain time).
    pub undelivered: u64,
}

pub struct MqttPublisher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    queue_messages: usize,
    queue_bytes: usize,
}

impl MqttPublisher {
    /// Starts the connection thread (it connects in the background: this never waits for the
    /// network); `events` is called from that thread.
    pub fn start(settings: PublisherSettings, events: Box<dyn Fn(PublisherEvent) + Send>) -> Result<Self, String> {
        check_publish_topic(&settings.topic)?;
        if settings.qos == QoS::ExactlyOnce {
            return Err("qos 2 is not offered: 0 (at most once) or 1 (at least once, in order)".into());
        }
        let options = client_options(&settings)?;
        let (client, connection) = Client::new(options, WINDOW);
        let shared = Arc::new(Shared { queue: Mutex::new(Queue::default()), changed: Condvar::new() });
        let thread_shared = shared.clone();
        let (queue_messages, queue_bytes) = (settings.queue_messages.max(1), settings.queue_bytes.max(1));
        let thread = std::thread::Builder::new()
            .name("moodmirror-mqtt".into())
            .spawn(move || ConnectionThread { shared: thread_shared, settings, client, events }.run(connection))
            .map_err(|e| format!("cannot start the MQTT connection thread: {e}"))?;
        Ok(MqttPublisher { shared, thread: Some(thread), queue_messages, queue_bytes })
    }

    /// Queues `payload` for the data topic; never blocks on the network.
    pub fn publish(&self, payload: Vec<u8>) -> Queued {
        let mut q = self.shared.lock();
        if q.data_messages >= self.queue_messages || q.bytes + payload.len() > self.queue_bytes {
            q.dropped += 1;
            return Queued::Dropped { first: q.dropped == 1, total: q.dropped };
        }
        q.bytes += payload.len();
        q.data_messages += 1;
        q.messages.push_back(Message { payload, status: false, delivery: Delivery::Waiting });
        drop(q);
        self.shared.changed.notify_one();
        Queued::Yes
    }

    /// Why the publisher gave up, if it did.
    pub fn failed(&self) -> Option<String> {
        self.shared.lock().failed.clone()
    }

    /// Delivers what is queued (waiting at most `drain` for the broker), says goodbye (the
    /// retained offline status), disconnects and joins the thread.
    pub fn stop(mut self, drain: Duration) -> PublisherTotals {
        {
            let mut q = self.shared.lock();
            q.closing = true;
        }
        self.shared.changed.notify_one();
        let deadline = Instant::now() + drain;
        {
            let mut q = self.shared.lock();
            // Delivered, goodbye said and disconnected: the thread ends by itself.
            while !q.ended && Instant::now() < deadline {
                q = self.shared.changed.wait_timeout(q, Duration::from_millis(20)).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
            }
            q.abort = true;
        }
        self.shared.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let q = self.shared.lock();
        PublisherTotals { delivered: q.delivered, dropped: q.dropped, undelivered: q.data_messages as u64 }
    }
}

impl Drop for MqttPublisher {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            {
                let mut q = self.shared.lock();
                q.closing = true;
                q.abort = true;
            }
            self.shared.changed.notify_one();
            let _ = thread.join();
        }
    }
}

fn status_topic(topic: &str) -> String {
    format!("{topic}/status")
}

fn client_options(settings: &PublisherSettings) -> Result<MqttOptions, String> {
    let mut options = MqttOptions::new(settings.client_id.clone(), settings.address.host.clone(), settings.address.port);
    options
        .set_keep_alive(Duration::from_secs(10))
        .set_clean_session(true)
        .set_inflight(CLIENT_INFLIGHT)
        .set_max_packet_size(1 << 20, 16 << 20)
        .set_last_will(LastWill::new(status_topic(&settings.topic), (settings.status_payload)(false), QoS::AtLeastOnce, true));
    match (&settings.username, &settings.password) {
        (Some(user), password) => {
            options.set_credentials(user.clone(), password.clone().unwrap_or_default());
        }
        (None, Some(_)) => return Err("password without username: MQTT sends a password only with a username".into()),
        (None, None) => {}
    }
    if settings.address.tls {
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(tls_config(
            settings.ca_file.as_deref(),
        )?))));
    } else if settings.ca_file.is_some() {
        return Err(format!("ca-file is for TLS: use mqtts://{}:{}", settings.address.host, settings.address.port));
    }
    Ok(options)
}

/// TLS trusting the certificates of `ca_file` (PEM), or the system's when there is none.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("ca-file '{}': {e}", path.display()))?;
            let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("ca-file '{}': not PEM certificates: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("ca-file '{}' holds no PEM certificate", path.display()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| format!("ca-file '{}': {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("mqtts:// without ca-file, and no system certificates were found: set ca-file".into());
            }
        }
    }
    // ring, not aws-lc: no cmake or C++ toolchain in the build; its cipher suites are the usual
    // ones (the deprecation is about post-quantum key exchange, which brokers do not offer yet).
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

struct ConnectionThread {
    shared: Arc<Shared>,
    settings: PublisherSettings,
    client: Client,
    events: Box<dyn Fn(PublisherEvent) + Send>,
}

impl ConnectionThread {
    fn run(self, mut connection: Connection) {
        let mut ever_connected = false;
        let mut failures = 0u32;
        let mut said_goodbye = false;
        loop {
            let (connected, drained, stop_now) = {
                let q = self.shared.lock();
                let drained = q.closing && q.data_messages == 0;
                // Connected: the goodbye is delivered too; not connected: nothing more to say.
                let done = drained && (!q.connected || (said_goodbye && q.messages.is_empty()));
                (q.connected, drained, q.abort || q.failed.is_some() || done)
            };
            if stop_now {
                break;
            }
            if connected {
                if drained && !said_goodbye {
                    // Retained "offline" for consumers, then a clean disconnect (no last will).
                    self.queue_status(false, false);
                    said_goodbye = true;
                }
                self.hand_over();
            }
            // Connecting may take a TLS handshake: not cut short by the poll interval (but a
            // stopping element does not wait out a broker that drops packets).
            let wait = match (connected, drained) {
                (true, _) => POLL,
                (false, false) => Duration::from_secs(10),
                (false, true) => Duration::from_secs(1),
            };
            match connection.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    (self.events)(PublisherEvent::Connected { after_attempts: failures + 1 });
                    ever_connected = true;
                    failures = 0;
                    self.shared.lock().connected = true;
                    self.queue_status(true, true);
                }
                Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => self.written(pkid),
                Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => self.acknowledged(ack.pkid),
                Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => {
                    self.shared.lock().connected = false;
                    break;
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    failures += 1;
                    self.connection_lost(&mut connection);
                    if said_goodbye {
                        break;
                    }
                    let reason = describe(&error, &self.settings.address);
                    if !ever_connected && failures >= self.settings.max_connect_attempts.max(1) {
                        let reason = format!(
                            "cannot connect to the MQTT broker at {} after {failures} attempt{}: {reason}",
                            self.settings.address,
                            if failures == 1 { "" } else { "s" }
                        );
                        self.shared.lock().failed = Some(reason.clone());
                        self.shared.changed.notify_all();
                        (self.events)(PublisherEvent::GaveUp { reason });
                        break;
                    }
                    let retry_in =
                        FIRST_RETRY.saturating_mul(1 << (failures - 1).min(16)).min(self.settings.max_reconnect_interval.max(FIRST_RETRY));
                    (self.events)(PublisherEvent::Disconnected { reason, retry_in });
                    self.sleep_unless_stopping(retry_in);
                }
            }
        }
        // The client's side: a disconnect if still connected (its last requests go first).
        if self.shared.lock().connected {
            let _ = self.client.disconnect();
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                match connection.recv_timeout(Duration::from_millis(50)) {
                    Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => self.written(pkid),
                    Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => self.acknowledged(ack.pkid),
                    Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => break,
                    _ => {}
                }
            }
        }
        let mut q = self.shared.lock();
        q.connected = false;
        q.ended = true;
        drop(q);
        self.shared.changed.notify_all();
    }

    /// Hands waiting messages to the client, in order, while fewer than [`WINDOW`] are out.
    fn hand_over(&self) {
        let mut q = self.shared.lock();
        let out = q.messages.iter().filter(|m| matches!(m.delivery, Delivery::Handed | Delivery::Written(_))).count();
        let topic = &self.settings.topic;
        for m in q.messages.iter_mut().filter(|m| m.delivery == Delivery::Waiting).take(WINDOW.saturating_sub(out)) {
            let (topic, qos, retain) =
                if m.status { (status_topic(topic), QoS::AtLeastOnce, true) } else { (topic.clone(), self.settings.qos, false) };
            if self.client.try_publish(topic, qos, retain, m.payload.clone()).is_err() {
                break; // the client's channel is full: the rest waits for the next round
            }
            m.delivery = Delivery::Handed;
        }
    }

    /// The client wrote the oldest handed message with packet id `pkid` (0 for QoS 0): a QoS 0
    /// message is done, a QoS 1 one (data at qos=1, every status) waits for its acknowledgement.
    fn written(&self, pkid: u16) {
        let mut q = self.shared.lock();
        if let Some(m) = q.messages.iter_mut().find(|m| m.delivery == Delivery::Handed) {
            let at_most_once = !m.status && self.settings.qos == QoS::AtMostOnce;
            m.delivery = if at_most_once { Delivery::Done } else { Delivery::Written(pkid) };
        }
        self.remove_done(&mut q);
    }

    fn acknowledged(&self, pkid: u16) {
        let mut q = self.shared.lock();
        if let Some(m) = q.messages.iter_mut().find(|m| m.delivery == Delivery::Written(pkid)) {
            m.delivery = Delivery::Done;
        }
        self.remove_done(&mut q);
    }

    /// Drops delivered messages from the front (order is kept: a later message acknowledged
    /// first waits behind an earlier one).
    fn remove_done(&self, q: &mut Queue) {
        let mut removed = false;
        while q.messages.front().is_some_and(|m| m.delivery == Delivery::Done) {
            if let Some(m) = q.messages.pop_front() {
                if !m.status {
                    q.bytes -= m.payload.len();
                    q.data_messages -= 1;
                    q.delivered += 1;
                }
                removed = true;
            }
        }
        if removed {
            self.shared.changed.notify_all();
        }
    }

    /// Everything not acknowledged is sent again after reconnecting; the client forgets its own
    /// copies (a clean session starts empty).
    fn connection_lost(&self, connection: &mut Connection) {
        connection.eventloop.pending.clear();
        let mut q = self.shared.lock();
        q.connected = false;
        // A status from an earlier connection is not repeated: the next connection sends its own.
        q.messages.retain(|m| !m.status);
        for m in q.messages.iter_mut() {
            m.delivery = Delivery::Waiting;
        }
    }

    /// Queues the retained online/offline status ahead of the data (`first`) or after it.
    fn queue_status(&self, online: bool, first: bool) {
        let message = Message { payload: (self.settings.status_payload)(online), status: true, delivery: Delivery::Waiting };
        let mut q = self.shared.lock();
        if first {
            q.messages.push_front(message);
        } else {
            q.messages.push_back(message);
        }
    }

    /// Sleeps `duration`, or less when the element stops meanwhile.
    fn sleep_unless_stopping(&self, duration: Duration) {
        let deadline = Instant::now() + duration;
        let mut q = self.shared.lock();
        while Instant::now() < deadline && !q.abort && !(q.closing && q.data_messages == 0) {
            q = self.shared.changed.wait_timeout(q, Duration::from_millis(50)).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// A connection error as a user reads it.
fn describe(error: &ConnectionError, address: &BrokerAddress) -> String {
    match error {
        ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("connection refused (is a broker listening on {}:{}?)", address.host, address.port)
        }
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection: {code:?}"),
        ConnectionError::NetworkTimeout => "no answer from the broker (timeout)".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_parse_and_bad_ones_are_named() {
        let a: BrokerAddress = "localhost:1884".parse().unwrap();
        assert_eq!(a, BrokerAddress { host: "localhost".into(), port: 1884, tls: false });
        assert_eq!("mqtt://broker".parse::<BrokerAddress>().unwrap().port, 1883);
        let s: BrokerAddress = "mqtts://broker.example".parse().unwrap();
        assert!(s.tls && s.port == 8883);
        assert_eq!("[::1]:1999".parse::<BrokerAddress>().unwrap().host, "::1");
        for bad in ["http://x", "host:0", "host:99999", "host:port", "", "mqtt://"] {
            let err = bad.parse::<BrokerAddress>().unwrap_err();
            assert!(err.contains("address"), "{bad}: {err}");
        }
        assert!(check_publish_topic("moodmirror/door").is_ok());
        assert!(check_publish_topic("moodmirror/#").is_err() && check_publish_topic("").is_err());
    }
}
