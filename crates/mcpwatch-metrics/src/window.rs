//! Sliding windows for the in-process rates: `SLOTS` slots of `window / SLOTS` each, rotated by
//! the stage's clock, so a rate covers the last window (to within one slot) of commit time.

/// Slots per window.
pub const SLOTS: usize = 30;

/// Counts in one slot (or summed over a window).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Everything counted.
    pub total: u64,
    /// Of which succeeded.
    pub ok: u64,
    /// Of which got an answer (result or error; not timeout or transport error).
    pub answered: u64,
}

impl Tally {
    /// Adds one observation.
    pub fn add(&mut self, ok: bool, answered: bool) {
        self.total += 1;
        self.ok += u64::from(ok);
        self.answered += u64::from(answered);
    }

    /// `ok / total`, NaN without observations.
    pub fn ok_ratio(&self) -> f64 {
        ratio(self.ok, self.total)
    }

    /// `(total - ok) / total`, NaN without observations.
    pub fn error_ratio(&self) -> f64 {
        ratio(self.total - self.ok, self.total)
    }

    /// `answered / total`, NaN without observations.
    pub fn answered_ratio(&self) -> f64 {
        ratio(self.answered, self.total)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// One key's window.
#[derive(Debug, Clone)]
pub struct Window {
    slots: [Tally; SLOTS],
    epoch: u64,
}

impl Window {
    /// An empty window at slot `epoch`.
    pub fn new(epoch: u64) -> Self {
        Self {
            slots: [Tally::default(); SLOTS],
            epoch,
        }
    }

    fn rotate(&mut self, epoch: u64) {
        if epoch <= self.epoch {
            return;
        }
        let gap = (epoch - self.epoch).min(SLOTS as u64);
        for i in 1..=gap {
            self.slots[((self.epoch + i) % SLOTS as u64) as usize] = Tally::default();
        }
        self.epoch = epoch;
    }

    /// The slot of `epoch` (the newest slot if the clock went back).
    pub fn slot(&mut self, epoch: u64) -> &mut Tally {
        self.rotate(epoch);
        &mut self.slots[(self.epoch % SLOTS as u64) as usize]
    }

    /// The sum over the window ending at `epoch`.
    pub fn sum(&mut self, epoch: u64) -> Tally {
        self.rotate(epoch);
        self.slots.iter().fold(Tally::default(), |a, t| Tally {
            total: a.total + t.total,
            ok: a.ok + t.ok,
            answered: a.answered + t.answered,
        })
    }
}

/// Maps wall time to slots.
#[derive(Debug, Clone, Copy)]
pub struct Slots {
    slot_us: i64,
    start_us: i64,
}

impl Slots {
    /// Slots for `window`, counting from `start_us`.
    pub fn new(window: std::time::Duration, start_us: i64) -> Self {
        let slot_us = (window.as_micros() as i64 / SLOTS as i64).max(1);
        Self { slot_us, start_us }
    }

    /// The slot number of `now_us`.
    pub fn epoch(&self, now_us: i64) -> u64 {
        (now_us.max(0) / self.slot_us) as u64
    }

    /// Seconds the window ending at `now_us` really covers: less than the window at start.
    pub fn covered_secs(&self, now_us: i64) -> f64 {
        let oldest = (self.epoch(now_us) as i64 - (SLOTS as i64 - 1)) * self.slot_us;
        let from = oldest.max(self.start_us);
        ((now_us - from).max(1)) as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_slots_fall_out_of_the_window() {
        let mut w = Window::new(0);
        w.slot(0).add(true, true);
        w.slot(5).add(false, true);
        assert_eq!(w.sum(5).total, 2);
        assert_eq!(w.sum(29).total, 2);
        assert_eq!(
            w.sum(30),
            Tally {
                total: 1,
                ok: 0,
                answered: 1
            }
        );
        assert_eq!(w.sum(35).total, 0);
        assert!(w.sum(35).ok_ratio().is_nan());
    }

    #[test]
    fn a_clock_going_back_counts_in_the_newest_slot() {
        let mut w = Window::new(10);
        w.slot(3).add(true, true);
        assert_eq!(w.sum(10).ok, 1);
    }

    #[test]
    fn covered_time_grows_to_the_window() {
        let s = Slots::new(std::time::Duration::from_secs(300), 1_000_000_000);
        assert!((s.covered_secs(1_000_000_000 + 20_000_000) - 20.0).abs() < 1e-9);
        let later = 1_000_000_000 + 3_600_000_000;
        let c = s.covered_secs(later);
        assert!((290.0..=300.0).contains(&c), "{c}");
    }
}
