//! Benchmark material for moodmirror on video.
//!
//!     cargo run --release --example bench_video -- make OUT.mp4 [FRAMES] [FACES]   # 1280x720 30 fps H.264
//!     cargo run --release --example bench_video -- memory [FRAMES]         # RSS over a long run
//!     cargo run --release --example bench_video -- soak CLIP.mp4 [SECONDS] [--fast]
//!     cargo run --release --example bench_video -- frames CLIP.mp4 [PROPERTIES…]   # per-frame times
//!
//! `soak` plays CLIP in a loop (segment seeks, one pipeline) through moodmirror at the clip's
//! own pace (`--fast`: as fast as it goes) for SECONDS (default 3600), prints RSS and the
//! element's per-frame time (p50/p99/max) every minute, and fails when RSS grew more than
//! 2 MiB after the first minute or the last minute's median frame time is over 1.5x the first's.
//!
//! The clip shows three faces cut from NASA's public-domain astronaut portrait
//! (tests/fixtures/astronaut.png), at three sizes, one mirrored, moving on smooth paths over a
//! slowly changing background; with FACES other than 3, a crowd of that many smaller faces on
//! a grid of seats, each swaying in its place. `memory` feeds the same frames straight into moodmirror
//! (default settings, drawing off) and prints the process's resident memory as it goes.

use gst::prelude::*;

const W: usize = 1280;
const H: usize = 720;
const FPS: u64 = 30;

/// A face patch: the astronaut's head and shoulders, scaled to `side` px, optionally mirrored.
struct Patch {
    side: usize,
    rgb: Vec<u8>,
}

/// The three-face clip's patches, or for a crowd `faces` patches of 80–130 px (a class or an
/// audience seen from the front), every other one mirrored.
fn patches(faces: usize) -> Result<Vec<Patch>, Box<dyn std::error::Error>> {
    let img = image::open(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/astronaut.png"))?.into_rgb8();
    // Head with some margin: x 140..310, y 20..190 of the 512x512 photo.
    let head = image::imageops::crop_imm(&img, 140, 20, 170, 170).to_image();
    let mut out = Vec::new();
    let sizes: Vec<(usize, bool)> = if faces == 3 {
        vec![(200, false), (140, true), (100, false)]
    } else {
        (0..faces).map(|i| (80 + (i * 37) % 51, i % 2 == 1)).collect()
    };
    for (side, mirror) in sizes {
        let mut p = image::imageops::resize(&head, side as u32, side as u32, image::imageops::FilterType::Triangle);
        if mirror {
            p = image::imageops::flip_horizontal(&p);
        }
        out.push(Patch { side, rgb: p.into_raw() });
    }
    Ok(out)
}

/// Renders frame `n` into `frame` (RGB, W x H).
fn render(n: u64, patches: &[Patch], frame: &mut [u8]) {
    let t = n as f32 / FPS as f32;
    for y in 0..H {
        for x in 0..W {
            let p = (y * W + x) * 3;
            frame[p] = (40.0 + 30.0 * ((x as f32 / 200.0 + t * 0.3).sin())) as u8;
            frame[p + 1] = (60 + y * 60 / H) as u8;
            frame[p + 2] = (90.0 + 20.0 * ((y as f32 / 150.0 - t * 0.2).cos())) as u8;
        }
    }
    let crowd = patches.len() != 3;
    let columns = (patches.len() as f32).sqrt().ceil().max(1.0) as usize + 1;
    let rows = patches.len().div_ceil(columns).max(1);
    for (i, patch) in patches.iter().enumerate() {
        let phase = i as f32 * 2.1;
        let (cx, cy) = if crowd {
            // A grid of seats, each face swaying a little in its cell.
            let (cell_w, cell_h) = (W as f32 / columns as f32, H as f32 / rows as f32);
            (
                cell_w * ((i % columns) as f32 + 0.5) + 0.15 * cell_w * (t * 0.9 + phase).sin(),
                cell_h * ((i / columns) as f32 + 0.5) + 0.1 * cell_h * (t * 0.6 + phase).cos(),
            )
        } else {
            (W as f32 * (0.2 + 0.3 * i as f32) + 120.0 * (t * 0.7 + phase).sin(), H as f32 * 0.5 + 150.0 * (t * 0.5 + phase).cos())
        };
        let x0 = (cx - patch.side as f32 / 2.0) as isize;
        let y0 = (cy - patch.side as f32 / 2.0) as isize;
        for py in 0..patch.side {
            let y = y0 + py as isize;
            if y < 0 || y >= H as isize {
                continue;
            }
            for px in 0..patch.side {
                let x = x0 + px as isize;
                if x < 0 || x >= W as isize {
                    continue;
                }
                let d = (y as usize * W + x as usize) * 3;
                let s = (py * patch.side + px) * 3;
                frame[d..d + 3].copy_from_slice(&patch.rgb[s..s + 3]);
            }
        }
    }
}

/// Waits for the end of the stream; an error message on the bus is returned as an error.
fn wait_for_eos(pipeline: &gst::Pipeline) -> Result<(), Box<dyn std::error::Error>> {
    let bus = pipeline.bus().ok_or("no bus")?;
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => return Err(format!("{} {:?}", e.error(), e.debug()).into()),
            _ => {}
        }
    }
    Ok(())
}

