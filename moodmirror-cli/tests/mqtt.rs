//! `moodmirrorjson method=mqtt` and `moodmirror listen` against a real broker: mosquitto, started
//! here on a free loopback port (scripts/setup.sh installs it) and stopped after each test.

use std::io::BufRead;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{fixture, init};
use gst::prelude::*;

/// A mosquitto broker of this test, on its own port, persisting sessions in its own folder (so
/// that a persistent subscriber keeps its subscription across a restart, as a production broker
/// configured for it does).
struct Broker {
    port: u16,
    config: PathBuf,
    process: Option<Child>,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn mosquitto_binary() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto is not installed: scripts/setup.sh installs it (apt-get install mosquitto)")
}

impl Broker {
    fn start() -> Broker {
        Self::start_with(|_| String::new())
    }

    /// A broker whose listener gets the lines `extra` writes (given the broker's folder).
    fn start_with(extra: impl FnOnce(&Path) -> String) -> Broker {
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        let store = dir.path().join("store");
        std::fs::create_dir_all(&store).expect("mkdir");
        // Started as root, mosquitto switches to its own user, which cannot write (or read) this
        // test's private folder: its sessions would not survive a restart.
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 { "user root\n" } else { "" };
        std::fs::write(
            &config,
            format!(
                "{user}listener {port} 127.0.0.1\n{}allow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 10000\nlog_dest file {}\n",
                extra(dir.path()),
                store.display(),
                dir.path().join("mosquitto.log").display()
            ),
        )
        .expect("config");
        let mut broker = Broker { port, config, process: None, dir };
        broker.run();
        broker
    }

