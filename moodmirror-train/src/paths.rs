//! Output locations, checked before any work: a run that fails only when it writes has wasted
//! its time (an epoch, a whole video).

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Refuses a folder that does not exist, is not a folder or cannot be written (a probe file is
/// created and removed), naming the output (`what`, as the user named it, and `output`) it was
/// for. An empty folder means the current one.
pub fn check_folder_writable(folder: &Path, what: &str, output: &Path) -> Result<()> {
    let folder = if folder.as_os_str().is_empty() { Path::new(".") } else { folder };
    if !folder.is_dir() {
        bail!("{what} {}: the folder {} does not exist", output.display(), folder.display());
    }
    let probe = folder.join(format!(".moodmirror-write-check-{}", std::process::id()));
    std::fs::File::create(&probe).with_context(|| format!("{what} {}: cannot write in {}", output.display(), folder.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// `path` made absolute with `.` and `..` resolved (through the file system where it exists, so
/// that links to one file compare equal; lexically for what does not exist yet).
pub fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let absolute = std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf());
    // The parent may exist (and hold links) even where the file does not.
    if let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) {
        if let Ok(p) = parent.canonicalize() {
            return p.join(name);
        }
    }
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Refuses an output that is one of the inputs (the same file, through links or `..` too): a
/// run would replace what it reads, and a failed or worse run would lose it.
pub fn check_not_an_input<'a>(output: &Path, what: &str, inputs: impl IntoIterator<Item = &'a Path>) -> Result<()> {
    let target = resolved(output);
    for input in inputs {
        if resolved(input) == target {
            bail!("{what} {} is one of the inputs ({}): refusing to write over it", output.display(), input.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_that_is_an_input_is_refused_whatever_its_spelling() {
        let dir = tempfile::tempdir().expect("tmp");
        let input = dir.path().join("model.safetensors");
        std::fs::write(&input, b"x").expect("write");
        let other = dir.path().join("other.safetensors");
        std::fs::write(&other, b"y").expect("write");
        let spelled = dir.path().join(".").join("model.safetensors");
        let err = check_not_an_input(&spelled, "--out", [other.as_path(), input.as_path()]).expect_err("refused");
        assert!(err.to_string().contains("is one of the inputs"), "{err}");
        assert!(check_not_an_input(&dir.path().join("new.safetensors"), "--out", [input.as_path()]).is_ok());
        assert!(check_not_an_input(&other, "--out", [input.as_path()]).is_ok());
    }
}
