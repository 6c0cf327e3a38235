//! ffmpeg's `fps` filter's choice of frames, made one frame at a time ([`SlotSampler`]):
//! the one sampler of the workspace (the pass's consumers and [`super::decode_frames`]).

/// The output slot of a timestamp: `av_rescale_q_rnd(ts, tb, 1/fps, NEAR_INF)` (halves
/// round away from zero), as ffmpeg's `fps` filter.
pub fn slot_of(ts: i64, tb: f64, fps: f64) -> i64 {
    (ts as f64 * tb * fps).round() as i64
}

/// ffmpeg's `fps` filter's choice of frames, one frame at a time: which frame shows each
/// output slot `k` (at `k / fps` seconds), with `round=near`. A frame is shown for every
/// slot up to the next frame's slot (dropped when it shares its slot with a later frame,
/// repeated when the source has gaps); at the end, slots up to the rounded end time are
/// filled.
#[derive(Debug, Clone)]
pub struct SlotSampler {
    fps: f64,
    tb: f64,
    origin: i64,
    /// The slot of the frame pushed last, if any.
    current: Option<i64>,
    next_slot: i64,
}

impl SlotSampler {
    /// A sampler at `fps` frames per second over timestamps of `tb` seconds per tick, its
    /// slots counted from `origin` ticks ([`super::pass::StreamInfo::origin`]).
    pub fn new(fps: f64, tb: f64, origin: i64) -> Self {
        Self {
            fps,
            tb,
            origin,
            current: None,
            next_slot: 0,
        }
    }

    /// Pushes the next frame (timestamp `ts`); returns how many slots the frame pushed
    /// before it shows (0: it is dropped).
    pub fn push(&mut self, ts: i64) -> usize {
        let slot = slot_of(ts - self.origin, self.tb, self.fps);
        let shown = match self.current {
            None => {
                self.next_slot = slot;
                0
            }
            Some(_) => {
                let n = (slot - self.next_slot).max(0);
                self.next_slot += n;
                n as usize
            }
        };
        self.current = Some(slot);
        shown
    }

    /// The end of the stream (or range) at `end_ts` ticks (`None`: unknown); returns how
    /// many slots the last frame pushed shows.
    pub fn finish(&mut self, end_ts: Option<i64>) -> usize {
        let Some(slot) = self.current.take() else {
            return 0;
        };
        let end_slot = end_ts.map_or(slot + 1, |end| {
            slot_of(end - self.origin, self.tb, self.fps)
        });
        let n = (end_slot - self.next_slot).max(0);
        self.next_slot += n;
        n as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_fps_filter() {
        // 25 fps source (tb 1/25), 1 fps: frames 0..=49 -> slot k shows the last frame
        // rounding to k: frame 12 (0.48 s) for slot 0, frame 37 for slot 1
        let mut sampler = SlotSampler::new(1.0, 1.0 / 25.0, 0);
        let mut shown = Vec::new();
        for ts in 0..50 {
            let n = sampler.push(ts);
            if n > 0 {
                shown.push((ts - 1, n));
            }
        }
        let last = sampler.finish(Some(50));
        assert_eq!(shown, [(12, 1), (37, 1)]);
        // the end at 2.0 s rounds to slot 2: two slots in all, as `ffmpeg -vf fps=1`
        assert_eq!(last, 0);
        // a gap repeats the frame before it
        let mut sampler = SlotSampler::new(1.0, 1.0, 0);
        assert_eq!(sampler.push(0), 0);
        assert_eq!(sampler.push(3), 3);
        assert_eq!(sampler.finish(Some(4)), 1);
    }
}
