//! Training and evaluation end to end on small data made here: both dataset formats, bad input,
//! a short training run whose loss must fall, resume, `evaluate` and its report.

use std::path::Path;

use candle_core::Device;
use moodmirror::emotion::{EmotionClassifier, CLASS_NAMES};
use moodmirror_train::dataset::Dataset;
use moodmirror_train::distill::{OnlineTeachers, TeacherTargets};
use moodmirror_train::evaluate::Tta;
use moodmirror_train::train::{self, TrainArgs};

/// A 48x48 image whose pattern depends on the class: horizontal stripes of class-dependent
/// period, with noise. Easy to learn, impossible without looking at the pixels.
fn pattern(class: usize, seed: usize) -> Vec<u8> {
    let mut state = (seed as u32).wrapping_mul(2_654_435_761).wrapping_add(class as u32);
    (0..48 * 48)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let y = i / 48;
            let stripe = if (y / (class + 2)).is_multiple_of(2) { 200 } else { 50 };
            (stripe + (state % 40) as i32 - 20).clamp(0, 255) as u8
        })
        .collect()
}

fn write_folders(root: &Path, per_class: usize, upper_case: bool) {
    for (c, name) in CLASS_NAMES.iter().enumerate() {
        let dir = root.join(if upper_case { name.to_uppercase() } else { name.to_string() });
        std::fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..per_class {
            let img = image::GrayImage::from_raw(48, 48, pattern(c, i)).expect("image");
            img.save(dir.join(format!("{i}.png"))).expect("save");
        }
    }
}

#[test]
fn loads_class_folders_any_case_and_reports_bad_images() {
    let dir = tempfile::tempdir().expect("tmp");
    write_folders(dir.path(), 3, true);
    // One unreadable file, one image of the wrong size.
    std::fs::write(dir.path().join("HAPPY/broken.png"), b"not a png").expect("write");
    image::GrayImage::from_pixel(96, 64, image::Luma([7])).save(dir.path().join("SAD/big.png")).expect("save");
    let data = Dataset::load(dir.path().to_str().expect("path")).expect("load");
    assert_eq!(data.len(), 7 * 3 + 1);
    assert_eq!(data.skipped, 1);
    assert_eq!(data.resized, 1);
    let counts = data.class_counts();
    assert_eq!(counts[4], 4, "sad has the resized extra image");
    // Labels follow FER2013 order whatever the folder case.
    let first_angry = (0..data.len()).find(|&i| data.labels[i] == 0).expect("angry");
    assert_eq!(data.image(first_angry), pattern(0, 0).as_slice());
}

#[test]
fn a_subset_of_the_classes_and_symlinked_class_folders_load() {
    let dir = tempfile::tempdir().expect("tmp");
    write_folders(dir.path(), 1, false);
    // Six emotions (no disgust), one of them a link to a folder elsewhere.
    std::fs::remove_dir_all(dir.path().join("disgust")).expect("rm");
    let elsewhere = tempfile::tempdir().expect("tmp");
    std::fs::rename(dir.path().join("happy"), elsewhere.path().join("happy")).expect("move");
    std::os::unix::fs::symlink(elsewhere.path().join("happy"), dir.path().join("happy")).expect("symlink");
    let data = Dataset::load(dir.path().to_str().expect("path")).expect("a subset loads");
    let counts = data.class_counts();
    assert_eq!(counts[1], 0, "no disgust");
    assert!(counts[3] > 0, "the linked happy folder is read: {counts:?}");
    // Scored on the classes present: the report names the absent one.
    let probabilities: Vec<[f32; 7]> =
        data.labels.iter().map(|&l| std::array::from_fn(|c| if c == l as usize { 0.9 } else { 0.1 / 6.0 })).collect();
    let report = moodmirror_train::evaluate::Report::compute(&probabilities, &data.labels);
    assert_eq!(report.absent_classes(), ["disgust"]);
    assert!((report.balanced_accuracy - 1.0).abs() < 1e-9, "macro over the six present: {}", report.balanced_accuracy);
    assert!(report.to_text().contains("absent from the data: disgust"));
}

#[test]
fn a_folder_without_class_folders_is_refused_naming_them() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("contempt")).expect("mkdir");
    let err = Dataset::load(dir.path().to_str().expect("path")).expect_err("must fail").to_string();
    assert!(err.contains("contempt") && err.contains("angry, disgust, fear"), "{err}");
}

#[test]
fn loads_kaggle_csv_by_usage_and_skips_bad_rows() {
    let dir = tempfile::tempdir().expect("tmp");
    let csv = dir.path().join("fer2013.csv");
    let pixels = |c: usize, i: usize| pattern(c, i).iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" ");
    let mut text = String::from("emotion,pixels,Usage\n");
    text += &format!("3,{},Training\n", pixels(3, 0));
    text += &format!("6,{},PublicTest\n", pixels(6, 1));
    text += &format!("0,{},PublicTest\n", pixels(0, 2));
    text += "4,1 2 3,PublicTest\n"; // wrong pixel count
    text += &format!("9,{},PublicTest\n", pixels(1, 3)); // no such class
    std::fs::write(&csv, text).expect("write");
    let spec = format!("{}:PublicTest", csv.display());
    let data = Dataset::load(&spec).expect("load");
    assert_eq!(data.labels, vec![6, 0]);
    assert_eq!(data.skipped, 2);
    assert_eq!(data.image(0), pattern(6, 1).as_slice());
    let all = Dataset::load(csv.to_str().expect("path")).expect("load all");
    assert_eq!(all.len(), 3);
}

fn args(train_dir: &Path, out: &Path, epochs: usize) -> TrainArgs {
    TrainArgs {
        train: train_dir.display().to_string(),
        val: train_dir.display().to_string(),
        out: out.to_path_buf(),
        arch: moodmirror::emotion::Arch::Vgg,
        epochs,
        batch: 14,
        lr: 3e-3,
        optimizer: moodmirror_train::optim::OptimizerKind::Adamw,
        weight_decay: None,
        label_smoothing: 0.0,
        class_weight_power: 0.5,
        warmup_epochs: 1,
        patience: 100,
        resume: None,
        seed: 7,
        report: Some(out.parent().expect("dir").join("report")),
        limit: None,
        quiet: true,
        device: moodmirror_train::train::ComputeDevice::Cpu,
        conv_precision: moodmirror_train::train::ConvPrecision::Bf16,
        init: None,
        start_epoch: None,
        teacher: Vec::new(),
        teacher_tta: moodmirror_train::evaluate::Tta::TenCrop,
        distill_weight: 0.5,
        teacher_online: false,
        mixup: 0.0,
        target: moodmirror_train::train::TargetKind::Fer2013,
        target_mix: 0.5,
        preprocess: moodmirror::emotion::Preprocess::None,
        no_camera_augment: true,
        zoom_out: 0.0,
        low_res: 0.0,
        sharpen: 0.0,
    }
}

