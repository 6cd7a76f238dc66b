//! FER2013 data: class-folder layout (`DIR/<class>/*.jpg|png`), the Kaggle `fer2013.csv`
//! (`FILE.csv:Training|PublicTest|PrivateTest`) or the originals' `labels.csv` with FER2013's
//! label and FER+'s ten votes per image (`DIR/labels.csv:train|val`), and the training-time
//! augmentation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use moodmirror::emotion::{InputContract, CLASS_NAMES, NUM_CLASSES};

pub use crate::augment::{Augment, BatchMix, CameraAugment};

const SIZE: usize = InputContract::SIZE;
const PIXELS: usize = InputContract::PIXELS;

/// Which labels a data set is scored and trained against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LabelSet {
    /// FER2013's own single label per image.
    Fer2013,
    /// FER+'s majority of ten annotators; ties and majorities of contempt, unknown or
    /// not-a-face are left out (as FER+ scores).
    Ferplus,
}

impl LabelSet {
    pub fn name(self) -> &'static str {
        match self {
            LabelSet::Fer2013 => "fer2013",
            LabelSet::Ferplus => "ferplus",
        }
    }
}

/// What `train` fits each image to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// FER2013's label (one-hot; label smoothing applies).
    Fer2013,
    /// FER+'s vote distribution over the seven classes.
    FerPlus,
    /// `share` of FER+'s vote distribution plus `1 - share` of FER2013's one-hot label.
    Mix { share: f32 },
}

impl Target {
    /// The label set a model trained on this target is validated (and selected) on.
    pub fn label_set(self) -> LabelSet {
        match self {
            Target::Fer2013 => LabelSet::Fer2013,
            Target::FerPlus | Target::Mix { .. } => LabelSet::Ferplus,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Target::Fer2013 => "FER2013 labels".into(),
            Target::FerPlus => "FER+ vote distribution".into(),
            Target::Mix { share } => format!("{share} x FER+ votes + {} x FER2013 label", 1.0 - share),
        }
    }
}

/// FER+'s vote columns in the labels CSV, and the class each feeds (None: no FER2013 class).
const FERPLUS_VOTES: [(&str, Option<usize>); 10] = [
    ("neutral", Some(6)),
    ("happiness", Some(3)),
    ("surprise", Some(5)),
    ("sadness", Some(4)),
    ("anger", Some(0)),
    ("disgust", Some(1)),
    ("fear", Some(2)),
    ("contempt", None),
    ("unknown", None),
    ("nf", None),
];

/// FER+ votes of one image mapped to our classes: the distribution over the seven classes
/// (contempt, unknown and not-a-face votes dropped) and the majority label FER+ scores with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FerPlusVotes {
    /// Vote counts in the CSV's order (neutral … NF).
    pub counts: [u32; 10],
}

impl FerPlusVotes {
    /// Votes for the seven classes, in [`CLASS_NAMES`] order.
    pub fn emotion_votes(&self) -> [u32; NUM_CLASSES] {
        let mut v = [0; NUM_CLASSES];
        for (&(_, class), &n) in FERPLUS_VOTES.iter().zip(&self.counts) {
            if let Some(c) = class {
                v[c] += n;
            }
        }
        v
    }

    /// The seven-class vote distribution; `None` when no vote names one of the seven.
    pub fn distribution(&self) -> Option<[f32; NUM_CLASSES]> {
        let v = self.emotion_votes();
        let total: u32 = v.iter().sum();
        (total > 0).then(|| v.map(|n| n as f32 / total as f32))
    }

    /// FER+'s majority label: the single most voted of all ten columns, if it is one of the
    /// seven classes (ties and contempt/unknown/not-a-face majorities: `None`).
    pub fn majority(&self) -> Option<u8> {
        let top = *self.counts.iter().max()?;
        let mut winners = self.counts.iter().enumerate().filter(|(_, &n)| n == top);
        let (first, _) = winners.next()?;
        if top == 0 || winners.next().is_some() {
            return None;
        }
        FERPLUS_VOTES[first].1.map(|c| c as u8)
    }

