//! When each message is meant to be sent, and how its latency is counted.
//!
//! - [`now_ns`]: the one clock of the harness (CLOCK_MONOTONIC through [`Instant`], measured
//!   from a process-wide origin). Producers write it into each message and consumers read it on
//!   receipt in the same process, so an end-to-end latency is a difference of two readings of
//!   the same clock.
//! - [`Schedule`]: the open-loop fixed-rate schedule, message `i` at `start + i / rate`,
//!   computed from the index (never by adding intervals, so it does not drift).
//! - [`Pacer`]: what a producer does next: send message `i` now, or wait until its time. In
//!   open loop a producer that fell behind (a stall, a full buffer) sends the overdue messages
//!   back to back until it has caught up, as the OpenMessaging Benchmark does; in closed loop it
//!   always sends at once.
//! - [`LatencyPair`]: coordinated-omission correction. Each latency is recorded twice: from the
//!   message's *intended* send time (corrected: a stall of the system under test delays the
//!   sends behind it, and that delay is counted) and from the moment it was actually handed to
//!   the client (uncorrected: what a naive closed-loop harness reports, which hides stalls). In
//!   closed loop both are the same.

use std::sync::OnceLock;
use std::time::Instant;

use crate::histogram::Latency;

/// Nanoseconds since the harness's clock origin (the first call in the process).
pub fn now_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The `Instant` of a [`now_ns`] reading (for tokio timers).
pub fn instant_at(ns: u64) -> tokio::time::Instant {
    let now = now_ns();
    let base = tokio::time::Instant::now();
    if ns >= now {
        base + std::time::Duration::from_nanos(ns - now)
    } else {
        base.checked_sub(std::time::Duration::from_nanos(now - ns))
            .unwrap_or(base)
    }
}

/// A fixed-rate schedule: message `i` is due at `start_ns + i * 1e9 / rate_per_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    start_ns: u64,
    interval_ns: f64,
}

impl Schedule {
    /// A schedule of `rate_per_s` messages per second from `start_ns`. `rate_per_s` must be
    /// positive and finite (checked when the arguments are validated).
    pub fn new(start_ns: u64, rate_per_s: f64) -> Self {
        Schedule {
            start_ns,
            interval_ns: 1e9 / rate_per_s,
        }
    }

    /// When message `index` is due. Computed from the index: no accumulated rounding (an f64
    /// holds 53 bits: exact to the nanosecond for 100 days at any rate).
    pub fn intended_ns(&self, index: u64) -> u64 {
        self.start_ns + (index as f64 * self.interval_ns) as u64
    }

    /// How many messages are due by `at_ns` (indexes `0..count`).
    pub fn due_by(&self, at_ns: u64) -> u64 {
        if at_ns < self.start_ns {
            return 0;
        }
        ((at_ns - self.start_ns) as f64 / self.interval_ns) as u64 + 1
    }
}

/// The load model of a producer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// As fast as it goes: the next message is sent as soon as the client takes it (its
    /// buffer limit is the only brake).
    Closed,
    /// `rate_per_s` messages per second on a fixed schedule.
    Open {
        /// Messages per second.
        rate_per_s: f64,
    },
}

/// What a producer does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send message `index` now; its latency counts from `intended_ns`.
    Send {
        /// Sequence number of the message in this producer.
        index: u64,
        /// When it was meant to be sent.
        intended_ns: u64,
    },
    /// Nothing is due before this time.
    WaitUntil(u64),
}

/// Paces one producer: closed loop, or open loop on a [`Schedule`].
#[derive(Debug, Clone)]
pub struct Pacer {
    schedule: Option<Schedule>,
    next_index: u64,
}

impl Pacer {
    /// A pacer for `load` starting at `start_ns`.
    pub fn new(load: Load, start_ns: u64) -> Self {
        let schedule = match load {
            Load::Closed => None,
            Load::Open { rate_per_s } => Some(Schedule::new(start_ns, rate_per_s)),
        };
        Pacer {
            schedule,
            next_index: 0,
        }
    }

    /// The next step at time `now_ns`. A returned `Send` is taken: the next call moves on to
    /// the following message.
    pub fn next(&mut self, now_ns: u64) -> Next {
        let index = self.next_index;
        let intended_ns = match &self.schedule {
            None => now_ns,
            Some(schedule) => {
                let due = schedule.intended_ns(index);
                if due > now_ns {
                    return Next::WaitUntil(due);
                }
                due
            }
        };
        self.next_index += 1;
        Next::Send { index, intended_ns }
    }

