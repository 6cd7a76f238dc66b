//! Property-based fuzzing of every reader of outside input: emotion weights (safetensors and
//! their metadata), the legacy torch reader, the Haar cascade XML, the data set readers (class
//! folders' images, fer2013.csv, the originals' labels.csv) and image decoding. Each case must
//! end with a result or an error: no panic, no hang (a watchdog per case), bounded memory (a
//! counting allocator). CI runs a bounded number of cases; `scripts/tools/fuzz.sh` runs a million.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;

/// Counts live heap bytes and the peak, to show no input makes a reader allocate wildly.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Memory no single reader may reach on these small inputs (the embedded model is 7 MB).
const MEMORY_LIMIT: usize = 1 << 30;
const CASE_TIME_LIMIT: Duration = Duration::from_secs(20);

/// Runs `f` on another thread: a panic or a hang fails the case, and so does a peak of live
/// memory over [`MEMORY_LIMIT`].
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(result);
    });
    let result = match rx.recv_timeout(CASE_TIME_LIMIT) {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => panic!(
            "{what}: panicked: {}",
            e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
        ),
        Err(_) => panic!("{what}: no answer within {CASE_TIME_LIMIT:?} (hang)"),
    };
    let peak = PEAK.load(Ordering::Relaxed);
    assert!(peak < MEMORY_LIMIT, "{what}: {peak} bytes live at the peak");
    result
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

/// Seed bytes changed the ways damaged files are: bytes overwritten, a cut, bytes inserted.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len().max(1);
    (proptest::collection::vec((0..len, any::<u8>()), 0..8), 0..=len, proptest::collection::vec(any::<u8>(), 0..16), 0..=len).prop_map(
        move |(flips, cut, insert, at)| {
            let mut bytes = seed.clone();
            for (i, b) in flips {
                if i < bytes.len() {
                    bytes[i] = b;
                }
            }
            bytes.truncate(cut.max(1));
            let at = at.min(bytes.len());
            bytes.splice(at..at, insert);
            bytes
        },
    )
}

fn small_safetensors() -> Vec<u8> {
    let data: Vec<u8> = [1.0f32, -2.0, 0.5, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &data).expect("view");
    let meta = std::collections::HashMap::from([
        ("arch".to_string(), "vgg".to_string()),
        ("logit_bias".to_string(), "0,0,0,0,0,0,0".to_string()),
        ("view_scale".to_string(), "1.0".to_string()),
        ("input_preprocess".to_string(), "standardize".to_string()),
    ]);
    safetensors::serialize(vec![("stage0.0.conv.weight".to_string(), view)], Some(meta)).expect("serialize")
}