    /// Whether training should use the image: some emotion vote, and emotion votes outnumber
    /// unknown and not-a-face votes (FER+ drops images that are mostly "unknown" or no face).
    pub fn usable(&self) -> bool {
        let emotion: u32 = self.emotion_votes().iter().sum();
        emotion > 0 && emotion > self.counts[8] + self.counts[9]
    }
}

/// Images as 48x48 u8 grayscale, row-major, one after another, with their labels.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub images: Vec<u8>,
    /// The hard label of each image under the data set's target: FER2013's label, or the
    /// most voted of the seven classes for FER+ targets (class counts, accuracy in training).
    pub labels: Vec<u8>,
    /// Soft training targets, one row per image, when the target is a distribution (FER+
    /// votes, or a mix); empty for one-hot labels.
    pub targets: Vec<[f32; NUM_CLASSES]>,
    /// FER2013's label per image, when the source has FER+ votes too (labels CSV); empty
    /// otherwise (then `labels` are FER2013's).
    pub fer2013_labels: Vec<u8>,
    /// FER+'s majority label per image (None: tie or non-emotion majority); empty when the
    /// source has no votes.
    pub ferplus_labels: Vec<Option<u8>>,
    /// Where each image came from, as the user can find it: its file (as the labels CSV lists
    /// it, or its path) or `FILE.csv:LINE`.
    pub sources: Vec<String>,
    /// Images that could not be read (skipped) and ones that were not 48x48 (resized).
    pub skipped: usize,
    pub resized: usize,
    /// Images the FER+ target leaves out (no emotion votes, or mostly unknown / not-a-face).
    pub unusable: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }

    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// The label sets this data set can be scored against.
    pub fn label_sets(&self) -> Vec<LabelSet> {
        let mut sets = Vec::new();
        if self.ferplus_labels.is_empty() || !self.fer2013_labels.is_empty() {
            sets.push(LabelSet::Fer2013);
        }
        if !self.ferplus_labels.is_empty() {
            sets.push(LabelSet::Ferplus);
        }
        sets
    }

    /// The images scored under `set` (indices) and their labels; `None` when the data set has
    /// no such labels.
    pub fn scored(&self, set: LabelSet) -> Option<(Vec<usize>, Vec<u8>)> {
        match set {
            LabelSet::Fer2013 if !self.fer2013_labels.is_empty() => Some(((0..self.len()).collect(), self.fer2013_labels.clone())),
            LabelSet::Fer2013 if self.ferplus_labels.is_empty() => Some(((0..self.len()).collect(), self.labels.clone())),
            LabelSet::Fer2013 => None,
            LabelSet::Ferplus if self.ferplus_labels.is_empty() => None,
            LabelSet::Ferplus => Some(self.ferplus_labels.iter().enumerate().filter_map(|(i, l)| l.map(|l| (i, l))).unzip()),
        }
    }

    /// The training target row of image `i`: its soft target, or its one-hot label.
    pub fn target_row(&self, i: usize) -> [f32; NUM_CLASSES] {
        match self.targets.get(i) {
            Some(row) => *row,
            None => one_hot(self.labels[i]),
        }
    }

    /// `DIR` in class-folder layout, `FILE.csv[:Usage]` (Kaggle), or `labels.csv[:split]`
    /// (originals with FER+ votes, or a directory holding such a `labels.csv`), with
    /// FER2013's labels as the target.
    pub fn load(spec: &str) -> Result<Self> {
        Self::load_for(spec, Target::Fer2013)
    }

    /// [`Dataset::load`] with a training target; FER+ targets need a labels CSV.
    pub fn load_for(spec: &str, target: Target) -> Result<Self> {
        let (path, usage) = match spec.rsplit_once(':') {
            Some((p, u)) if p.to_ascii_lowercase().ends_with(".csv") => (p, Some(u)),
            _ => (spec, None),
        };
        let path = Path::new(path);
        let labels_csv = if path.is_dir() && path.join("labels.csv").is_file() && !has_class_folders(path) {
            Some(path.join("labels.csv"))
        } else if path.is_file() && is_votes_csv(path) {
            Some(path.to_path_buf())
        } else {
            None
        };
        let data = if let Some(csv) = labels_csv {
            Self::load_labels_csv(&csv, usage, target)?
        } else if target != Target::Fer2013 {
            bail!("'{spec}': the FER+ targets need the originals' labels.csv (FER2013 label and FER+ votes per image)");
        } else if path.is_dir() {
            Self::load_folders(path)?
        } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            Self::load_csv(path, usage)?
        } else {
            bail!("'{spec}' is neither a directory of class folders, a fer2013.csv[:Usage] file nor a labels.csv[:split] of the originals");
        };
        if data.resized > 0 {
            eprintln!("warning: {spec}: {} images not {SIZE}x{SIZE} resized", data.resized);
        }
        if data.unusable > 0 {
            eprintln!(
                "note: {spec}: {} images left out of the {} target (no emotion votes, or mostly unknown / not a face)",
                data.unusable,
                target.describe()
            );
        }
        if data.is_empty() {
            bail!("'{spec}' holds no usable images");
        }
        Ok(data)
    }

    /// The originals' labels CSV: `file,split,fer2013_label,…,neutral,…,NF`, image paths
    /// relative to the CSV's folder. Every problem is an error naming the file and line: a
    /// training set silently missing rows would be a different data set.
    fn load_labels_csv(path: &Path, split: Option<&str>, target: Target) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        // Spreadsheet programs start CSVs with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let root = path.parent().unwrap_or(Path::new("."));
        let mut lines = text.lines().enumerate();
        let header: Vec<String> =
            lines.next().map(|(_, h)| h.split(',').map(|c| c.trim().to_ascii_lowercase()).collect()).unwrap_or_default();
        let col = |name: &str| header.iter().position(|c| c == name);
        let (Some(file_col), Some(label_col)) = (col("file"), col("fer2013_label")) else {
            bail!("{}: expected a header with columns file,fer2013_label and the ten FER+ vote columns", path.display());
        };
        let mut vote_cols = [0usize; 10];
        for (slot, (name, _)) in vote_cols.iter_mut().zip(FERPLUS_VOTES) {
            *slot = col(name).with_context(|| format!("{}: no FER+ vote column '{name}' in the header", path.display()))?;
        }
        let split_col = col("split");
        if split.is_some() && split_col.is_none() {
            bail!("{}: no split column to select {:?} from", path.display(), split);
        }
        let mut rows: Vec<(PathBuf, u8, FerPlusVotes, String)> = Vec::new();
        for (index, line) in lines {
            let line_no = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != header.len() {
                bail!("{}:{line_no}: {} fields, the header has {}", path.display(), fields.len(), header.len());
            }
            if let (Some(wanted), Some(c)) = (split, split_col) {
                if !fields[c].eq_ignore_ascii_case(wanted) {
                    continue;
                }
            }
            let label_name = fields[label_col].to_ascii_lowercase();
            let Some(label) = CLASS_NAMES.iter().position(|c| *c == label_name) else {
                bail!("{}:{line_no}: unknown class '{}' (expected one of {})", path.display(), fields[label_col], CLASS_NAMES.join(", "));
            };
            let mut counts = [0u32; 10];
            for (n, &c) in counts.iter_mut().zip(&vote_cols) {
                *n = fields[c].parse().map_err(|_| {
                    anyhow::anyhow!(
                        "{}:{line_no}: vote count '{}' in column '{}' is not a whole number",
                        path.display(),
                        fields[c],
                        header[c]
                    )
                })?;
            }
            if counts.iter().sum::<u32>() == 0 {
                bail!("{}:{line_no}: the ten FER+ votes sum to 0", path.display());
            }
            rows.push((root.join(fields[file_col]), label as u8, FerPlusVotes { counts }, fields[file_col].to_string()));
        }
        if rows.is_empty() {
            bail!("{}: no rows{}", path.display(), split.map(|s| format!(" with split '{s}'")).unwrap_or_default());
        }
        // A file listed twice counts once (its first row), and the user hears of it.
        let mut listed = std::collections::HashSet::new();
        let before = rows.len();
        rows.retain(|(file, _, _, _)| listed.insert(file.clone()));
        if rows.len() < before {
            eprintln!("warning: {}: {} rows list a file already listed; each file counts once", path.display(), before - rows.len());
        }
        let decoded: Vec<Result<(Vec<u8>, bool)>> = rows.par_iter().map(|(p, _, _, _)| read_gray48(p)).collect();
        let mut data = Dataset::default();
        for ((_, fer2013, votes, listed_as), image) in rows.iter().zip(decoded) {
            let (pixels, resized) = image.with_context(|| format!("{} lists it", path.display()))?;
            let (label, row) = match target {
                Target::Fer2013 => (*fer2013, None),
                Target::FerPlus | Target::Mix { .. } => {
                    let dist = votes.distribution().filter(|_| votes.usable());
                    let Some(dist) = dist else {
                        data.unusable += 1;
                        continue;
                    };
                    let row = match target {
                        Target::Mix { share } => {
                            let hard = one_hot(*fer2013);
                            std::array::from_fn(|c| share * dist[c] + (1.0 - share) * hard[c])
                        }
                        _ => dist,
                    };
                    (moodmirror::emotion::argmax(&row).0 as u8, Some(row))
                }
            };
            data.images.extend_from_slice(&pixels);
            data.labels.push(label);
            data.sources.push(listed_as.clone());
            data.targets.extend(row);
            data.fer2013_labels.push(*fer2013);
            data.ferplus_labels.push(votes.majority());
            data.resized += resized as usize;
        }
        Ok(data)
    }

    fn load_folders(dir: &Path) -> Result<Self> {
        let mut files: Vec<(PathBuf, u8)> = Vec::new();
        let mut found = [false; NUM_CLASSES];
        let mut unknown = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            // `Path::is_dir` follows links: class folders may be symlinks.
            if !entry.path().is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_lowercase();
            let Some(label) = CLASS_NAMES.iter().position(|c| *c == name) else {
                unknown.push(name);
                continue;
            };
            found[label] = true;
            let mut class_files: Vec<PathBuf> = std::fs::read_dir(entry.path())
                .with_context(|| format!("reading {}", entry.path().display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_string_lossy().to_lowercase().as_str())))
                .collect();
            class_files.sort();
            files.extend(class_files.into_iter().map(|p| (p, label as u8)));
        }
        let missing: Vec<&str> = CLASS_NAMES.iter().zip(found).filter(|(_, f)| !f).map(|(c, _)| *c).collect();
        // Many expression sets have six emotions or fewer: a subset is scored on what it has.
        if missing.len() == NUM_CLASSES {
            bail!(
                "{}: no class folders{}; expected one folder per class (a subset will do): {}",
                dir.display(),
                if unknown.is_empty() { String::new() } else { format!(" (unknown folders: {unknown:?})") },
                CLASS_NAMES.join(", ")
            );
        }
        if !missing.is_empty() {
            eprintln!("note: {}: no folders for {missing:?}: those classes are absent from the data", dir.display());
        }
        if !unknown.is_empty() {
            unknown.sort();
            eprintln!("warning: {}: folders {unknown:?} are not classes and are ignored", dir.display());
        }
        let mut per_class = [0usize; NUM_CLASSES];
        files.iter().for_each(|(_, l)| per_class[*l as usize] += 1);
        for ((class, n), folder) in CLASS_NAMES.iter().zip(per_class).zip(found) {
            if n == 0 && folder {
                eprintln!("warning: {}: class folder '{class}' holds no images", dir.display());
            }
        }
        files.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        let decoded: Vec<Result<(Vec<u8>, bool)>> = files.par_iter().map(|(p, _)| read_gray48(p)).collect();
        let mut data = Dataset::default();
        for ((file, label), image) in files.iter().zip(decoded) {
            match image {
                Ok((pixels, resized)) => {
                    data.images.extend_from_slice(&pixels);
                    data.labels.push(*label);
                    data.sources.push(file.display().to_string());
                    data.resized += resized as usize;
                }
                Err(e) => {
                    data.skipped += 1;
                    if data.skipped <= 10 {
                        eprintln!("warning: skipped: {e:#}");
                    }
                }
            }
        }
        if data.skipped > 10 {
            eprintln!("warning: {}: {} unreadable images skipped in all", dir.display(), data.skipped);
        }
        Ok(data)
    }

    fn load_csv(path: &Path, usage: Option<&str>) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default().to_ascii_lowercase();
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        let col = |name: &str| columns.iter().position(|c| *c == name);
        let (Some(emotion_col), Some(pixels_col)) = (col("emotion"), col("pixels")) else {
            bail!("{}: expected a header with columns emotion,pixels[,Usage]", path.display());
        };
        let usage_col = col("usage");
        if usage.is_some() && usage_col.is_none() {
            bail!("{}: no Usage column to select {:?} from", path.display(), usage);
        }
        let mut data = Dataset::default();
        for (index, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if let (Some(wanted), Some(c)) = (usage, usage_col) {
                if !fields.get(c).is_some_and(|u| u.eq_ignore_ascii_case(wanted)) {
                    continue;
                }
            }
            let label = fields.get(emotion_col).and_then(|e| e.parse::<u8>().ok());
            let pixels: Option<Vec<u8>> =
                fields.get(pixels_col).and_then(|p| p.split_ascii_whitespace().map(|v| v.parse::<u8>().ok()).collect());
            match (label, pixels) {
                (Some(label), Some(pixels)) if (label as usize) < NUM_CLASSES && pixels.len() == PIXELS => {
                    data.images.extend_from_slice(&pixels);
                    data.labels.push(label);
                    data.sources.push(format!("{}:{}", path.display(), index + 2));
                }
                _ => {
                    data.skipped += 1;
                    if data.skipped <= 10 {
                        eprintln!(
                            "warning: {}:{}: skipped: expected an emotion 0..{} and {PIXELS} pixel values 0..=255",
                            path.display(),
                            index + 2,
                            NUM_CLASSES - 1
                        );
                    }
                }
            }
        }
        if data.skipped > 10 {
            eprintln!("warning: {}: {} unusable rows skipped in all", path.display(), data.skipped);
        }
        Ok(data)
    }
}