    /// The intended time of the next message if it is due by `now_ns` and before
    /// `limit_ns`, taken as by [`Pacer::next`]; `None` leaves it for later.
    pub fn take_due(&mut self, now_ns: u64, limit_ns: u64) -> Option<u64> {
        let intended_ns = match &self.schedule {
            None => now_ns,
            Some(schedule) => schedule.intended_ns(self.next_index),
        };
        if intended_ns > now_ns || intended_ns >= limit_ns {
            return None;
        }
        self.next_index += 1;
        Some(intended_ns)
    }

    /// Messages handed out so far.
    pub fn sent(&self) -> u64 {
        self.next_index
    }

    /// How far behind its schedule the producer is at `now_ns`: the age of the oldest message
    /// due but not yet sent (0 in closed loop or when on time).
    pub fn lag_ns(&self, now_ns: u64) -> u64 {
        match &self.schedule {
            None => 0,
            Some(schedule) => now_ns.saturating_sub(schedule.intended_ns(self.next_index)),
        }
    }

    /// Messages the schedule wanted sent by `at_ns` (closed loop: those sent so far).
    pub fn scheduled_by(&self, at_ns: u64) -> u64 {
        match &self.schedule {
            None => self.next_index,
            Some(schedule) => schedule.due_by(at_ns),
        }
    }
}

/// One latency measured both ways (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct LatencyPair {
    /// From the intended send time: what a user at the target rate experiences.
    pub corrected: Latency,
    /// From the actual send time: hides the time a message waited to be sent.
    pub uncorrected: Latency,
}

impl LatencyPair {
    /// Records a message meant to go at `intended_ns`, handed to the client at `sent_ns` and
    /// completed (acknowledged or received) at `done_ns`.
    pub fn record(&mut self, intended_ns: u64, sent_ns: u64, done_ns: u64) {
        self.corrected.record(done_ns.saturating_sub(intended_ns));
        self.uncorrected.record(done_ns.saturating_sub(sent_ns));
    }

