//! Benchmark material for moodmirror on video.
//!
//!     cargo run --release --example bench_video -- make OUT.mp4 [FRAMES]   # 1280x720 30 fps H.264
//!     cargo run --release --example bench_video -- memory [FRAMES]         # RSS over a long run
//!
//! The clip shows three faces cut from NASA's public-domain astronaut portrait
//! (tests/fixtures/astronaut.png), at three sizes, one mirrored, moving on smooth paths over a
//! slowly changing background. `memory` feeds the same frames straight into moodmirror
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

fn patches() -> Result<Vec<Patch>, Box<dyn std::error::Error>> {
    let img = image::open(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/astronaut.png"))?.into_rgb8();
    // Head with some margin: x 140..310, y 20..190 of the 512x512 photo.
    let head = image::imageops::crop_imm(&img, 140, 20, 170, 170).to_image();
    let mut out = Vec::new();
    for (side, mirror) in [(200usize, false), (140, true), (100, false)] {
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
    for (i, patch) in patches.iter().enumerate() {
        let phase = i as f32 * 2.1;
        let cx = W as f32 * (0.2 + 0.3 * i as f32) + 120.0 * (t * 0.7 + phase).sin();
        let cy = H as f32 * 0.5 + 150.0 * (t * 0.5 + phase).cos();
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

/// Pushes `frames` rendered frames into `pipeline`'s `appsrc name=src` and waits for EOS.
fn run(pipeline: &gst::Pipeline, frames: u64, mut on_frame: impl FnMut(u64)) -> Result<(), Box<dyn std::error::Error>> {
    let src = pipeline
        .by_name("src")
        .and_then(|s| s.downcast::<gst_app::AppSrc>().ok())
        .ok_or("no appsrc")?;
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, W as u32, H as u32)
        .fps(gst::Fraction::new(FPS as i32, 1))
        .build()?;
    src.set_caps(Some(&info.to_caps()?));
    src.set_format(gst::Format::Time);
    src.set_property("block", true);
    let patches = patches()?;
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
    let bus = pipeline.bus().ok_or("no bus")?;
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => return Err(format!("{} {:?}", e.error(), e.debug()).into()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    Ok(())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    gst::init()?;
    gstmoodmirror::plugin_register_static()?;
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("make") => {
            let out = args.get(2).ok_or("usage: make OUT.mp4 [FRAMES]")?;
            let frames = args.get(3).and_then(|f| f.parse().ok()).unwrap_or(300);
            let pipeline = gst::parse::launch(&format!(
                "appsrc name=src ! videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset=fast bitrate=4000 \
                 key-int-max=60 ! video/x-h264,profile=high ! mp4mux ! filesink location=\"{out}\""
            ))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "not a pipeline")?;
            run(&pipeline, frames, |_| {})?;
            println!("wrote {out}: {frames} frames, {W}x{H} at {FPS} fps");
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
            run(&pipeline, frames, |n| {
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
                println!(
                    "growth from {} to {} frames: {:+.1} MiB",
                    first.0,
                    last.0,
                    (last.1 as f64 - first.1 as f64) / 1024.0
                );
            }
        }
        _ => return Err("usage: bench_video make OUT.mp4 [FRAMES] | memory [FRAMES]".into()),
    }
    Ok(())
}