fn png_48() -> Vec<u8> {
    let img = image::GrayImage::from_fn(48, 48, |x, y| image::Luma([(x * 5 + y * 3) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(img).write_to(&mut out, image::ImageFormat::Png).expect("png");
    out.into_inner()
}

fn jpeg_48() -> Vec<u8> {
    let img = image::GrayImage::from_fn(48, 48, |x, y| image::Luma([(x * 5 + y * 3) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(img).write_to(&mut out, image::ImageFormat::Jpeg).expect("jpeg");
    out.into_inner()
}

const LABELS_CSV: &str =
    "file,split,fer2013_label,fer2013_jpeg,match_rmse,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n\
a.png,train,happy,x.jpg,4.0,1,8,0,0,0,0,0,0,1,0\n\
b.png,val,sad,x.jpg,4.0,5,0,0,5,0,0,0,0,0,0\n";

/// Writes `csv` beside two readable 48x48 images and loads it; any result but a panic is fine.
fn load_labels_csv(csv: Vec<u8>) -> bool {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("a.png"), png_48()).expect("png");
    std::fs::write(dir.path().join("b.png"), png_48()).expect("png");
    let path = dir.path().join("labels.csv");
    std::fs::write(&path, csv).expect("csv");
    let spec = path.display().to_string();
    let a = moodmirror_train::dataset::Dataset::load(&spec).is_ok();
    let b = moodmirror_train::dataset::Dataset::load_for(&spec, moodmirror_train::dataset::Target::FerPlus).is_ok();
    a || b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn emotion_weights_from_damaged_or_random_bytes(bytes in prop_oneof![mutated(small_safetensors()), proptest::collection::vec(any::<u8>(), 0..512)]) {
        bounded("safetensors", move || {
            let _ = moodmirror::emotion::read_metadata(&bytes);
            let _ = moodmirror::emotion::check_finite_tensors(&bytes);
            let _ = moodmirror::emotion::EmotionClassifier::from_bytes(&bytes, "fuzz", &candle_core::Device::Cpu);
        });
    }

    #[test]
    fn legacy_torch_files_from_damaged_or_random_bytes(bytes in prop_oneof![
        mutated(include_bytes!("../../tests/fixtures/legacy_small.pt").to_vec()),
        proptest::collection::vec(any::<u8>(), 0..512),
    ]) {
        bounded("legacy torch", move || {
            let _ = moodmirror_train::convert::torch_legacy::read_state_dict(&bytes);
        });
    }

    #[test]
    fn haar_cascade_xml_from_damaged_text(bytes in mutated(HAAR_SEED.as_bytes().to_vec())) {
        bounded("haar xml", move || {
            let text = String::from_utf8_lossy(&bytes).to_string();
            let _ = moodmirror::detect::haar::HaarCascade::parse(&text);
        });
    }

    #[test]
    fn images_from_damaged_or_random_bytes(bytes in prop_oneof![mutated(png_48()), mutated(jpeg_48()), proptest::collection::vec(any::<u8>(), 0..256)]) {
        bounded("image", move || {
            let _ = moodmirror::image_io::decode_bytes(&bytes);
        });
    }

    #[test]
    fn labels_csv_from_damaged_text(bytes in mutated(LABELS_CSV.as_bytes().to_vec())) {
        bounded("labels csv", move || load_labels_csv(bytes));
    }

    #[test]
    fn kaggle_csv_from_damaged_text(bytes in mutated(kaggle_seed().into_bytes())) {
        bounded("fer2013 csv", move || {
            let dir = tempfile::tempdir().expect("tmp");
            let path = dir.path().join("fer2013.csv");
            std::fs::write(&path, bytes).expect("csv");
            let _ = moodmirror_train::dataset::Dataset::load(&format!("{}:Training", path.display()));
        });
    }
}

fn kaggle_seed() -> String {
    let pixels: Vec<String> = (0..48 * 48).map(|i| (i % 256).to_string()).collect();
    format!("emotion,pixels,Usage\n3,{},Training\n", pixels.join(" "))
}

/// A one-stage, one-feature cascade in OpenCV's format.
const HAAR_SEED: &str = r#"<?xml version="1.0"?>
<opencv_storage>
<cascade type_id="opencv-cascade-classifier"><stageType>BOOST</stageType>
  <featureType>HAAR</featureType>
  <height>24</height>
  <width>24</width>
  <stageParams><maxWeakCount>1</maxWeakCount></stageParams>
  <featureParams><maxCatCount>0</maxCatCount></featureParams>
  <stageNum>1</stageNum>
  <stages>
    <_>
      <maxWeakCount>1</maxWeakCount>
      <stageThreshold>-1.0</stageThreshold>
      <weakClassifiers>
        <_>
          <internalNodes>0 -1 0 -3.1511999666690826e-02</internalNodes>
          <leafValues>2.0875380039215088e+00 -2.2172100543975830e+00</leafValues></_></weakClassifiers></_></stages>
  <features>
    <_>
      <rects>
        <_>6 4 12 9 -1.</_>
        <_>6 7 12 3 3.</_></rects></_></features></cascade>
</opencv_storage>
"#;

#[test]
fn the_seeds_themselves_load() {
    assert!(moodmirror::detect::haar::HaarCascade::parse(HAAR_SEED).is_ok(), "the Haar seed is a valid cascade");
    assert!(moodmirror::image_io::decode_bytes(&png_48()).is_ok());
    assert!(moodmirror::image_io::decode_bytes(&jpeg_48()).is_ok());
    assert!(moodmirror_train::convert::torch_legacy::read_state_dict(include_bytes!("../../tests/fixtures/legacy_small.pt")).is_ok());
    assert!(moodmirror::emotion::read_metadata(&small_safetensors()).is_ok());
    assert!(load_labels_csv(LABELS_CSV.as_bytes().to_vec()));
}
