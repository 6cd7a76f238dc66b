//! The thread count candle's products use, set once by the `moodmirror` binary.

/// candle asks for its thread count on every matrix product and, unless `RAYON_NUM_THREADS` is
/// set, answers by parsing /proc/cpuinfo each time (a third of MTCNN's time here, when MTCNN was
/// the default). The `moodmirror` binary sets the variable once, at the start of `main` before
/// any other thread exists, to the physical core count candle would have found. The plugin does
/// not: a loaded plugin shares its process (OBS, a Python app, gst-inspect's registry scan) with
/// threads that may read the environment while it is written, and the variable would change
/// rayon for every other library there. The element's per-frame networks run on moodmirror's own
/// kernels, with a few candle products left per classification batch.
///
/// # Safety
///
/// No other thread may exist (or read the environment) while this runs.
pub unsafe fn configure() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            // SAFETY: the caller guarantees no other thread exists yet.
            unsafe { std::env::set_var("RAYON_NUM_THREADS", num_cpus::get_physical().max(1).to_string()) };
            THREADS_SET_BY_US.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
}

static THREADS_SET_BY_US: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `RAYON_NUM_THREADS` comes from [`configure`] rather than the user.
pub fn set_by_us() -> bool {
    THREADS_SET_BY_US.load(std::sync::atomic::Ordering::Relaxed)
}