const VOTE_HEADER: &str =
    "file,split,fer2013_label,fer2013_jpeg,match_rmse,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF";

/// FER+ votes (neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown,
/// NF) that put `votes` of ten on class `c` and the rest on neutral (or, for neutral, on sad).
fn votes_for(c: usize, votes: u32) -> [u32; 10] {
    // Our class order (angry … neutral) → the CSV's vote column.
    let column = [4, 5, 6, 1, 3, 2, 0][c];
    let mut v = [0u32; 10];
    v[column] = votes;
    v[if column == 0 { 3 } else { 0 }] += 10 - votes;
    v
}

/// The originals' layout: `root/{train,val}/*.png` and `root/labels.csv`, `per_class` images
/// per class and split; FER+ agrees with FER2013 on 8 of 10 votes.
fn write_labels_csv(root: &Path, per_class: usize) -> std::path::PathBuf {
    let mut csv = String::from(VOTE_HEADER) + "\n";
    for split in ["train", "val"] {
        std::fs::create_dir_all(root.join(split)).expect("mkdir");
        for (c, name) in CLASS_NAMES.iter().enumerate() {
            for i in 0..per_class {
                let file = format!("{split}/{name}{i}.png");
                let seed = i + if split == "val" { 1000 } else { 0 };
                image::GrayImage::from_raw(48, 48, pattern(c, seed)).expect("image").save(root.join(&file)).expect("save");
                let v = votes_for(c, 8).map(|n| n.to_string()).join(",");
                csv += &format!("{file},{split},{name},x.jpg,4.0,{v}\n");
            }
        }
    }
    let path = root.join("labels.csv");
    std::fs::write(&path, csv).expect("write");
    path
}

#[test]
fn a_labels_csv_with_a_byte_order_mark_loads() {
    let dir = tempfile::tempdir().expect("tmp");
    let csv = write_labels_csv(dir.path(), 1);
    let plain = Dataset::load(&format!("{}:train", csv.display())).expect("plain");
    let text = std::fs::read_to_string(&csv).expect("read");
    std::fs::write(&csv, format!("\u{feff}{text}")).expect("write");
    let with_bom = Dataset::load(&format!("{}:train", csv.display())).expect("with a BOM");
    assert_eq!(with_bom.labels, plain.labels);
    // A file listed twice counts once.
    let first_row = text.lines().nth(1).expect("a row").to_string();
    std::fs::write(&csv, format!("{text}{first_row}\n")).expect("write");
    let doubled = Dataset::load(&format!("{}:train", csv.display())).expect("duplicate row");
    assert_eq!(doubled.labels, plain.labels, "the duplicate is counted once");
}

#[test]
fn labels_csv_gives_fer2013_labels_ferplus_majorities_and_vote_targets() {
    use moodmirror_train::dataset::{LabelSet, Target};
    let dir = tempfile::tempdir().expect("tmp");
    let csv = write_labels_csv(dir.path(), 2);
    // Extra rows: a tie (5 happy, 5 neutral) and a not-a-face majority, labelled sad by FER2013.
    let mut text = std::fs::read_to_string(&csv).expect("read");
    image::GrayImage::from_raw(48, 48, pattern(4, 7)).expect("image").save(dir.path().join("train/tie.png")).expect("save");
    image::GrayImage::from_raw(48, 48, pattern(4, 8)).expect("image").save(dir.path().join("train/nf.png")).expect("save");
    text += "train/tie.png,train,sad,x.jpg,4.0,5,5,0,0,0,0,0,0,0,0\n";
    text += "train/nf.png,train,sad,x.jpg,4.0,1,0,0,2,0,0,0,0,0,7\n";
    std::fs::write(&csv, text).expect("write");

    let spec = format!("{}:train", csv.display());
    let fer = Dataset::load(&spec).expect("load fer2013 target");
    assert_eq!(fer.len(), 7 * 2 + 2);
    assert!(fer.targets.is_empty(), "FER2013 labels are one-hot");
    assert_eq!(fer.label_sets(), vec![LabelSet::Fer2013, LabelSet::Ferplus]);
    let (all, fer_labels) = fer.scored(LabelSet::Fer2013).expect("fer2013 labels");
    assert_eq!(all.len(), 16);
    assert_eq!(&fer_labels[14..], &[4, 4]);
    // FER+ scores the 14 clear images, leaving out the tie and the not-a-face majority.
    let (scored, plus) = fer.scored(LabelSet::Ferplus).expect("ferplus labels");
    assert_eq!(scored.len(), 14);
    assert_eq!(plus, fer_labels[..14].to_vec(), "8 of 10 votes agree with FER2013");

    let votes = Dataset::load_for(&spec, Target::FerPlus).expect("load ferplus target");
    assert_eq!(votes.len(), 15, "the not-a-face image is left out of training");
    assert_eq!(votes.unusable, 1);
    let happy = votes.labels.iter().position(|&l| l == 3).expect("a happy image");
    let row = votes.target_row(happy);
    assert!((row[3] - 0.8).abs() < 1e-6 && (row[6] - 0.2).abs() < 1e-6, "{row:?}");
    let tie = votes.target_row(14);
    assert!((tie[3] - 0.5).abs() < 1e-6 && (tie[6] - 0.5).abs() < 1e-6, "{tie:?}");
    let mix = Dataset::load_for(&spec, Target::Mix { share: 0.5 }).expect("mix");
    let row = mix.target_row(14); // FER2013 says sad, the votes say happy/neutral
    assert!((row[4] - 0.5).abs() < 1e-6 && (row[3] - 0.25).abs() < 1e-6, "{row:?}");
    // The directory works as well as the file; FER+ targets need the votes.
    assert_eq!(Dataset::load(&format!("{}", dir.path().display())).expect("dir").len(), 7 * 2 * 2 + 2);
    let folders = dir.path().join("folders");
    write_folders(&folders, 1, false);
    let err = Dataset::load_for(folders.to_str().expect("path"), Target::FerPlus).expect_err("no votes").to_string();
    assert!(err.contains("labels.csv"), "{err}");
}

