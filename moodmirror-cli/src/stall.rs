//! Noticing a file pipeline that stopped moving. decodebin now and then loses a demuxer's error on
//! a truncated MP4 (seen once in a test run: qtdemux's task paused, nothing on the bus), so a loop
//! that waits only for end-of-stream or an error waits forever.

use std::path::Path;
use std::time::{Duration, Instant};

/// How long a file pipeline may go with no new frame, no new position and no bus message.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);

/// What an MP4 without its index usually is.
pub const CUT_OFF_HINT: &str = "; an MP4/MOV whose recording was cut off before it finished has no index, and no playable streams";

/// Notices a pipeline that stopped moving: no frame, position or message for a while.
pub struct StallWatch {
    last: (u64, Option<gst::ClockTime>),
    since: Instant,
}

impl StallWatch {
    pub fn new(now: Instant) -> Self {
        Self { last: (0, None), since: now }
    }

    /// Something arrived on the bus.
    pub fn moved(&mut self, now: Instant) {
        self.since = now;
    }

    /// Records where the stream is; true once neither frames nor position changed for `limit`.
    pub fn stalled(&mut self, frames: u64, position: Option<gst::ClockTime>, now: Instant, limit: Duration) -> bool {
        if (frames, position) != self.last {
            self.last = (frames, position);
            self.since = now;
            return false;
        }
        now.saturating_duration_since(self.since) >= limit
    }
}

/// The error for a pipeline on `input` that stalled after `frames` frames.
pub fn stall_error(input: &Path, frames: u64) -> anyhow::Error {
    // With no frame at all from an MP4/MOV, the lost error was most likely the demuxer's.
    let mp4 = input.extension().and_then(|e| e.to_str()).is_some_and(|e| ["mp4", "m4v", "mov"].contains(&e.to_ascii_lowercase().as_str()));
    let hint = if frames == 0 && mp4 { CUT_OFF_HINT } else { "" };
    anyhow::anyhow!(
        "nothing moved for {} s after {frames} frames: the pipeline stalled (is the file truncated or damaged?){hint}",
        STALL_LIMIT.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_is_stalled_only_when_nothing_moved_for_the_limit() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(30);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut watch = StallWatch::new(t0);
        // Prerolling: no frame, no position yet, but not for long.
        assert!(!watch.stalled(0, None, at(29), limit));
        // Frames arriving keep it alive however long the file is.
        assert!(!watch.stalled(10, Some(gst::ClockTime::from_seconds(1)), at(40), limit));
        assert!(!watch.stalled(500, Some(gst::ClockTime::from_seconds(20)), at(100), limit));
        // A bus message counts as movement too.
        watch.moved(at(120));
        assert!(!watch.stalled(500, Some(gst::ClockTime::from_seconds(20)), at(149), limit));
        // Then nothing for the limit: stalled.
        assert!(watch.stalled(500, Some(gst::ClockTime::from_seconds(20)), at(150), limit));
        // A file that never gives a frame nor a message is stalled after the limit.
        let mut never = StallWatch::new(t0);
        assert!(!never.stalled(0, None, at(10), limit));
        assert!(never.stalled(0, None, at(30), limit));
    }

    #[test]
    fn the_stall_error_hints_at_a_cut_off_mp4_only_when_it_gave_no_frame() {
        assert!(stall_error(Path::new("rec.MP4"), 0).to_string().contains("cut off before it finished"));
        assert!(!stall_error(Path::new("rec.mp4"), 12).to_string().contains("cut off"));
        assert!(!stall_error(Path::new("rec.mkv"), 0).to_string().contains("cut off"));
    }
}
