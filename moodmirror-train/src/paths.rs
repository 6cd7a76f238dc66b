//! Output locations, checked before any work: a run that fails only when it writes has wasted
//! its time (an epoch, a whole video).

use std::path::Path;

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
