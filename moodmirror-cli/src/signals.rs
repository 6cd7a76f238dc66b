//! Counting SIGINT and SIGTERM while a long command runs (`annotate`, `listen`), so that it
//! finishes its outputs instead of dying with half-written files.

use std::sync::atomic::{AtomicUsize, Ordering};

static COUNT: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic add: async-signal-safe.
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// The handlers, installed until dropped (the previous ones are put back).
pub struct Interrupts {
    previous: [(libc::c_int, libc::sighandler_t); 2],
}

impl Interrupts {
    pub fn install() -> Self {
        COUNT.store(0, Ordering::SeqCst);
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: `on_signal` only touches an atomic, which is async-signal-safe.
        let previous = [libc::SIGINT, libc::SIGTERM].map(|sig| (sig, unsafe { libc::signal(sig, handler) }));
        Self { previous }
    }

    pub fn count(&self) -> usize {
        COUNT.load(Ordering::SeqCst)
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        for (sig, handler) in self.previous {
            // SAFETY: restores the disposition that was in place before `install`.
            unsafe {
                libc::signal(sig, handler);
            }
        }
    }
}
