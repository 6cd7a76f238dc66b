//! Where the CLI's outputs go, checked before any work: never over an input, never over a file
//! whose name says it is media when a results file was meant (a forgotten `--jsonl` argument),
//! distinct names for inputs that share a stem, folders that exist and can be written, and a lock
//! so that a second run on the same output fails instead of interleaving with the first.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Extensions of pictures and videos: a results file (JSON lines) never gets one of these.
const MEDIA_EXTENSIONS: [&str; 26] = [
    "png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif", "heic", "avif", "mp4", "m4v", "mkv", "webm", "avi", "mov", "ts", "mts",
    "m2ts", "flv", "wmv", "mpg", "mpeg", "ogv", "3gp", "mxf",
];

/// Whether `path`'s extension is that of a picture or a video.
pub fn has_media_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| MEDIA_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Refuses an output `path` (`what`: how the user named it, e.g. "--jsonl") that is one of
/// `inputs`, a folder, or, for a results file (`results`), named like a picture or video; and
/// one whose folder is missing or cannot be written. Called before any work.
pub fn check_output(path: &Path, what: &str, inputs: &[PathBuf], results: bool) -> Result<()> {
    check_not_an_input(path, what, inputs.iter().map(PathBuf::as_path))?;
    let target = resolved(path);
    if results && has_media_extension(path) {
        bail!(
            "{what} {} is named like a picture or video, not a results file: was the path after {what} forgotten? \
             (name it .jsonl, or '-' for standard output)",
            path.display()
        );
    }
    if path.is_dir() {
        bail!("{what} {} is a folder: name a file", path.display());
    }
    check_folder_writable(target.parent().unwrap_or(Path::new("/")), what, path)
}

pub use moodmirror_train::paths::{check_folder_writable, check_not_an_input, resolved};

/// One output name per input, in `folder` (or beside each input when `None`), as
/// `STEM{suffix}`: inputs sharing a stem (`t.mp4` and `t.mov`, `a/clip.mp4` and `b/clip.mp4`)
/// get their extension, then their parent folders' names, then a number, until every name is
/// distinct and none is an input.
pub fn distinct_names(inputs: &[PathBuf], folder: Option<&Path>, suffix: &str) -> Vec<PathBuf> {
    let taken_inputs: HashSet<PathBuf> = inputs.iter().map(|i| resolved(i)).collect();
    let mut used: HashSet<PathBuf> = HashSet::new();
    let candidates = |input: &Path| -> Vec<String> {
        let stem = input.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "output".into());
        let ext = input.extension().map(|e| e.to_string_lossy().to_string());
        let mut names = vec![stem.clone()];
        if let Some(ext) = &ext {
            names.push(format!("{stem}.{ext}"));
        }
        // Parent folders, nearest first: a/clip.mp4 → a_clip, x/a/clip.mp4 → x_a_clip.
        let mut prefix = String::new();
        for parent in resolved(input).parent().into_iter().flat_map(|p| p.ancestors()).take(3) {
            if let Some(name) = parent.file_name() {
                prefix = format!("{}_{prefix}", name.to_string_lossy());
                names.push(format!("{prefix}{stem}"));
            }
        }
        names
    };
    let dir_of = |input: &Path| folder.map(Path::to_path_buf).unwrap_or_else(|| input.parent().map(Path::to_path_buf).unwrap_or_default());
    // Stems shared by several inputs in one output folder take a longer name for all of them,
    // not only the later ones.
    let keys: Vec<(PathBuf, String)> =
        inputs.iter().map(|i| (resolved(&dir_of(i)), i.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default())).collect();
    inputs
        .iter()
        .enumerate()
        .map(|(k, input)| {
            let dir = dir_of(input);
            let shared = keys.iter().filter(|key| **key == keys[k]).count() > 1;
            let names = candidates(input);
            let mut chosen = None;
            for name in names.iter().skip(usize::from(shared)) {
                let path = dir.join(format!("{name}{suffix}"));
                let key = resolved(&path);
                if !used.contains(&key) && !taken_inputs.contains(&key) {
                    chosen = Some(path);
                    break;
                }
            }
            let path = chosen.unwrap_or_else(|| {
                let last = names.last().cloned().unwrap_or_default();
                (2..)
                    .map(|n| dir.join(format!("{last}-{n}{suffix}")))
                    .find(|p| !used.contains(&resolved(p)) && !taken_inputs.contains(&resolved(p)))
                    .unwrap_or_default()
            });
            used.insert(resolved(&path));
            path
        })
        .collect()
}