#[test]
fn bad_labels_csv_rows_are_errors_naming_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let csv = write_labels_csv(dir.path(), 1);
    let good = std::fs::read_to_string(&csv).expect("read");
    let cases = [
        ("train/gone.png,train,happy,x.jpg,4.0,0,10,0,0,0,0,0,0,0,0", "gone.png"),
        ("train/angry0.png,train,happy,x.jpg,4.0,0,10,0,0,0,0,0,0,0", "fields"),
        ("train/angry0.png,train,happy,x.jpg,4.0,0,0,0,0,0,0,0,0,0,0", "sum to 0"),
        ("train/angry0.png,train,bored,x.jpg,4.0,0,10,0,0,0,0,0,0,0,0", "unknown class 'bored'"),
        ("train/angry0.png,train,happy,x.jpg,4.0,0,ten,0,0,0,0,0,0,0,0", "not a whole number"),
    ];
    for (row, expected) in cases {
        std::fs::write(&csv, format!("{good}{row}\n")).expect("write");
        let err = format!("{:#}", Dataset::load(&format!("{}:train", csv.display())).expect_err(row));
        assert!(err.contains(expected), "{row}: {err}");
        if expected != "gone.png" {
            assert!(err.contains("labels.csv:16"), "the line is named: {err}");
        }
    }
}

#[test]
fn training_on_vote_targets_with_standardized_crops_records_its_contract() {
    let dir = tempfile::tempdir().expect("tmp");
    let csv = write_labels_csv(dir.path(), 6);
    let out = dir.path().join("plus.safetensors");
    let mut a = args(dir.path(), &out, 3);
    a.train = format!("{}:train", csv.display());
    a.val = format!("{}:val", csv.display());
    a.target = moodmirror_train::train::TargetKind::Ferplus;
    a.preprocess = moodmirror::emotion::Preprocess::Standardize;
    a.no_camera_augment = false;
    train::run(&a, "test").expect("train on votes");
    let h = history(dir.path());
    assert!(h[2]["train_loss"].as_f64() < h[0]["train_loss"].as_f64(), "{h:?}");
    let model = EmotionClassifier::from_file(&out, &Device::Cpu).expect("load");
    assert_eq!(model.preprocess, moodmirror::emotion::Preprocess::Standardize);
    assert_eq!(model.metadata.get("val_labels").map(String::as_str), Some("ferplus"));
    // evaluate scores both label sets and writes both into report.json.
    let report_dir = dir.path().join("eval");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_moodmirror"))
        .args(["evaluate", "--labels", "ferplus", "--data"])
        .arg(format!("{}:val", csv.display()))
        .arg("--model")
        .arg(&out)
        .arg("--report")
        .arg(&report_dir)
        .output()
        .expect("evaluate");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).expect("report")).expect("json");
    assert_eq!(report["labels"], "ferplus");
    assert_eq!(report["by_labels"]["fer2013"]["n"], 42);
    assert_eq!(report["by_labels"]["ferplus"]["n"], 42);
    assert!(report_dir.join("confusion_matrix_fer2013.png").exists());
}

#[test]
fn a_diverging_run_stops_with_an_error_and_epochs_zero_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let data_dir = dir.path().join("data");
    write_folders(&data_dir, 4, false);
    let out = dir.path().join("model.safetensors");
    let mut a = args(&data_dir, &out, 3);
    a.lr = 1e30;
    a.warmup_epochs = 0;
    let started = std::time::Instant::now();
    let err = train::run(&a, "test").expect_err("diverges").to_string();
    assert!(err.contains("diverged"), "{err}");
    assert!(started.elapsed().as_secs() < 120, "stopped promptly");
    if out.exists() {
        // Whatever was written is from a finite epoch.
        EmotionClassifier::from_file(&out, &Device::Cpu).expect("written weights are finite");
    }
    let err = train::run(&args(&data_dir, &out, 0), "test").expect_err("0 epochs").to_string();
    assert!(err.contains("--epochs 0"), "{err}");
}

#[test]
fn only_models_the_element_can_run_are_written_and_the_output_is_checked_first() {
    let dir = tempfile::tempdir().expect("tmp");
    let data_dir = dir.path().join("data");
    write_folders(&data_dir, 4, false);
    // A folder that does not exist is refused before any epoch.
    let started = std::time::Instant::now();
    let err = train::run(&args(&data_dir, &dir.path().join("missing/m.safetensors"), 1), "test").expect_err("missing folder").to_string();
    assert!(err.contains("does not exist") && err.contains("missing"), "{err}");
    assert!(started.elapsed().as_secs() < 10, "refused before training");
    // A learning rate that blows the weights up (with warm-up the loss can stay finite): either
    // an error saying nothing was written, or a model whose outputs on the element's path
    // (int8 where the CPU has AVX2) are finite.
    let out = dir.path().join("model.safetensors");
    let mut a = args(&data_dir, &out, 2);
    a.lr = 1e30;
    match train::run(&a, "test") {
        Err(e) => assert!(!out.exists(), "failed ({e:#}) yet wrote {}", out.display()),
        Ok(()) => {
            let mut c = EmotionClassifier::from_file(&out, &Device::Cpu).expect("loads");
            c.set_precision(moodmirror::emotion::Precision::Auto).expect("precision");
            let crops: Vec<u8> = (0..7).flat_map(|c| pattern(c, 0)).collect();
            let mut p = Vec::new();
            c.classify(&crops, &mut p).expect("classify");
            assert!(p.iter().flatten().all(|v| v.is_finite()), "{p:?}");
        }
    }
}

