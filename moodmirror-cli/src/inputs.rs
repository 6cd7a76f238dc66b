//! What the commands that take files (`annotate`, `image`) read: files as given, folders as the
//! files in them (not their subfolders) whose extension says they are of the command's kind,
//! sorted, so that `moodmirror image photos/` does what `moodmirror image photos/*.jpg` would.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Extensions `annotate` takes from a folder.
pub const VIDEO_EXTENSIONS: [&str; 14] =
    ["mp4", "m4v", "mkv", "webm", "avi", "mov", "ts", "mts", "m2ts", "flv", "wmv", "mpg", "mpeg", "ogv"];

/// Extensions `image` takes from a folder (a file named on the command line is read whatever its
/// name: formats are told apart by content).
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"];

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e.to_ascii_lowercase().as_str()))
}

/// The files `inputs` name: files as given; each folder as its files with one of `extensions`
/// (sorted; hidden files, subfolders and what `skip` says left out).
pub fn expand_folders(inputs: &[PathBuf], extensions: &[&str], skip: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if !input.is_dir() {
            files.push(input.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(input)
            .with_context(|| format!("reading folder {}", input.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
                !hidden && p.is_file() && has_extension(p, extensions) && !skip(p)
            })
            .collect();
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_become_their_files_of_the_kind_sorted_and_files_stay_as_given() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        for name in ["b.JPG", "a.png", "notes.txt", ".hidden.jpg", "skip.me.png"] {
            std::fs::write(d.join(name), b"x").expect("write");
        }
        std::fs::create_dir(d.join("sub.jpg")).expect("mkdir");
        std::fs::write(d.join("sub.jpg/c.jpg"), b"x").expect("write");
        let given = PathBuf::from("/elsewhere/named.dat");
        let files = expand_folders(&[d.to_path_buf(), given.clone()], &IMAGE_EXTENSIONS, |p| p.ends_with("skip.me.png")).expect("expand");
        assert_eq!(files, vec![d.join("a.png"), d.join("b.JPG"), given]);
    }
}