/// Pushes `frames` rendered frames into `pipeline`'s `appsrc name=src` and waits for EOS.
fn run(pipeline: &gst::Pipeline, frames: u64, faces: usize, mut on_frame: impl FnMut(u64)) -> Result<(), Box<dyn std::error::Error>> {
    let src = pipeline.by_name("src").and_then(|s| s.downcast::<gst_app::AppSrc>().ok()).ok_or("no appsrc")?;
    let info =
        gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, W as u32, H as u32).fps(gst::Fraction::new(FPS as i32, 1)).build()?;
    src.set_caps(Some(&info.to_caps()?));
    src.set_format(gst::Format::Time);
    src.set_property("block", true);
    let patches = patches(faces)?;
    pipeline.set_state(gst::State::Playing)?;
    let mut frame = vec![0u8; W * H * 3];
    for n in 0..frames {
        render(n, &patches, &mut frame);
        let mut buffer = gst::Buffer::from_slice(frame.clone());
        {
            let b = buffer.get_mut().ok_or("buffer")?;
            b.set_pts(gst::ClockTime::from_nseconds(n * 1_000_000_000 / FPS));
            b.set_duration(gst::ClockTime::from_nseconds(1_000_000_000 / FPS));
        }
        src.push_buffer(buffer)?;
        on_frame(n);
    }
    src.end_of_stream()?;
    wait_for_eos(pipeline)?;
    pipeline.set_state(gst::State::Null)?;
    Ok(())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok())))
        .unwrap_or(0)
}

/// Per-minute soak figures: RSS (KiB) and the element's frame times (ms) sorted.
struct Minute {
    rss_kib: u64,
    frames: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Per-frame time inside the element (sink pad to src pad), collected by pad probes.
fn time_element(mm: &gst::Element) -> Result<std::sync::Arc<std::sync::Mutex<Vec<f64>>>, Box<dyn std::error::Error>> {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    // The element works in place on the streaming thread: time from its sink pad to its src pad.
    let entered: Arc<Mutex<Option<Instant>>> = Arc::default();
    let times: Arc<Mutex<Vec<f64>>> = Arc::default();
    let e = entered.clone();
    mm.static_pad("sink").ok_or("sink pad")?.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        *e.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        gst::PadProbeReturn::Ok
    });
    let t = times.clone();
    mm.static_pad("src").ok_or("src pad")?.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        if let Some(start) = entered.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.lock().unwrap_or_else(|p| p.into_inner()).push(start.elapsed().as_secs_f64() * 1e3);
        }
        gst::PadProbeReturn::Ok
    });
    Ok(times)
}