#[test]
fn weights_holding_nan_are_refused_naming_the_tensor() {
    let bytes = moodmirror::emotion::EMBEDDED_WEIGHTS;
    let st = safetensors::SafeTensors::deserialize(bytes).expect("embedded");
    let meta = moodmirror::emotion::read_metadata(bytes).expect("meta");
    let mut names = st.names();
    names.sort();
    let poisoned = names[3].to_string();
    let owned: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = names
        .iter()
        .map(|n| {
            let t = st.tensor(n).expect("tensor");
            let mut data = t.data().to_vec();
            if *n == poisoned {
                data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
            }
            (n.to_string(), data, t.shape().to_vec(), t.dtype())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        owned.iter().map(|(n, d, s, t)| (n.clone(), safetensors::tensor::TensorView::new(*t, s.clone(), d).expect("view"))).collect();
    let file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(file.path(), safetensors::serialize(views, Some(meta)).expect("serialize")).expect("write");
    let err = EmotionClassifier::from_file(file.path(), &Device::Cpu).err().expect("refused").to_string();
    assert!(err.contains(&poisoned) && err.contains("non-finite"), "{err}");
}

fn history(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("report/history.json")).expect("history");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn short_training_run_lowers_the_loss_resumes_and_evaluates() {
    let dir = tempfile::tempdir().expect("tmp");
    let data_dir = dir.path().join("data");
    write_folders(&data_dir, 8, false);
    let out = dir.path().join("model.safetensors");
    train::run(&args(&data_dir, &out, 4), "test").expect("train 4 epochs");
    let h = history(dir.path());
    assert_eq!(h.len(), 4);
    let first = h[0]["train_loss"].as_f64().expect("loss");
    let last = h[3]["train_loss"].as_f64().expect("loss");
    assert!(last < first * 0.8, "train loss {first} -> {last} did not fall");
    for file in ["report/curves.png", "report/history.csv", "model.ckpt.safetensors", "model.best-loss.safetensors"] {
        assert!(dir.path().join(file).exists(), "{file} missing");
    }

    // Resume for two more epochs from the checkpoint: history continues at epoch 5.
    let mut resume = args(&data_dir, &out, 6);
    resume.resume = Some(train::checkpoint_path(&out));
    train::run(&resume, "test").expect("resume");
    let h = history(dir.path());
    assert_eq!(h.len(), 6);
    assert_eq!(h[4]["epoch"], 5);

    // Continued from the weights alone (no optimizer state) on an 8-epoch schedule after epoch
    // 6: epochs 7 and 8 run at that schedule's learning rates.
    std::fs::create_dir_all(dir.path().join("continued")).expect("mkdir");
    let continued = dir.path().join("continued/model.safetensors");
    let mut cont = args(&data_dir, &continued, 8);
    cont.init = Some(out.clone());
    cont.start_epoch = Some(6);
    cont.report = Some(dir.path().join("continued/report"));
    train::run(&cont, "test").expect("continue from weights");
    let h = history(&dir.path().join("continued"));
    assert_eq!(h.iter().map(|r| r["epoch"].as_u64().expect("epoch")).collect::<Vec<_>>(), [7, 8]);
    let steps = 56 / 14;
    let schedule = moodmirror_train::optim::CosineSchedule { peak: 3e-3, warmup: steps, total: 8 * steps, final_fraction: 0.01 };
    for (record, last_step) in h.iter().zip([7 * steps - 1, 8 * steps - 1]) {
        let lr = record["lr"].as_f64().expect("lr");
        assert!((lr - schedule.lr(last_step)).abs() < 1e-12, "lr {lr} vs {}", schedule.lr(last_step));
    }
    let mut past_end = args(&data_dir, &continued, 6);
    past_end.init = Some(out.clone());
    past_end.start_epoch = Some(6);
    let err = train::run(&past_end, "test").expect_err("a start at the schedule's end");
    assert!(err.to_string().contains("--start-epoch 6"), "{err}");
    past_end.epochs = 8;
    past_end.init = None;
    let err = train::run(&past_end, "test").expect_err("a start without weights");
    assert!(err.to_string().contains("--init"), "{err}");

    // The weights load as a classifier, with their metadata.
    let classifier = EmotionClassifier::from_file(&out, &candle_core::Device::Cpu).expect("load");
    assert_eq!(classifier.metadata.get("arch").map(String::as_str), Some("vgg"));
    assert!(classifier.metadata.contains_key("input_contract"));
    assert_eq!(classifier.metadata.get("view_scale").map(String::as_str), Some("1.000000"));
    assert_eq!(classifier.view_scale, 1.0);

    // evaluate writes a report whose numbers agree with its own confusion matrix.
    let report_dir = dir.path().join("eval");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_moodmirror"))
        .args(["evaluate", "--tta", "--data"])
        .arg(&data_dir)
        .arg("--model")
        .arg(&out)
        .arg("--report")
        .arg(&report_dir)
        .output()
        .expect("run evaluate");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("confusion matrix") && stdout.contains("macro avg"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).expect("report")).expect("json");
    for key in ["accuracy", "loss", "macro_f1", "balanced_accuracy", "roc_auc_micro", "per_class", "confusion", "class_names", "n"] {
        assert!(report.get(key).is_some(), "report.json lacks {key}");
    }
    assert_eq!(report["n"], 56);
    assert_eq!(report["view_scale"].as_f64(), Some(1.0));
    assert_eq!(report["logit_bias"].as_bool(), Some(true), "train records the bias undoing its class weights");
    let confusion: Vec<Vec<u64>> = serde_json::from_value(report["confusion"].clone()).expect("confusion");
    let diagonal: u64 = (0..7).map(|i| confusion[i][i]).sum();
    let accuracy = report["accuracy"].as_f64().expect("accuracy");
    assert!((accuracy - diagonal as f64 / 56.0).abs() < 1e-9);
    assert!(report_dir.join("confusion_matrix.png").exists() && report_dir.join("roc_curves.png").exists());

    // Weight averaging (SWA) of the best and the last weights: a model of the same architecture
    // that loads, with its sources and val accuracy in the metadata.
    let averaged = dir.path().join("averaged.safetensors");
    let average = moodmirror_train::average::AverageArgs {
        inputs: vec![out.clone(), train::checkpoint_path(&out)],
        out: averaged.clone(),
        train: data_dir.display().to_string(),
        bn_images: 56,
        batch: 8,
        seed: 1,
        val: Some(data_dir.display().to_string()),
        class_weight_power: None,
    };
    moodmirror_train::average::run(&average, "test").expect("average");
    let classifier = EmotionClassifier::from_file(&averaged, &candle_core::Device::Cpu).expect("load averaged");
    assert_eq!(classifier.arch.name(), "vgg");
    assert!(classifier.metadata.get("averaged_from").is_some_and(|s| s.contains("model.ckpt.safetensors")));
    assert_eq!(classifier.metadata.get("inputs_training_command").map(String::as_str), Some("test"), "the checkpoints' own command");
    let trained = EmotionClassifier::from_file(&out, &candle_core::Device::Cpu).expect("load trained");
    assert!(trained.metadata.contains_key("logit_bias"));
    assert_eq!(classifier.metadata.get("logit_bias"), trained.metadata.get("logit_bias"), "the average keeps the bias");
    let val_accuracy: f64 = classifier.metadata["val_accuracy"].parse().expect("val_accuracy");
    assert!((0.0..=1.0).contains(&val_accuracy), "val accuracy {val_accuracy}");

    // Another view of each image on request; a view outside 0.5..=1 is refused by name.
    for (scale, ok) in [("0.9", true), ("2", false)] {
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_moodmirror"))
            .args(["evaluate", "--view-scale", scale, "--data"])
            .arg(&data_dir)
            .arg("--model")
            .arg(&out)
            .output()
            .expect("run evaluate");
        assert_eq!(run.status.success(), ok, "{}", String::from_utf8_lossy(&run.stderr));
        let text = String::from_utf8_lossy(if ok { &run.stdout } else { &run.stderr }).to_string();
        assert!(text.contains(if ok { "view scale 0.9000" } else { "--view-scale 2" }), "{text}");
    }
}

#[test]
fn distillation_from_a_teacher_and_init_from_weights() {
    let dir = tempfile::tempdir().expect("tmp");
    let data_dir = dir.path().join("data");
    write_folders(&data_dir, 8, false);
    let teacher = dir.path().join("teacher/model.safetensors");
    std::fs::create_dir_all(teacher.parent().expect("dir")).expect("mkdir");
    train::run(&args(&data_dir, &teacher, 4), "test").expect("train the teacher");
    let teacher_first_loss = history(teacher.parent().expect("dir"))[0]["train_loss"].as_f64().expect("loss");

    // The student learns from the teacher's ten-crop probabilities, starting from its weights:
    // its first epoch already starts where the teacher ended, far below the teacher's first.
    let student = dir.path().join("student/model.safetensors");
    std::fs::create_dir_all(student.parent().expect("dir")).expect("mkdir");
    let mut a = args(&data_dir, &student, 2);
    a.teacher = vec![teacher.clone()];
    a.distill_weight = 0.7;
    a.init = Some(teacher.clone());
    train::run(&a, "test").expect("distil");
    let h = history(student.parent().expect("dir"));
    let student_first_loss = h[0]["train_loss"].as_f64().expect("loss");
    assert!(student_first_loss < teacher_first_loss * 0.8, "init: {student_first_loss} vs teacher's first epoch {teacher_first_loss}");
    let cache = dir.path().join("student/model.teacher.safetensors");
    let written = std::fs::metadata(&cache).and_then(|m| m.modified()).expect("teacher targets cached");

    // Resuming reuses the cached targets; other teachers or views would recompute them.
    let mut resume = args(&data_dir, &student, 3);
    resume.teacher = vec![teacher.clone()];
    resume.distill_weight = 0.7;
    resume.resume = Some(train::checkpoint_path(&student));
    train::run(&resume, "test").expect("resume the distillation");
    assert_eq!(std::fs::metadata(&cache).and_then(|m| m.modified()).expect("cache"), written);
    assert_eq!(history(student.parent().expect("dir")).len(), 3);
    // Other weights at the teacher's path (the same size: the same architecture) are noticed.
    std::fs::copy(&student, &teacher).expect("replace the teacher");
    resume.epochs = 4;
    train::run(&resume, "test").expect("resume with a changed teacher");
    assert_ne!(std::fs::metadata(&cache).and_then(|m| m.modified()).expect("cache"), written, "stale teacher targets");

    // Out-of-range weights and missing teachers are refused by name.
    let mut bad = args(&data_dir, &dir.path().join("bad.safetensors"), 1);
    bad.teacher = vec![teacher.clone()];
    bad.distill_weight = 1.5;
    let err = format!("{:#}", train::run(&bad, "test").expect_err("weight 1.5"));
    assert!(err.contains("--distill-weight 1.5"), "{err}");
    bad.distill_weight = 0.5;
    bad.teacher = vec![dir.path().join("no-such-teacher.safetensors")];
    let err = format!("{:#}", train::run(&bad, "test").expect_err("missing teacher"));
    assert!(err.contains("no-such-teacher"), "{err}");

    // Online teaching: on clean images the teachers give what the cached targets hold.
    let data = Dataset::load(&data_dir.display().to_string()).expect("data");
    let cached = TeacherTargets::compute(std::slice::from_ref(&teacher), Tta::Mirror, &data, &Device::Cpu).expect("cached targets");
    let mut online = OnlineTeachers::load(std::slice::from_ref(&teacher), Tta::Mirror, &Device::Cpu, moodmirror::emotion::Preprocess::None)
        .expect("online teachers");
    let n = 5;
    let mut clean = vec![0f32; n * 48 * 48];
    for (i, dst) in clean.chunks_exact_mut(48 * 48).enumerate() {
        moodmirror::emotion::normalize_into(data.image(i), dst, false, 1.0);
    }
    let mut rows = Vec::new();
    online.probabilities(&clean, n, &Device::Cpu, &mut rows).expect("online targets");
    assert_eq!(rows.len(), n);
    for (got, want) in rows.iter().zip(&cached.probabilities) {
        assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-5), "{got:?} vs {want:?}");
    }
    // ... and a run with them and mixup trains without writing a target cache.
    let mixed = dir.path().join("mixup/model.safetensors");
    std::fs::create_dir_all(mixed.parent().expect("dir")).expect("mkdir");
    let mut m = args(&data_dir, &mixed, 2);
    m.teacher = vec![teacher.clone()];
    m.teacher_online = true;
    m.teacher_tta = Tta::Mirror;
    m.mixup = 0.4;
    m.init = Some(teacher.clone());
    train::run(&m, "test").expect("online distillation with mixup");
    let h = history(mixed.parent().expect("dir"));
    assert_eq!(h.len(), 2);
    assert!(h.iter().all(|e| e["train_loss"].as_f64().is_some_and(f64::is_finite)));
    assert!(!dir.path().join("mixup/model.teacher.safetensors").exists());
    m.teacher_tta = Tta::Grid;
    let err = format!("{:#}", train::run(&m, "test").expect_err("grid online"));
    assert!(err.contains("--teacher-tta none or mirror"), "{err}");
    m.teacher_tta = Tta::Mirror;
    m.mixup = -1.0;
    let err = format!("{:#}", train::run(&m, "test").expect_err("negative mixup"));
    assert!(err.contains("--mixup -1"), "{err}");

    // evaluate's multi-view TTA runs on the student and says which views it averaged.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_moodmirror"))
        .args(["evaluate", "--tta", "grid", "--data"])
        .arg(&data_dir)
        .arg("--model")
        .arg(&student)
        .output()
        .expect("run evaluate");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("grid of 54 views"));

    // Several --model flags evaluate the ensemble: the report's loss and accuracy are those of
    // the two models' probabilities averaged image by image (computed here independently). The
    // teacher file now holds the first student's weights; the mixup student differs from it.
    let report_dir = dir.path().join("ensemble");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_moodmirror"))
        .args(["evaluate", "--precision", "f32", "--data"])
        .arg(&data_dir)
        .args([std::ffi::OsStr::new("--model"), teacher.as_os_str(), std::ffi::OsStr::new("--model"), mixed.as_os_str()])
        .arg("--report")
        .arg(&report_dir)
        .output()
        .expect("run evaluate");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("ensemble of 2 models"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).expect("report")).expect("json");
    assert_eq!(report["model"].as_array().map(Vec::len), Some(2));
    let data = Dataset::load(&data_dir.display().to_string()).expect("data");
    let device = Device::Cpu;
    let mut mean = vec![[0f32; 7]; data.len()];
    let mut single_losses = Vec::new();
    for path in [&teacher, &mixed] {
        let mut model = EmotionClassifier::from_file(path, &device).expect("load");
        model.set_precision(moodmirror::emotion::Precision::F32).expect("f32");
        let views = Tta::None.views(model.view_scale, model.preprocess);
        let probs = moodmirror_train::evaluate::predict(&mut |x| model.logits(x), &data, &device, 16, &views).expect("predict");
        single_losses.push(moodmirror_train::evaluate::Report::compute(&probs, &data.labels).loss);
        for (acc, row) in mean.iter_mut().zip(&probs) {
            acc.iter_mut().zip(row).for_each(|(a, p)| *a += p / 2.0);
        }
    }
    let expected = moodmirror_train::evaluate::Report::compute(&mean, &data.labels);
    assert!(single_losses.iter().all(|l| (l - expected.loss).abs() > 1e-3), "{single_losses:?} vs {}", expected.loss);
    assert!((report["accuracy"].as_f64().expect("accuracy") - expected.accuracy).abs() < 1e-9);
    assert!((report["loss"].as_f64().expect("loss") - expected.loss).abs() < 1e-4, "{} vs {}", report["loss"], expected.loss);
}