    /// mosquitto's own log (errors such as a session store it cannot write).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn run(&mut self) {
        let child = Command::new(mosquitto_binary()).arg("-c").arg(&self.config).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        self.process = Some(child.expect("mosquitto starts"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen on {} within 10 s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker as a service manager does (SIGTERM: it saves its sessions).
    fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    fn address(&self) -> String {
        format!("localhost:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `moodmirror listen` on the broker's `filter`, archiving to `dir/archive.jsonl`, summary in
/// `dir/summary`.
fn listen(broker: &Broker, filter: &str, dir: &Path, extra: &[&str]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_moodmirror"));
    command
        .arg("listen")
        .arg(format!("mqtt://127.0.0.1:{}/{filter}", broker.port))
        .arg("--out")
        .arg(dir.join("summary"))
        .arg("--jsonl")
        .arg(dir.join("archive.jsonl"))
        .args(["--refresh", "1"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("listen");
    // Its first line comes before it connects; give it the moment to subscribe. The rest of its
    // output is read (and dropped) so that it never writes to a closed pipe.
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("listen's first line");
    assert!(first.starts_with("listening to"), "{first}");
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    std::thread::sleep(Duration::from_millis(500));
    child
}

fn wait_for(child: &mut Child, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            assert!(status.success(), "listen failed: {err}");
            return err;
        }
        assert!(Instant::now() < deadline, "listen did not finish within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The archived frames per camera (`source`), as `pts` in arrival order.
fn archived(dir: &Path) -> std::collections::BTreeMap<String, Vec<u64>> {
    let text = std::fs::read_to_string(dir.join("archive.jsonl")).expect("archive");
    let mut cameras = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("every archived line is JSON");
        assert!(v["objects"].is_array() && v["resolution"]["width"].as_u64().is_some(), "{line}");
        let source = v["source"].as_str().expect("source").to_string();
        assert_eq!(v["topic"].as_str(), Some(format!("cams/{source}").as_str()));
        cameras.entry(source).or_default().push(v["pts"].as_u64().expect("pts"));
    }
    cameras
}

/// fleet.csv rows as column → value maps.
fn fleet(dir: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(dir.join("summary/fleet.csv")).expect("fleet.csv");
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().expect("header").split(',').map(str::to_string).collect();
    lines.map(|l| header.iter().cloned().zip(l.split(',').map(str::to_string)).collect()).collect()
}

fn pipeline(description: &str) -> gst::Pipeline {
    gst::parse::launch(description).expect("pipeline").downcast::<gst::Pipeline>().expect("a pipeline")
}

/// Runs to EOS; panics on an error message.
fn run_to_eos(pipeline: &gst::Pipeline) {
    pipeline.set_state(gst::State::Playing).expect("playing");
    let bus = pipeline.bus().expect("bus");
    for message in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match message.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{} ({:?})", e.error(), e.debug()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).expect("null");
}

#[test]
fn three_pipelines_publish_every_frame_to_one_broker_in_order() {
    init();
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tmp");
    let mut listener = listen(&broker, "cams/#", dir.path(), &["--duration", "120"]);
    let astronaut = fixture("astronaut.jpg");
    let threads: Vec<_> = ["door", "hall", "desk"]
        .into_iter()
        .map(|camera| {
            let description = format!(
                "filesrc location={} ! jpegdec ! videoconvert ! videoscale ! video/x-raw,width=320,height=320 ! imagefreeze num-buffers=300 \
                 ! moodmirror draw=false ! moodmirrorjson method=mqtt address={} topic=cams/{camera} source={camera} ! fakesink",
                astronaut.display(),
                broker.address()
            );
            std::thread::spawn(move || run_to_eos(&pipeline(&description)))
        })
        .collect();
    for t in threads {
        t.join().expect("pipeline thread");
    }
    // Ctrl-C ends listen with a final summary, after the cameras' goodbyes have arrived.
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(listener.id() as libc::pid_t, libc::SIGINT) };
    wait_for(&mut listener, Duration::from_secs(30));
    let cameras = archived(dir.path());
    assert_eq!(cameras.keys().map(String::as_str).collect::<Vec<_>>(), ["desk", "door", "hall"]);
    for (camera, pts) in &cameras {
        assert_eq!(pts.len(), 300, "{camera}");
        assert!(pts.windows(2).all(|w| w[0] < w[1]), "{camera}: frames in order");
    }
    // The live summary agrees with what was published: every frame, one face and one track each.
    let rows = fleet(dir.path());
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!((row["frames"].as_str(), row["faces"].as_str(), row["tracks"].as_str()), ("300", "300", "1"), "{row:?}");
        assert_eq!((row["duplicates"].as_str(), row["out_of_order"].as_str(), row["invalid"].as_str()), ("0", "0", "0"));
        assert_eq!(row["online"], "no", "the element said goodbye: {row:?}");
        assert!(dir.path().join("summary").join(&row["camera"]).join("summary.csv").exists());
    }
}

#[test]
fn a_broker_stopped_for_three_seconds_loses_no_frame_and_the_stream_stays_real_time() {
    init();
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().expect("tmp");
    // A persistent subscriber: the broker holds what is published while it reconnects.
    let mut listener = listen(&broker, "cams/#", dir.path(), &["--count", "300", "--duration", "60", "--client-id", "test-listener"]);
    let pipe = pipeline(&format!(
        "videotestsrc is-live=true num-buffers=300 pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! moodmirror draw=false ! moodmirrorjson name=publish method=mqtt address={} topic=cams/live source=live \
           max-reconnect-interval=1 ! fakesink name=sink sync=true",
        broker.address()
    ));
    // The largest gap between frames at the sink: the streaming thread must never wait for the network.
    let gaps = std::sync::Arc::new(std::sync::Mutex::new((None::<Instant>, Duration::ZERO)));
    let probe_gaps = gaps.clone();
    let sink_pad = pipe.by_name("sink").and_then(|s| s.static_pad("sink")).expect("sink pad");
    sink_pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        let mut g = probe_gaps.lock().expect("gaps");
        let now = Instant::now();
        if let Some(last) = g.0 {
            g.1 = g.1.max(now - last);
        }
        g.0 = Some(now);
        gst::PadProbeReturn::Ok
    });
    let started = Instant::now();
    let runner = std::thread::spawn(move || run_to_eos(&pipe));
    std::thread::sleep(Duration::from_secs(3));
    broker.stop();
    std::thread::sleep(Duration::from_secs(3));
    broker.run();
    runner.join().expect("pipeline");
    let wall = started.elapsed();
    wait_for(&mut listener, Duration::from_secs(60));
    let cameras = archived(dir.path());
    let pts = &cameras["live"];
    assert!(pts.len() >= 299, "{} of 300 frames arrived", pts.len());
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "in frame order, none twice");
    // 300 frames at 30/s: 10 s, and no frame held up behind the broker.
    let max_gap = gaps.lock().expect("gaps").1;
    assert!(!broker.log().contains("Error"), "mosquitto: {}", broker.log());
    let rows = fleet(dir.path());
    eprintln!(
        "broker restart: {} of 300 frames in order, {} duplicates dropped by listen, pipeline {wall:?}, largest gap {max_gap:?}",
        pts.len(),
        rows[0]["duplicates"]
    );
    assert!(wall < Duration::from_millis(11_500), "{wall:?}");
    assert!(max_gap < Duration::from_millis(150), "largest gap between frames {max_gap:?}");
    assert_eq!(rows[0]["out_of_order"], "0", "{rows:?}");
}

#[test]
fn a_wrong_port_is_an_error_on_the_bus_and_the_pipeline_reaches_null() {
    init();
    let port = free_port();
    let pipe = pipeline(&format!(
        "videotestsrc is-live=true num-buffers=300 ! moodmirrorjson method=mqtt address=localhost:{port} topic=cams/x max-connect-attempts=3 ! fakesink"
    ));
    let started = Instant::now();
    pipe.set_state(gst::State::Playing).expect("playing");
    let bus = pipe.bus().expect("bus");
    let error = bus
        .iter_timed(gst::ClockTime::from_seconds(10))
        .find_map(|m| match m.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            gst::MessageView::Eos(_) => Some("EOS instead of an error".into()),
            _ => None,
        })
        .expect("a message within 10 s");
    assert!(
        error.contains("cannot connect to the MQTT broker") && error.contains(&port.to_string()) && error.contains("3 attempts"),
        "{error}"
    );
    // Three attempts 0.25 s and 0.5 s apart.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(pipe.set_state(gst::State::Null), Ok(gst::StateChangeSuccess::Success));

    // `listen` that ends (--duration) before the broker ever answered exits non-zero.
    let dir = tempfile::tempdir().expect("tmp");
    let run = Command::new(env!("CARGO_BIN_EXE_moodmirror"))
        .args(["listen", &format!("mqtt://127.0.0.1:{port}/cams/#"), "--duration", "1", "--out"])
        .arg(dir.path())
        .output()
        .expect("listen");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("never reached"), "{stderr}");