/// Decodes an image as 48x48 grayscale; `None` when unreadable; `true` when it was resized.
/// Picture files a class folder may hold (each decoded by its content).
const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "pgm"];

fn read_gray48(path: &Path) -> Result<(Vec<u8>, bool)> {
    let img = moodmirror::image_io::decode_file(path)?.into_luma8();
    if img.width() as usize == SIZE && img.height() as usize == SIZE {
        return Ok((img.into_raw(), false));
    }
    let resized = image::imageops::resize(&img, SIZE as u32, SIZE as u32, image::imageops::FilterType::Triangle);
    Ok((resized.into_raw(), true))
}

/// The one-hot row of a hard label.
pub fn one_hot(label: u8) -> [f32; NUM_CLASSES] {
    std::array::from_fn(|c| if c == label as usize { 1.0 } else { 0.0 })
}

/// Whether `dir` has any of the class folders (then it is a class-folder data set).
fn has_class_folders(dir: &Path) -> bool {
    CLASS_NAMES.iter().any(|c| dir.join(c).is_dir())
}

/// Whether `path` is a labels CSV of the originals (its header names `fer2013_label`).
fn is_votes_csv(path: &Path) -> bool {
    use std::io::BufRead;
    let Ok(file) = std::fs::File::open(path) else { return false };
    let mut header = String::new();
    std::io::BufReader::new(file).read_line(&mut header).is_ok() && header.to_ascii_lowercase().contains("fer2013_label")
}