/// What `--device cuda` runs (candle's own kernels instead of our CPU ops), run on the CPU.
#[test]
fn training_on_the_gpu_code_paths_lowers_the_loss() {
    let dir = tempfile::tempdir().expect("tmp");
    let data_dir = dir.path().join("data");
    write_folders(&data_dir, 8, false);
    let out = dir.path().join("model.safetensors");
    moodmirror::ops::with_gpu_paths(|| train::run(&args(&data_dir, &out, 4), "test")).expect("train 4 epochs");
    let h = history(dir.path());
    let first = h[0]["train_loss"].as_f64().expect("loss");
    let last = h[3]["train_loss"].as_f64().expect("loss");
    assert!(last < first * 0.8, "train loss {first} -> {last} did not fall");
}

#[test]
fn weights_of_another_architecture_name_the_tensor_and_shapes() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("w.safetensors");
    let t = candle_core::Tensor::zeros((64, 1, 3, 3), candle_core::DType::F32, &candle_core::Device::Cpu).expect("t");
    let tensors = std::collections::HashMap::from([("stage0.0.conv.weight".to_string(), t)]);
    let meta = std::collections::HashMap::from([("arch".to_string(), "vgg".to_string())]);
    moodmirror_train::checkpoint::save_safetensors(&tensors, &meta, &path).expect("save");
    let err = EmotionClassifier::from_file(&path, &candle_core::Device::Cpu).err().expect("must fail").to_string();
    assert!(err.contains("stage0.0.conv.weight") && err.contains("64") && err.contains("32"), "{err}");
}