    // Bad settings fail the start, naming the problem.
    for (properties, expected) in [
        ("address=http://x", "unknown scheme"),
        ("topic=cams/#", "wildcard"),
        ("password=secret", "password without username"),
        ("ca-file=/nonexistent.pem", "ca-file is for TLS"),
    ] {
        let pipe = pipeline(&format!("videotestsrc num-buffers=1 ! moodmirrorjson method=mqtt {properties} ! fakesink"));
        let _ = pipe.set_state(gst::State::Playing);
        let error = pipe
            .bus()
            .expect("bus")
            .iter_timed(gst::ClockTime::from_seconds(5))
            .find_map(|m| match m.view() {
                gst::MessageView::Error(e) => Some(format!("{} {:?}", e.error(), e.debug())),
                _ => None,
            })
            .unwrap_or_default();
        assert!(error.contains(expected), "{properties}: {error}");
        assert_eq!(pipe.set_state(gst::State::Null), Ok(gst::StateChangeSuccess::Success));
    }
}

#[test]
fn a_full_queue_is_counted_and_reported_on_the_bus_not_silently_dropped() {
    init();
    // A broker that is not there yet: the element keeps trying, the queue fills.
    let port = free_port();
    let pipe = pipeline(&format!(
        "videotestsrc num-buffers=50 ! video/x-raw,width=64,height=48 ! moodmirrorjson name=j method=mqtt address=localhost:{port} \
         topic=cams/q max-connect-attempts=1000 queue-size=10 ! fakesink"
    ));
    pipe.set_state(gst::State::Playing).expect("playing");
    let bus = pipe.bus().expect("bus");
    let mut overflow = None;
    for message in bus.iter_timed(gst::ClockTime::from_seconds(30)) {
        match message.view() {
            gst::MessageView::Element(e) if e.structure().is_some_and(|s| s.name() == "moodmirror-mqtt-overflow") => {
                overflow = e.structure().and_then(|s| s.get::<u64>("dropped").ok());
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    assert_eq!(overflow, Some(1), "posted once, at the first drop");
    let element = pipe.by_name("j").expect("j");
    assert_eq!(element.property::<u64>("dropped-messages"), 40, "50 frames, room for 10");
    // Stopping waits a few seconds for the broker, then warns that the queue was not delivered
    // (read before NULL, which flushes the bus).
    let stopped = Instant::now();
    pipe.set_state(gst::State::Ready).expect("ready");
    assert!(stopped.elapsed() < Duration::from_secs(8));
    let warning = bus
        .iter_timed(gst::ClockTime::ZERO)
        .find_map(|m| match m.view() {
            gst::MessageView::Warning(w) => Some(w.error().to_string()),
            _ => None,
        })
        .unwrap_or_default();
    assert!(warning.contains("10 messages were not delivered"), "{warning}");
    assert_eq!(pipe.set_state(gst::State::Null), Ok(gst::StateChangeSuccess::Success));
}

/// A CA and a certificate for `localhost` signed by it (openssl), in `dir`: (ca.pem, cert, key).
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed (scripts/setup.sh)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=moodmirror test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

#[test]
fn mqtts_with_the_brokers_ca_delivers_and_another_ca_is_refused() {
    init();
    let certs = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) = make_certificates(certs.path());
    let broker = Broker::start_with(|_| format!("cafile {}\ncertfile {}\nkeyfile {}\n", ca.display(), cert.display(), key.display()));
    let dir = tempfile::tempdir().expect("tmp");
    let mut command = Command::new(env!("CARGO_BIN_EXE_moodmirror"));
    command
        .arg("listen")
        .arg(format!("mqtts://localhost:{}/cams/#", broker.port))
        .arg("--ca-file")
        .arg(&ca)
        .arg("--out")
        .arg(dir.path().join("summary"))
        .arg("--jsonl")
        .arg(dir.path().join("archive.jsonl"))
        .args(["--count", "50", "--duration", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut listener = command.spawn().expect("listen");
    std::thread::sleep(Duration::from_millis(800));
    run_to_eos(&pipeline(&format!(
        "videotestsrc num-buffers=50 ! video/x-raw,width=64,height=48 ! moodmirrorjson method=mqtt address=mqtts://localhost:{} \
         ca-file={} topic=cams/tls source=tls ! fakesink",
        broker.port,
        ca.display()
    )));
    wait_for(&mut listener, Duration::from_secs(30));
    let pts = &archived(dir.path())["tls"];
    assert_eq!(pts.len(), 50);
    assert!(pts.windows(2).all(|w| w[0] < w[1]));

    // A CA that did not sign the broker's certificate: the handshake fails, an error on the bus.
    let other = tempfile::tempdir().expect("tmp");
    let (other_ca, _, _) = make_certificates(other.path());
    let pipe = pipeline(&format!(
        "videotestsrc is-live=true num-buffers=300 ! moodmirrorjson method=mqtt address=mqtts://localhost:{} ca-file={} topic=cams/x ! fakesink",
        broker.port,
        other_ca.display()
    ));
    pipe.set_state(gst::State::Playing).expect("playing");
    let error = pipe
        .bus()
        .expect("bus")
        .iter_timed(gst::ClockTime::from_seconds(15))
        .find_map(|m| match m.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        })
        .unwrap_or_default();
    assert!(error.contains("cannot connect to the MQTT broker") && error.to_lowercase().contains("certificate"), "{error}");
    assert_eq!(pipe.set_state(gst::State::Null), Ok(gst::StateChangeSuccess::Success));
}

#[test]
fn a_broker_with_logins_takes_the_right_password_and_refuses_a_wrong_one() {
    init();
    let broker = Broker::start_with(|dir| {
        let passwords = dir.join("passwords");
        let status = Command::new("mosquitto_passwd").arg("-c").arg("-b").arg(&passwords).args(["camera", "s3cret"]).status();
        assert!(status.expect("mosquitto_passwd (package mosquitto)").success());
        format!("password_file {}\n", passwords.display())
    });
    let config = std::fs::read_to_string(&broker.config).expect("config");
    let config = config.replace("allow_anonymous true", "allow_anonymous false");
    std::fs::write(&broker.config, config).expect("config");
    let mut broker = broker;
    broker.stop();
    broker.run();
    // Live, so that the stream outlasts the login (a 20-frame file can end before the broker answers).
    let run = |password: &str| {
        let pipe = pipeline(&format!(
            "videotestsrc is-live=true num-buffers=20 ! video/x-raw,width=64,height=48,framerate=30/1 ! moodmirrorjson name=j \
             method=mqtt address={} topic=cams/login username=camera password={password} ! fakesink",
            broker.address()
        ));
        pipe.set_state(gst::State::Playing).expect("playing");
        let outcome = pipe
            .bus()
            .expect("bus")
            .iter_timed(gst::ClockTime::from_seconds(15))
            .find_map(|m| match m.view() {
                gst::MessageView::Error(e) => Some(e.error().to_string()),
                gst::MessageView::Eos(_) => Some("eos".into()),
                _ => None,
            })
            .unwrap_or_default();
        // Stopping delivers the queue: READY before NULL keeps the warning, if any, readable.
        pipe.set_state(gst::State::Ready).expect("ready");
        let warned = pipe.bus().expect("bus").iter_timed(gst::ClockTime::ZERO).any(|m| matches!(m.view(), gst::MessageView::Warning(_)));
        assert_eq!(pipe.set_state(gst::State::Null), Ok(gst::StateChangeSuccess::Success));
        (outcome, warned)
    };
    assert_eq!(run("s3cret"), ("eos".to_string(), false), "delivered, nothing left undelivered");
    let (error, _) = run("wrong");
    assert!(error.contains("cannot connect") && error.contains("NotAuthorized"), "{error}");
}
