//! The time the element's tracks age by, made to always move forward with the frames.

/// How far apart frames without times or a frame rate are taken to be (30 frames/s).
const UNTIMED_FRAME_NS: u64 = 33_333_333;
/// A frame this much earlier than the last (without a flush) starts the faces afresh.
const TIME_RUNS_BACK_NS: u64 = 1_000_000_000;

/// Each frame's time for track ages: its running time where it has one. A frame without one (a
/// source that stamps no times) comes one frame duration after the last: with one time for
/// every frame, a face that left would stay "just seen" for ever.
#[derive(Debug, Default)]
pub struct TrackClock {
    last_ns: u64,
}

/// A frame's time, and whether it ran back from the last frame's by over a second without a
/// flush (a source that restarted its clock): a discontinuity as a seek is, since tracks "seen"
/// later than now would not age until the new clock caught up with the old.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    pub now_ns: u64,
    pub ran_back: bool,
}

impl TrackClock {
    /// The time of a frame with running time `time`; one without steps by `duration` (the
    /// buffer's), else `frame_ns` (the caps' frame rate), else 1/30 s.
    pub fn tick(&mut self, time: Option<u64>, duration: Option<u64>, frame_ns: Option<u64>) -> Tick {
        let now_ns = time.unwrap_or_else(|| self.last_ns.saturating_add(duration.or(frame_ns).unwrap_or(UNTIMED_FRAME_NS)));
        let ran_back = now_ns.saturating_add(TIME_RUNS_BACK_NS) < self.last_ns;
        self.last_ns = now_ns;
        Tick { now_ns, ran_back }
    }

    /// After a flush or a new stream: times start again from nothing.
    pub fn reset(&mut self) {
        self.last_ns = 0;
    }
}

/// The frame duration of a frame rate, if it is one (`0/1` says variable).
pub fn frame_ns(fps: gst::Fraction) -> Option<u64> {
    let (n, d) = (u64::try_from(fps.numer()).ok()?, u64::try_from(fps.denom()).ok()?);
    (n > 0 && d > 0).then(|| gst::ClockTime::SECOND.nseconds().saturating_mul(d) / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untimed_frames_step_by_their_duration_the_frame_rate_or_a_thirtieth() {
        let mut clock = TrackClock::default();
        assert_eq!(clock.tick(Some(5_000_000_000), None, None).now_ns, 5_000_000_000);
        assert_eq!(clock.tick(None, Some(40_000_000), Some(20_000_000)).now_ns, 5_040_000_000);
        assert_eq!(clock.tick(None, None, frame_ns(gst::Fraction::new(50, 1))).now_ns, 5_060_000_000);
        assert_eq!(clock.tick(None, None, frame_ns(gst::Fraction::new(0, 1))).now_ns, 5_093_333_333);
    }

    #[test]
    fn a_clock_that_runs_back_over_a_second_is_a_discontinuity() {
        let mut clock = TrackClock::default();
        clock.tick(Some(3_000_000_000), None, None);
        assert!(!clock.tick(Some(2_500_000_000), None, None).ran_back, "jitter under a second");
        assert!(clock.tick(Some(0), None, None).ran_back);
        clock.reset();
        assert!(!clock.tick(None, None, None).ran_back);
    }
}