/// The shipped model on what a GPU runs (candle's kernels for convolution and pooling), run on
/// the CPU: the same probabilities as our CPU ops, on real FER-like crops of the fixture face.
#[test]
fn embedded_model_gives_the_same_probabilities_on_the_gpu_code_paths() {
    let img = image::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/astronaut.png")).expect("fixture").into_luma8();
    // Three crops around the face (x 177, y 66, 95 px), resized to 48x48.
    let crops: Vec<u8> = [(177, 66, 95), (170, 60, 110), (185, 72, 85)]
        .iter()
        .flat_map(|&(x, y, s)| {
            let face = image::imageops::crop_imm(&img, x, y, s, s).to_image();
            image::imageops::resize(&face, 48, 48, image::imageops::FilterType::Triangle).into_raw()
        })
        .collect();
    let mut model = EmotionClassifier::embedded(&candle_core::Device::Cpu).expect("embedded model");
    let (mut cpu, mut gpu) = (Vec::new(), Vec::new());
    model.classify(&crops, &mut cpu).expect("classify");
    moodmirror::ops::with_gpu_paths(|| model.classify(&crops, &mut gpu)).expect("classify on GPU paths");
    for (a, b) in cpu.iter().zip(&gpu) {
        for (p, q) in a.iter().zip(b) {
            assert!((p - q).abs() < 1e-4, "{a:?} vs {b:?}");
        }
    }
    let happy = CLASS_NAMES.iter().position(|c| *c == "happy").expect("class");
    assert!(cpu.iter().all(|p| p[happy] > 0.5), "the smiling astronaut: {cpu:?}");
}