/// The clip once through `moodmirror PROPERTIES` as fast as it goes: frames/s and the
/// element's per-frame time p50/p95/p99/max.
fn frames(clip: &str, properties: &str) -> Result<(), Box<dyn std::error::Error>> {
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{clip}\" ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! moodmirror name=mm {properties} ! fakesink sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    let mm = pipeline.by_name("mm").ok_or("no moodmirror")?;
    let times = time_element(&mm)?;
    let started = std::time::Instant::now();
    pipeline.set_state(gst::State::Playing)?;
    wait_for_eos(&pipeline)?;
    let seconds = started.elapsed().as_secs_f64();
    pipeline.set_state(gst::State::Null)?;
    let mut t = std::mem::take(&mut *times.lock().unwrap_or_else(|p| p.into_inner()));
    t.sort_by(f64::total_cmp);
    println!(
        "moodmirror {properties}: {} frames, {:.1} frames/s; per frame in the element p50 {:.2} / p95 {:.2} / p99 {:.2} / max {:.2} ms",
        t.len(),
        t.len() as f64 / seconds,
        percentile(&t, 0.5),
        percentile(&t, 0.95),
        percentile(&t, 0.99),
        t.last().copied().unwrap_or(0.0)
    );
    Ok(())
}

fn soak(clip: &str, seconds: u64, fast: bool) -> Result<bool, Box<dyn std::error::Error>> {
    use std::time::{Duration, Instant};
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{clip}\" ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! moodmirror name=mm \
         ! fakesink sync={}",
        !fast
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    let mm = pipeline.by_name("mm").ok_or("no moodmirror")?;
    let times = time_element(&mm)?;
    pipeline.set_state(gst::State::Paused)?;
    let bus = pipeline.bus().ok_or("no bus")?;
    // Wait for preroll, then loop with segment seeks (no flush between rounds).
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(30)) {
        match msg.view() {
            gst::MessageView::AsyncDone(_) => break,
            gst::MessageView::Error(e) => return Err(format!("{} {:?}", e.error(), e.debug()).into()),
            _ => {}
        }
    }
    pipeline.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::SEGMENT, gst::ClockTime::ZERO)?;
    pipeline.set_state(gst::State::Playing)?;
    let started = Instant::now();
    let mut minute_started = Instant::now();
    let mut minutes: Vec<Minute> = Vec::new();
    let mut loops = 0u64;
    println!("soak: {clip} for {seconds} s{}", if fast { " (as fast as it goes)" } else { "" });
    println!("{:>6} {:>10} {:>8} {:>8} {:>8} {:>8} {:>6}", "minute", "RSS MiB", "frames", "p50 ms", "p99 ms", "max ms", "loops");
    loop {
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) {
            match msg.view() {
                gst::MessageView::SegmentDone(_) => {
                    loops += 1;
                    pipeline.seek_simple(gst::SeekFlags::SEGMENT, gst::ClockTime::ZERO)?;
                }
                gst::MessageView::Error(e) => return Err(format!("{} {:?}", e.error(), e.debug()).into()),
                gst::MessageView::Eos(_) => return Err("unexpected EOS while looping".into()),
                _ => {}
            }
        }
        let done = started.elapsed() >= Duration::from_secs(seconds);
        // A last window under half a minute is too short to compare with the others.
        let window = minute_started.elapsed();
        if window >= Duration::from_secs(60) || (done && window >= Duration::from_secs(30)) {
            minute_started = Instant::now();
            let mut t = std::mem::take(&mut *times.lock().unwrap_or_else(|p| p.into_inner()));
            t.sort_by(f64::total_cmp);
            let m = Minute {
                rss_kib: rss_kib(),
                frames: t.len(),
                p50: percentile(&t, 0.5),
                p99: percentile(&t, 0.99),
                max: t.last().copied().unwrap_or(0.0),
            };
            println!(
                "{:>6} {:>10.1} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>6}",
                minutes.len() + 1,
                m.rss_kib as f64 / 1024.0,
                m.frames,
                m.p50,
                m.p99,
                m.max,
                loops
            );
            minutes.push(m);
        }
        if done {
            break;
        }
    }
    pipeline.set_state(gst::State::Null)?;
    let (Some(first), Some(last)) = (minutes.first(), minutes.last()) else {
        return Err("no measurement".into());
    };
    let peak_growth = minutes.iter().map(|m| m.rss_kib).max().unwrap_or(0) as f64 - first.rss_kib as f64;
    let growth_mib = (last.rss_kib as f64 - first.rss_kib as f64) / 1024.0;
    let slowdown = if first.p50 > 0.0 { last.p50 / first.p50 } else { 1.0 };
    println!(
        "RSS after the first minute: {:+.2} MiB at the end, {:+.2} MiB at the peak; median frame time {:.2} -> {:.2} ms ({slowdown:.2}x)",
        growth_mib,
        peak_growth / 1024.0,
        first.p50,
        last.p50
    );
    let ok = growth_mib <= 2.0 && slowdown <= 1.5;
    println!("{}", if ok { "soak: PASS" } else { "soak: FAIL (RSS growth > 2 MiB or median frame time > 1.5x)" });
    Ok(ok)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    gst::init()?;
    gstmoodmirror::plugin_register_static()?;
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("make") => {
            let out = args.get(2).ok_or("usage: make OUT.mp4 [FRAMES] [FACES]")?;
            let frames = args.get(3).and_then(|f| f.parse().ok()).unwrap_or(300);
            let faces = args.get(4).and_then(|f| f.parse().ok()).unwrap_or(3);
            let pipeline = gst::parse::launch(&format!(
                "appsrc name=src ! videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset=fast bitrate=4000 \
                 key-int-max=60 ! video/x-h264,profile=high ! mp4mux ! filesink location=\"{out}\""
            ))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "not a pipeline")?;
            run(&pipeline, frames, faces, |_| {})?;
            println!("wrote {out}: {frames} frames of {faces} faces, {W}x{H} at {FPS} fps");
        }
        Some("memory") => {
            let frames: u64 = args.get(2).and_then(|f| f.parse().ok()).unwrap_or(10_000);
            let pipeline = gst::parse::launch(
                "appsrc name=src ! videoconvert ! video/x-raw,format=I420 ! moodmirror draw=false ! fakesink sync=false",
            )?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "not a pipeline")?;
            let mut samples = Vec::new();
            let step = (frames / 10).max(1);
            run(&pipeline, frames, 3, |n| {
                if n % step == step - 1 {
                    samples.push((n + 1, rss_kib()));
                }
            })?;
            let peak = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
                .unwrap_or_default();
            for (n, kib) in &samples {
                println!("after {n:>6} frames: RSS {:>7.1} MiB", *kib as f64 / 1024.0);
            }
            println!("peak {}", peak.trim());
            if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
                println!("growth from {} to {} frames: {:+.1} MiB", first.0, last.0, (last.1 as f64 - first.1 as f64) / 1024.0);
            }
        }
        Some("frames") => {
            let clip = args.get(2).ok_or("usage: frames CLIP.mp4 [PROPERTIES…]")?;
            frames(clip, &args[3..].join(" "))?;
        }
        Some("soak") => {
            let clip = args.get(2).ok_or("usage: soak CLIP.mp4 [SECONDS] [--fast]")?;
            let seconds = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3600);
            let fast = args.iter().any(|a| a == "--fast");
            if !soak(clip, seconds, fast)? {
                std::process::exit(1);
            }
        }
        _ => return Err("usage: bench_video make OUT.mp4 [FRAMES] | memory [FRAMES] | soak CLIP.mp4 [SECONDS] [--fast]".into()),
    }
    Ok(())
}