/// A lock on an output: `OUTPUT.lock`, created exclusively, removed when dropped. A second run
/// writing the same output fails with a message naming the lock instead of interleaving.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
}

impl OutputLock {
    pub fn acquire(output: &Path) -> Result<Self> {
        let mut name = output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".lock");
        let path = output.with_file_name(name);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => Ok(Self { path }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "{} is being written by another moodmirror run ({} exists; remove it if no run is going on)",
                output.display(),
                path.display()
            ),
            Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `path` with `.partial` appended: outputs are written there and renamed when complete.
pub fn partial(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_never_replace_inputs_or_media_and_need_a_writable_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.png");
        std::fs::write(&a, b"png").expect("write");
        let err = check_output(&a, "--jsonl", std::slice::from_ref(&a), true).expect_err("an input");
        assert!(err.to_string().contains("one of the inputs"), "{err}");
        // The same file named another way.
        let other_way = dir.path().join(".").join("a.png");
        assert!(check_output(&other_way, "-o", std::slice::from_ref(&a), false).is_err());
        let err = check_output(&dir.path().join("b.jpg"), "--jsonl", std::slice::from_ref(&a), true).expect_err("media");
        assert!(err.to_string().contains("forgotten"), "{err}");
        assert!(check_output(dir.path(), "-o", &[], false).is_err(), "a folder");
        let err = check_output(&dir.path().join("missing/x.jsonl"), "--jsonl", &[], true).expect_err("missing folder");
        assert!(err.to_string().contains("does not exist") && err.to_string().contains("missing"), "{err}");
        check_output(&dir.path().join("out.jsonl"), "--jsonl", std::slice::from_ref(&a), true).expect("fine");
    }

    #[test]
    fn inputs_sharing_a_stem_get_distinct_outputs() {
        let names = |inputs: &[&str], folder: Option<&str>| {
            let inputs: Vec<PathBuf> = inputs.iter().map(PathBuf::from).collect();
            distinct_names(&inputs, folder.map(Path::new), ".moodmirror.mp4")
        };
        let out = names(&["t.mp4", "t.mov", "u.mp4"], Some("out"));
        assert_eq!(out, [PathBuf::from("out/t.mp4.moodmirror.mp4"), "out/t.mov.moodmirror.mp4".into(), "out/u.moodmirror.mp4".into()]);
        let out = names(&["a/clip.mp4", "b/clip.mp4"], Some("out"));
        assert_eq!(out.len(), 2);
        assert_ne!(out[0], out[1], "{out:?}");
        // Beside each input, in different folders: the plain names do not collide.
        let out = names(&["a/clip.mp4", "b/clip.mp4"], None);
        assert_eq!(out, [PathBuf::from("a/clip.moodmirror.mp4"), "b/clip.moodmirror.mp4".into()]);
        // A name equal to an input is never chosen.
        let inputs = [PathBuf::from("p.png")];
        let out = distinct_names(&inputs, Some(Path::new(".")), ".png");
        assert_ne!(resolved(&out[0]), resolved(&inputs[0]), "{out:?}");
    }

    #[test]
    fn a_second_lock_on_an_output_fails_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("o.mp4");
        let first = OutputLock::acquire(&out).expect("first");
        let err = OutputLock::acquire(&out).expect_err("second");
        assert!(err.to_string().contains("another moodmirror run"), "{err}");
        drop(first);
        OutputLock::acquire(&out).expect("after the first");
    }
}