/// Gradients of the shipped network on one batch with the convolutions' GEMMs in bf16 and in
/// f32: the bf16 rounding must be small against the difference between two batches (the noise
/// SGD itself works with), or bf16 training would follow another path than f32 training.
#[test]
fn bf16_training_gradients_stay_close_to_f32_ones() {
    use candle_core::{DType, Device, Tensor};
    use moodmirror::emotion::{Arch, EmotionNet, EMBEDDED_WEIGHTS};
    use moodmirror::layers::{seed_dropout, SeededInit};
    if !moodmirror::ops::gemm_bf16::available() {
        eprintln!("skipped: no AVX-512 BF16 on this CPU");
        return;
    }
    let device = Device::Cpu;
    let varmap = candle_nn::VarMap::new();
    let net = EmotionNet::load(SeededInit::varbuilder(&varmap, 1, &device), Arch::Vgg).expect("net");
    let shipped = candle_core::safetensors::load_buffer(EMBEDDED_WEIGHTS, &device).expect("weights");
    let vars = varmap.data().lock().expect("vars").clone();
    for (name, var) in &vars {
        var.set(&shipped[name]).expect("set");
    }
    let batch = |offset: usize| {
        let pixels: Vec<f32> = (0..64).flat_map(|i| pattern(i % 7, offset + i)).map(|p| (p as f32 / 255.0 - 0.5) / 0.25).collect();
        let labels: Vec<u8> = (0..64).map(|i| (i % 7) as u8).collect();
        (Tensor::from_vec(pixels, (64, 1, 48, 48), &device).expect("batch"), labels)
    };
    let gradients = |offset: usize, bf16: bool| {
        let (x, labels) = batch(offset);
        seed_dropout(5); // the same dropout masks in every pass
        moodmirror::ops::with_bf16_matmul(bf16, || {
            let logits = net.forward_t(&x, true).expect("forward");
            let loss = train::smoothed_weighted_ce(&logits, &labels, &[1.0; 7], 0.1).expect("loss");
            let grads = loss.backward().expect("backward");
            vars.iter()
                .filter(|(name, _)| name.contains("conv"))
                .map(|(name, var)| (name.clone(), grads.get(var).expect("grad").to_dtype(DType::F32).expect("f32")))
                .collect::<std::collections::BTreeMap<_, _>>()
        })
    };
    let relative = |a: &Tensor, b: &Tensor| {
        let norm = |t: &Tensor| t.sqr().and_then(|t| t.sum_all()).and_then(|t| t.to_scalar::<f32>()).expect("norm").sqrt();
        norm(&(a - b).expect("diff")) / norm(b)
    };
    let (f32_grads, bf16_grads, other_batch) = (gradients(0, false), gradients(0, true), gradients(1000, false));
    assert!(f32_grads.len() >= 6, "conv weights of vgg: {:?}", f32_grads.keys());
    let mut worst = 0f32;
    for (name, g) in &f32_grads {
        let rounding = relative(&bf16_grads[name], g);
        let sampling = relative(&other_batch[name], g);
        eprintln!("{name}: bf16 vs f32 {rounding:.4}, another batch vs this one {sampling:.4}");
        worst = worst.max(rounding / sampling);
    }
    assert!(worst < 0.2, "bf16 rounding reaches {worst} of the batch-to-batch difference");
}

/// `evaluate --predictions` as rows: (source, label, seven probabilities).
fn read_predictions(path: &Path) -> Vec<(String, String, Vec<f64>)> {
    let text = std::fs::read_to_string(path).expect("predictions");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("source,label,angry,disgust,fear,happy,sad,surprise,neutral"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].to_string(), f[2..].iter().map(|v| v.parse().expect("probability")).collect())
        })
        .collect()
}

fn moodmirror(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_moodmirror")).args(args).output().expect("moodmirror")
}

#[test]
fn train_refuses_out_of_range_numbers_before_reading_any_data() {
    // The data paths do not exist: the number must be what is refused.
    for (flag, value, said) in [
        ("--label-smoothing", "1.5", "expected a share in 0..1"),
        ("--distill-weight", "2", "expected a number in 0..=1"),
        ("--zoom-out", "2", "expected a share of the images"),
        ("--weight-decay", "-1", "expected a number ≥ 0"),
    ] {
        let arg = format!("{flag}={value}");
        let os = |s: &str| std::ffi::OsString::from(s);
        let run = moodmirror(&[
            &os("train"),
            &os("--train"),
            &os("/nonexistent/train"),
            &os("--val"),
            &os("/nonexistent/val"),
            &os("--out"),
            &os("x.safetensors"),
            &os(&arg),
        ]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && stderr.contains(flag) && stderr.contains(said), "{arg}: {stderr}");
    }
}

