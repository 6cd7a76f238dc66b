//! What both elements do alike with their per-stream state (made in `start`, dropped in `stop`):
//! locking it, and refusing a buffer that arrives when there is none.

use std::sync::{Mutex, MutexGuard};

use gst::prelude::*;
use gst::subclass::prelude::*;

/// Locks a mutex of an element; a panic elsewhere must not take the streaming thread down with
/// a poisoned lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A buffer reached an element whose state `start` has not made (or `stop` has dropped): an
/// error on the bus naming the element, and a flow error that stops the stream.
pub(crate) fn not_started<E: ElementImpl>(imp: &E) -> gst::FlowError {
    gst::element_imp_error!(imp, gst::CoreError::Negotiation, ("{} got a buffer before it was started", imp.obj().name()));
    gst::FlowError::NotNegotiated
}