    /// Adds another task's latencies.
    pub fn merge(&mut self, other: &LatencyPair) {
        self.corrected.merge(&other.corrected);
        self.uncorrected.merge(&other.uncorrected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    /// The schedule is computed from the index: a rate whose interval is not a whole number of
    /// nanoseconds still lands exactly on the second after `rate` messages.
    /// `take_due` hands out only messages due by now and before the limit, in order, and
    /// leaves the others for later.
    #[test]
    fn take_due_stops_at_now_and_limit() {
        let mut pacer = Pacer::new(Load::Open { rate_per_s: 1000.0 }, 0);
        assert_eq!(pacer.take_due(2 * MS, u64::MAX), Some(0));
        assert_eq!(pacer.take_due(2 * MS, u64::MAX), Some(MS));
        assert_eq!(pacer.take_due(2 * MS, 2 * MS), None);
        assert_eq!(pacer.take_due(2 * MS, u64::MAX), Some(2 * MS));
        assert_eq!(pacer.take_due(2 * MS, u64::MAX), None);
        assert_eq!(pacer.sent(), 3);
        let mut closed = Pacer::new(Load::Closed, 0);
        assert_eq!(closed.take_due(7, u64::MAX), Some(7));
        assert_eq!(closed.take_due(7, 7), None);
        assert_eq!(closed.sent(), 1);
    }

    #[test]
    fn schedule_does_not_drift() {
        let schedule = Schedule::new(1000, 3.0);
        assert_eq!(schedule.intended_ns(0), 1000);
        assert_eq!(schedule.intended_ns(1), 1000 + 333_333_333);
        assert_eq!(schedule.intended_ns(3), 1000 + S);
        assert_eq!(schedule.intended_ns(3_000_000), 1000 + 1_000_000 * S);
        let fast = Schedule::new(0, 700_000.0);
        assert_eq!(fast.intended_ns(700_000 * 60), 60 * S);
        assert_eq!(fast.due_by(0), 1);
        assert_eq!(fast.due_by(S), 700_001);
        assert_eq!(Schedule::new(5, 1.0).due_by(4), 0);
    }

    /// An open-loop pacer waits when ahead, sends when due, and after a stall sends every
    /// overdue message at once (each keeping its own intended time) until it has caught up.
    #[test]
    fn pacer_waits_sends_and_catches_up() {
        let mut pacer = Pacer::new(Load::Open { rate_per_s: 1000.0 }, 10 * S);
        assert_eq!(pacer.next(10 * S - 1), Next::WaitUntil(10 * S));
        assert_eq!(
            pacer.next(10 * S),
            Next::Send {
                index: 0,
                intended_ns: 10 * S
            }
        );
        assert_eq!(pacer.next(10 * S + 1), Next::WaitUntil(10 * S + MS));
        // Stalled until 10 s + 5.5 ms: messages 1..=5 are overdue and go back to back.
        let now = 10 * S + 5 * MS + MS / 2;
        assert_eq!(pacer.lag_ns(now), 4 * MS + MS / 2);
        for index in 1..=5 {
            assert_eq!(
                pacer.next(now),
                Next::Send {
                    index,
                    intended_ns: 10 * S + index * MS
                }
            );
        }
        assert_eq!(pacer.next(now), Next::WaitUntil(10 * S + 6 * MS));
        assert_eq!(pacer.lag_ns(now), 0);
        assert_eq!(pacer.sent(), 6);
        assert_eq!(pacer.scheduled_by(now), 6);
    }

    /// A closed-loop pacer never waits and counts from the moment of the send.
    #[test]
    fn closed_loop_pacer_sends_at_once() {
        let mut pacer = Pacer::new(Load::Closed, 0);
        assert_eq!(
            pacer.next(42),
            Next::Send {
                index: 0,
                intended_ns: 42
            }
        );
        assert_eq!(pacer.lag_ns(1_000 * S), 0);
        assert_eq!(pacer.scheduled_by(1_000 * S), 1);
    }

    /// Drives a pacer against a simulated synchronous system (one request at a time, the
    /// classic coordinated-omission trap) and returns the latencies.
    fn simulate(rate_per_s: f64, messages: u64, service_ns: impl Fn(u64) -> u64) -> LatencyPair {
        let mut pacer = Pacer::new(Load::Open { rate_per_s }, 0);
        let mut latencies = LatencyPair::default();
        let mut now = 0u64;
        while pacer.sent() < messages {
            match pacer.next(now) {
                Next::WaitUntil(at) => now = at,
                Next::Send { index, intended_ns } => {
                    let sent = now;
                    let done = sent + service_ns(index);
                    latencies.record(intended_ns, sent, done);
                    now = done; // synchronous: the next send waits for this answer
                }
            }
        }
        latencies
    }

    /// A 2 s stall in a 10 s run at 100 messages/s: the uncorrected histogram shows one slow
    /// message out of 1000 (p99 = the normal 1 ms), the corrected one shows the ~200 messages
    /// whose sends the stall delayed (p90 near a second).
    #[test]
    fn coordinated_omission_correction_shows_a_stall() {
        let stall_at = 500;
        let latencies = simulate(
            100.0,
            1000,
            |index| {
                if index == stall_at {
                    2 * S
                } else {
                    MS
                }
            },
        );
        let corrected = latencies.corrected.percentiles();
        let uncorrected = latencies.uncorrected.percentiles();
        assert_eq!(corrected.count, 1000);
        assert_eq!(uncorrected.count, 1000);
        // Uncorrected: the stall is a single sample.
        assert!(uncorrected.p99_ms < 1.01, "{uncorrected:?}");
        assert!(uncorrected.p90_ms < 1.01, "{uncorrected:?}");
        // Corrected: ~20 % of the messages waited behind the stall.
        assert!(corrected.p90_ms > 500.0, "{corrected:?}");
        assert!(corrected.p99_ms > 1500.0, "{corrected:?}");
        // Both see the stall itself as the max.
        assert!((corrected.max_ms - 2000.0).abs() < 3.0, "{corrected:?}");
        assert!((uncorrected.max_ms - 2000.0).abs() < 3.0, "{uncorrected:?}");
        // After the stall the pacer caught up: the last message is on time again.
        assert!(corrected.p50_ms < 1.01, "{corrected:?}");
    }

    /// When the system keeps up, the correction changes nothing.
    #[test]
    fn no_stall_no_correction() {
        let latencies = simulate(100.0, 500, |_| MS);
        assert_eq!(
            latencies.corrected.percentiles(),
            latencies.uncorrected.percentiles()
        );
    }

    /// The clock is monotonic and `instant_at` maps readings back to timer instants: a
    /// reading 50 ms ahead maps to an instant 50 ms after the timer clock read just before
    /// the reading, and no later than 50 ms after the one read just after the mapping
    /// (bracketed, so that a stall of the test thread anywhere cannot fail it; 1 ms of slack
    /// for the two clocks' rounding).
    #[test]
    fn clock_readings_order() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        let ahead = std::time::Duration::from_millis(50);
        let before = tokio::time::Instant::now();
        let soon = instant_at(now_ns() + 50 * MS);
        let after = tokio::time::Instant::now();
        let slack = std::time::Duration::from_millis(1);
        assert!(soon + slack >= before + ahead, "{:?}", soon - before);
        assert!(soon <= after + ahead, "{:?}", soon - after);
    }
}