#[test]
fn calibrate_refuses_too_few_images_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let csv = write_labels_csv(dir.path(), 1);
    let val = std::ffi::OsString::from(format!("{}:val", csv.display()));
    let out = dir.path().join("calibrated.safetensors");
    let run = moodmirror(&[
        std::ffi::OsStr::new("calibrate"),
        std::ffi::OsStr::new("--data"),
        &val,
        std::ffi::OsStr::new("--out"),
        out.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("too few to fit a temperature"), "{stderr}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn calibrate_fits_a_temperature_that_evaluate_applies_and_predictions_agree_with_the_report() {
    let dir = tempfile::tempdir().expect("tmp");
    let csv = write_labels_csv(dir.path(), 6);
    let val = std::ffi::OsString::from(format!("{}:val", csv.display()));
    let calibrated = dir.path().join("calibrated.safetensors");
    let os = |s: &str| std::ffi::OsString::from(s);
    let run = moodmirror(&[&os("calibrate"), &os("--data"), &val, &os("--out"), calibrated.as_os_str()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("temperature") && stdout.contains("ECE"), "{stdout}");
    let model = EmotionClassifier::from_file(&calibrated, &Device::Cpu).expect("calibrated model loads");
    let t = model.temperature().expect("temperature recorded");
    assert!(model.metadata["temperature_fit"].contains("42 images"), "{:?}", model.metadata);
    // The tensors are the embedded default's: only the metadata changed.
    let embedded = EmotionClassifier::embedded(&Device::Cpu).expect("embedded");
    assert_eq!(model.metadata["arch"], embedded.metadata["arch"]);

    // The same images with and without the temperature: the same labels, a lower loss with it,
    // and a predictions CSV that agrees with the report row by row.
    let mut reports = Vec::new();
    for (name, extra) in [("plain", None), ("calibrated", Some(calibrated.as_os_str()))] {
        let report_dir = dir.path().join(name);
        let predictions = dir.path().join(format!("{name}.csv"));
        let mut args = vec![os("evaluate"), os("--labels"), os("ferplus"), os("--data"), val.clone()];
        args.extend([os("--report"), report_dir.clone().into_os_string(), os("--predictions"), predictions.clone().into_os_string()]);
        if let Some(model) = extra {
            args.extend([os("--model"), model.to_os_string()]);
        }
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let run = moodmirror(&refs);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        assert!(String::from_utf8_lossy(&run.stdout).contains("expected calibration error"));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).expect("report")).expect("json");
        assert!(report_dir.join("reliability.png").exists());
        let rows = read_predictions(&predictions);
        assert_eq!(rows.len(), 42);
        assert!(rows.iter().all(|(source, label, p)| source.starts_with("val/")
            && CLASS_NAMES.contains(&label.as_str())
            && (p.iter().sum::<f64>() - 1.0).abs() < 1e-4));
        // Accuracy, loss and ECE recomputed from the CSV equal the report's.
        let top = |p: &[f64]| (0..7).fold(0, |b, c| if p[c] > p[b] { c } else { b });
        let correct = rows.iter().filter(|(_, l, p)| CLASS_NAMES[top(p)] == l).count();
        assert!((report["accuracy"].as_f64().expect("accuracy") - correct as f64 / 42.0).abs() < 1e-9);
        let loss =
            rows.iter().map(|(_, l, p)| -p[CLASS_NAMES.iter().position(|c| c == l).expect("class")].max(1e-12).ln()).sum::<f64>() / 42.0;
        assert!((report["loss"].as_f64().expect("loss") - loss).abs() < 1e-3, "{loss} vs {}", report["loss"]);
        let mut bins = [(0usize, 0f64, 0usize); 15];
        for (_, l, p) in &rows {
            let c = top(p);
            let b = ((p[c] * 15.0) as usize).min(14);
            bins[b].0 += 1;
            bins[b].1 += p[c];
            bins[b].2 += (CLASS_NAMES[c] == l) as usize;
        }
        let ece: f64 = bins.iter().filter(|b| b.0 > 0).map(|b| (b.2 as f64 - b.1).abs()).sum::<f64>() / 42.0;
        assert!((report["ece"].as_f64().expect("ece") - ece).abs() < 2e-3, "{ece} vs {}", report["ece"]);
        reports.push((report, rows));
    }
    let (plain, calibrated_report) = (&reports[0].0, &reports[1].0);
    assert_eq!(plain["accuracy"], calibrated_report["accuracy"], "a temperature never changes a label");
    assert!(calibrated_report["loss"].as_f64() <= plain["loss"].as_f64(), "the fit minimises the loss (T {t})");
    assert_eq!(calibrated_report["temperature"][0].as_f64().map(|v| v as f32), Some(t));

    // A calibrated copy never replaces its own input, and nothing is written on refusal.
    let run =
        moodmirror(&[&os("calibrate"), &os("--model"), calibrated.as_os_str(), &os("--data"), &val, &os("--out"), calibrated.as_os_str()]);
    assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains("is one of the inputs"));
    // Nor do average and train (their starting weights or teachers).
    let before = std::fs::read(&calibrated).expect("read");
    let run = moodmirror(&[
        &os("average"),
        calibrated.as_os_str(),
        calibrated.as_os_str(),
        &os("--out"),
        calibrated.as_os_str(),
        &os("--train"),
        &val,
    ]);
    assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains("is one of the inputs"));
    for flag in ["--init", "--teacher"] {
        let run = moodmirror(&[
            &os("train"),
            &os("--train"),
            &val,
            &os("--val"),
            &val,
            &os(flag),
            calibrated.as_os_str(),
            &os("--out"),
            calibrated.as_os_str(),
        ]);
        assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains("is one of the inputs"), "{flag}");
    }
    assert_eq!(std::fs::read(&calibrated).expect("read"), before, "the input is untouched");
    // --predictions never lands on an input.
    let run = moodmirror(&[&os("evaluate"), &os("--data"), &val, &os("--predictions"), csv.as_os_str()]);
    assert!(!run.status.success(), "{}", String::from_utf8_lossy(&run.stdout));
    assert!(std::fs::read_to_string(&csv).expect("labels").starts_with("file,"), "the labels CSV is intact");
}

#[test]
fn calibrate_scales_the_logit_bias_and_evaluate_agrees_with_its_table() {
    let dir = tempfile::tempdir().expect("tmp");
    let csv = write_labels_csv(dir.path(), 6);
    let val = std::ffi::OsString::from(format!("{}:val", csv.display()));
    let os = |s: &str| std::ffi::OsString::from(s);
    let embedded = EmotionClassifier::embedded(&Device::Cpu).expect("embedded");
    let undo = moodmirror::emotion::LogitBias::undo_from_metadata(&embedded.metadata).expect("undo").expect("the default has a bias");

    let scaled = dir.path().join("scaled.safetensors");
    let run = moodmirror(&[
        &os("calibrate"),
        &os("--data"),
        &val,
        &os("--labels"),
        &os("ferplus"),
        &os("--logit-bias-scale"),
        &os("0.25"),
        &os("--out"),
        scaled.as_os_str(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    let model = EmotionClassifier::from_file(&scaled, &Device::Cpu).expect("scaled model loads");
    let bias = moodmirror::emotion::LogitBias::from_metadata(&model.metadata).expect("bias").expect("bias kept");
    assert!(bias.iter().zip(&undo).all(|(b, u)| (b - 0.25 * u).abs() < 1e-5), "{bias:?} vs {undo:?}");
    assert_eq!(moodmirror::emotion::LogitBias::undo_from_metadata(&model.metadata).expect("undo"), Some(undo));
    assert_eq!(model.metadata["logit_bias_scale"], "0.250");

    // The table's row for the written share is what evaluate measures on the written model.
    let row = stdout.lines().find(|l| l.contains("<- written")).expect("a row for the written share");
    let plain: f64 = row.split("plain ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse().ok()).expect("plain");
    assert!(row.trim_start().starts_with("0.25"), "{row}");
    let report_dir = dir.path().join("report");
    let run = moodmirror(&[
        &os("evaluate"),
        &os("--labels"),
        &os("ferplus"),
        &os("--data"),
        &val,
        &os("--model"),
        scaled.as_os_str(),
        &os("--report"),
        report_dir.as_os_str(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).expect("report")).expect("json");
    assert!((report["accuracy"].as_f64().expect("accuracy") - plain).abs() < 1e-3, "{} vs table {plain}", report["accuracy"]);

    // Calibrating the scaled file again keeps its share; a share outside 0..=1 is refused by name
    // and writes nothing.
    let again = dir.path().join("again.safetensors");
    let run = moodmirror(&[&os("calibrate"), &os("--model"), scaled.as_os_str(), &os("--data"), &val, &os("--out"), again.as_os_str()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let model = EmotionClassifier::from_file(&again, &Device::Cpu).expect("loads");
    assert_eq!(model.metadata["logit_bias_scale"], "0.250");
    assert_eq!(moodmirror::emotion::LogitBias::undo_from_metadata(&model.metadata).expect("undo"), Some(undo));
    let refused = dir.path().join("refused.safetensors");
    let run =
        moodmirror(&[&os("calibrate"), &os("--data"), &val, &os("--logit-bias-scale"), &os("1.5"), &os("--out"), refused.as_os_str()]);
    assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains("--logit-bias-scale 1.5"));
    assert!(!refused.exists());
}
