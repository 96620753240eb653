//! The history of a Jepsen-style run and its checker: producers record every attempt and every
//! acknowledgement (with its offset), consumers record what they read (with offsets), and a
//! full read of every partition after the cluster healed gives the final log. [`History::check`]
//! then compares the three, with no I/O of its own (so `sluice/tests/history_checker.rs` can
//! plant faults in made-up histories and see them caught).
//!
//! Used by the cluster tests (`sluice/tests/cluster.rs`, through `common/workload.rs`).
//!
//! ```text
//!  producers ─ attempt(id, partition) ─ acked(id, partition, offset) | failed(id, why) ─┐
//!  consumers ─ read(reader, partition, offset, value) ──────────────────────────────────┤ History
//!  after healing: every partition from offset 0 ─────────────────────────── FinalLog ───┘   │
//!                                                                                check ─────┘
//!  lost · duplicated · reordered · phantom · misplaced · conflicting acks · read then lost
//! ```
//!
//! Every message value is unique: `p{producer}-{seq}` ([`MessageId`]), `seq` counting up in
//! the order the producer sent them.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// One message: which producer sent it and its place in that producer's send order. Its
/// value on the wire is [`MessageId::value`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    /// The producer (each producer of a run has its own number).
    pub producer: u32,
    /// Position in the producer's send order, from 0.
    pub seq: u64,
}

impl MessageId {
    /// A message id.
    pub fn new(producer: u32, seq: u64) -> MessageId {
        MessageId { producer, seq }
    }

    /// The record value that carries this id: `p{producer}-{seq}`.
    pub fn value(&self) -> String {
        format!("p{}-{}", self.producer, self.seq)
    }

    /// The id a record value carries, or `None` when it is not one of ours.
    pub fn parse(value: &[u8]) -> Option<MessageId> {
        let text = std::str::from_utf8(value).ok()?;
        let (producer, seq) = text.strip_prefix('p')?.split_once('-')?;
        // Reject leading zeros and signs so that only the canonical spelling parses.
        let canonical = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !canonical(producer) || !canonical(seq) {
            return None;
        }
        let id = MessageId::new(producer.parse().ok()?, seq.parse().ok()?);
        (id.value().as_bytes() == value).then_some(id)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}-{}", self.producer, self.seq)
    }
}

/// What became of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent, no answer yet (the run stopped first): it may or may not be in the log.
    Pending,
    /// Acknowledged: the broker promised it is at `offset` of `partition`.
    Acked {
        /// Partition the acknowledgement named.
        partition: u32,
        /// Offset the acknowledgement named.
        offset: u64,
    },
    /// The producer gave up: it may or may not be in the log.
    Failed(String),
}

/// One send attempt.
#[derive(Debug, Clone)]
struct Attempt {
    partition: u32,
    outcome: Outcome,
}

/// One record a consumer read during the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Who read it (for the report).
    pub reader: String,
    /// Partition.
    pub partition: u32,
    /// Offset it was read at.
    pub offset: u64,
    /// Its value.
    pub value: Vec<u8>,
}

/// Every partition's records after healing, read from offset 0: `(offset, value)` in log
/// order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinalLog {
    /// Partition -> its records in log order.
    pub partitions: BTreeMap<u32, Vec<(u64, Vec<u8>)>>,
}

impl FinalLog {
    /// Number of records over all partitions.
    pub fn len(&self) -> usize {
        self.partitions.values().map(Vec::len).sum()
    }

    /// True when no partition holds a record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything producers sent and consumers read during one run.
#[derive(Debug, Clone, Default)]
pub struct History {
    attempts: BTreeMap<MessageId, Attempt>,
    reads: Vec<Read>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// `id` is about to be sent to `partition`. Panics on a reused id: values must be unique
    /// for the check to mean anything.
    pub fn attempt(&mut self, id: MessageId, partition: u32) {
        let previous = self.attempts.insert(
            id,
            Attempt {
                partition,
                outcome: Outcome::Pending,
            },
        );
        assert!(previous.is_none(), "message id {id} sent twice");
    }

    /// `id` was acknowledged at `offset` of `partition`.
    pub fn acked(&mut self, id: MessageId, partition: u32, offset: u64) {
        self.set_outcome(id, Outcome::Acked { partition, offset });
    }

    /// The producer gave up on `id`.
    pub fn failed(&mut self, id: MessageId, why: impl Into<String>) {
        self.set_outcome(id, Outcome::Failed(why.into()));
    }

    fn set_outcome(&mut self, id: MessageId, outcome: Outcome) {
        let attempt = self
            .attempts
            .get_mut(&id)
            .unwrap_or_else(|| panic!("outcome for {id}, which was never attempted"));
        attempt.outcome = outcome;
    }

    /// `reader` read `value` at `offset` of `partition`.
    pub fn read(&mut self, reader: &str, partition: u32, offset: u64, value: &[u8]) {
        self.reads.push(Read {
            reader: reader.to_owned(),
            partition,
            offset,
            value: value.to_vec(),
        });
    }

    /// Number of attempts.
    pub fn attempted(&self) -> usize {
        self.attempts.len()
    }

    /// Number of acknowledged messages.
    pub fn acked_count(&self) -> usize {
        self.attempts
            .values()
            .filter(|a| matches!(a.outcome, Outcome::Acked { .. }))
            .count()
    }

    /// Number of records read during the run.
    pub fn read_count(&self) -> usize {
        self.reads.len()
    }

    /// The end a full read of `partition` must reach: one past the highest offset
    /// acknowledged or read there, if any.
    pub fn committed_end(&self, partition: u32) -> Option<u64> {
        let acked = self.attempts.values().filter_map(|a| match a.outcome {
            Outcome::Acked {
                partition: p,
                offset,
            } if p == partition => Some(offset),
            _ => None,
        });
        let read = self
            .reads
            .iter()
            .filter(|r| r.partition == partition)
            .map(|r| r.offset);
        acked.chain(read).max().map(|offset| offset + 1)
    }

    /// The outcome of `id`, if it was attempted.
    pub fn outcome(&self, id: MessageId) -> Option<&Outcome> {
        self.attempts.get(&id).map(|a| &a.outcome)
    }

    /// Checks the history against the final log; see [`Report`] for what is checked.
    pub fn check(&self, final_log: &FinalLog) -> Report {
        let mut report = Report {
            attempted: self.attempts.len(),
            final_records: final_log.len(),
            reads: self.reads.len(),
            ..Report::default()
        };
        for attempt in self.attempts.values() {
            match attempt.outcome {
                Outcome::Pending => report.pending += 1,
                Outcome::Acked { .. } => report.acked += 1,
                Outcome::Failed(_) => report.failed += 1,
            }
        }

        // Where each of our messages is in the final log; everything else is a phantom.
        let mut found: HashMap<MessageId, Vec<(u32, u64)>> = HashMap::new();
        let mut at: HashMap<(u32, u64), &[u8]> = HashMap::new();
        for (&partition, records) in &final_log.partitions {
            let mut previous: Option<u64> = None;
            for (offset, value) in records {
                if previous.is_some_and(|p| *offset <= p) {
                    report.conflicting.push(format!(
                        "final log of partition {partition}: offset {offset} after {}",
                        previous.unwrap_or_default()
                    ));
                }
                previous = Some(*offset);
                at.insert((partition, *offset), value);
                match MessageId::parse(value).filter(|id| self.attempts.contains_key(id)) {
                    Some(id) => found.entry(id).or_default().push((partition, *offset)),
                    None => report.phantom.push(format!(
                        "{} in the final log at {partition}@{offset}, never produced",
                        show(value)
                    )),
                }
            }
        }

        for (id, places) in &found {
            if places.len() > 1 {
                report.duplicated.push(format!(
                    "{id} ({}) is in the final log {} times: {}",
                    self.describe(*id),
                    places.len(),
                    places
                        .iter()
                        .map(|(p, o)| format!("{p}@{o}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Some(attempt) = self.attempts.get(id) {
                if !matches!(attempt.outcome, Outcome::Acked { .. }) {
                    report.unacked_present += 1;
                }
            }
        }

        // Acknowledged: present, where the acknowledgement said, and alone at that offset.
        let mut acked_at: BTreeMap<(u32, u64), Vec<MessageId>> = BTreeMap::new();
        for (id, attempt) in &self.attempts {
            let Outcome::Acked { partition, offset } = attempt.outcome else {
                continue;
            };
            acked_at.entry((partition, offset)).or_default().push(*id);
            match found.get(id) {
                None => report.lost.push(format!(
                    "{id} acknowledged at {partition}@{offset}, absent from the final log \
                     (which has {} there)",
                    at.get(&(partition, offset))
                        .map_or("nothing".to_owned(), |v| show(v))
                )),
                Some(places) if !places.contains(&(partition, offset)) => {
                    report.misplaced.push(format!(
                        "{id} acknowledged at {partition}@{offset}, found at {}",
                        places
                            .iter()
                            .map(|(p, o)| format!("{p}@{o}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
                Some(_) => {}
            }
        }
        for ((partition, offset), ids) in &acked_at {
            if ids.len() > 1 {
                report.conflicting.push(format!(
                    "{} messages acknowledged at the same offset {partition}@{offset} (split \
                     brain?): {}",
                    ids.len(),
                    ids.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }

        // Per producer and partition, acknowledged messages lie in send order.
        let mut sequences: BTreeMap<(u32, u32), Vec<(u64, u64)>> = BTreeMap::new();
        for (id, attempt) in &self.attempts {
            if !matches!(attempt.outcome, Outcome::Acked { .. }) {
                continue;
            }
            // A duplicated message counts at its first place in each partition (the
            // duplicate itself is reported above).
            let mut first_in: BTreeMap<u32, u64> = BTreeMap::new();
            for &(partition, offset) in found.get(id).into_iter().flatten() {
                let first = first_in.entry(partition).or_insert(offset);
                *first = (*first).min(offset);
            }
            for (partition, offset) in first_in {
                sequences
                    .entry((id.producer, partition))
                    .or_default()
                    .push((id.seq, offset));
            }
        }
        for ((producer, partition), sends) in &sequences {
            // `sends` is in seq order (the attempts map is ordered by id).
            for pair in sends.windows(2) {
                let ((seq_a, offset_a), (seq_b, offset_b)) = (pair[0], pair[1]);
                if offset_b <= offset_a {
                    report.reordered.push(format!(
                        "partition {partition}: p{producer}-{seq_a} at offset {offset_a} but \
                         the later p{producer}-{seq_b} at offset {offset_b}"
                    ));
                }
            }
        }

        // What consumers read is committed: still there, at the same offset.
        for read in &self.reads {
            let known = MessageId::parse(&read.value).filter(|id| self.attempts.contains_key(id));
            if known.is_none() {
                report.phantom.push(format!(
                    "{} read by {} at {}@{}, never produced",
                    show(&read.value),
                    read.reader,
                    read.partition,
                    read.offset
                ));
            }
            match at.get(&(read.partition, read.offset)) {
                Some(value) if *value == read.value.as_slice() => {}
                other => report.read_lost.push(format!(
                    "{} read {} at {}@{}; the final log has {} there",
                    read.reader,
                    show(&read.value),
                    read.partition,
                    read.offset,
                    other.map_or("nothing".to_owned(), |v| show(v))
                )),
            }
        }
        report
    }

    /// The outcome of `id` in words, for findings.
    fn describe(&self, id: MessageId) -> String {
        match self.attempts.get(&id).map(|a| &a.outcome) {
            Some(Outcome::Acked { partition, offset }) => {
                format!("acknowledged at {partition}@{offset}")
            }
            Some(Outcome::Failed(why)) => format!("failed: {why}"),
            Some(Outcome::Pending) => "unanswered".to_owned(),
            None => "never attempted".to_owned(),
        }
    }
}

/// A value for a finding: text when it is UTF-8, else its length and first bytes.
fn show(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if text.len() <= 64 => format!("{text:?}"),
        _ => format!(
            "<{} bytes: {:02x?}>",
            value.len(),
            &value[..value.len().min(16)]
        ),
    }
}

/// The outcome of [`History::check`]: counts, and every violation found, by kind.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Messages sent.
    pub attempted: usize,
    /// Messages acknowledged.
    pub acked: usize,
    /// Messages the producer gave up on.
    pub failed: usize,
    /// Messages without an answer when the run stopped.
    pub pending: usize,
    /// Records in the final log.
    pub final_records: usize,
    /// Records read during the run.
    pub reads: usize,
    /// Unacknowledged messages that made it into the log anyway (allowed).
    pub unacked_present: usize,
    /// Acknowledged messages absent from the final log.
    pub lost: Vec<String>,
    /// Messages in the final log more than once (the producers are idempotent: any
    /// duplicate is a violation, acknowledged or not).
    pub duplicated: Vec<String>,
    /// Acknowledged messages of one producer in one partition out of send order.
    pub reordered: Vec<String>,
    /// Records read or in the final log that no producer sent.
    pub phantom: Vec<String>,
    /// Acknowledged messages found, but not at the acknowledged partition and offset.
    pub misplaced: Vec<String>,
    /// Two messages acknowledged at one offset, or offsets not increasing in the final log.
    pub conflicting: Vec<String>,
    /// Records read during the run that the final log does not hold at that offset.
    pub read_lost: Vec<String>,
}

/// Examples of each kind of violation the report prints.
const EXAMPLES_PER_KIND: usize = 10;

impl Report {
    /// The violation kinds with their findings.
    pub fn kinds(&self) -> [(&'static str, &Vec<String>); 7] {
        [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("reordered", &self.reordered),
            ("phantom", &self.phantom),
            ("misplaced", &self.misplaced),
            ("conflicting", &self.conflicting),
            ("read then lost", &self.read_lost),
        ]
    }

    /// No violation.
    pub fn is_valid(&self) -> bool {
        self.kinds().iter().all(|(_, findings)| findings.is_empty())
    }

    /// Panics with the whole report unless it is valid.
    pub fn assert_valid(&self) {
        assert!(self.is_valid(), "history check failed:\n{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} sent: {} acknowledged, {} failed, {} unanswered; {} records in the final log \
             ({} of them unacknowledged sends); {} read during the run",
            self.attempted,
            self.acked,
            self.failed,
            self.pending,
            self.final_records,
            self.unacked_present,
            self.reads
        )?;
        for (kind, findings) in self.kinds() {
            if findings.is_empty() {
                continue;
            }
            writeln!(f, "{kind}: {}", findings.len())?;
            for finding in findings.iter().take(EXAMPLES_PER_KIND) {
                writeln!(f, "  {finding}")?;
            }
            if findings.len() > EXAMPLES_PER_KIND {
                writeln!(f, "  ... {} more", findings.len() - EXAMPLES_PER_KIND)?;
            }
        }
        Ok(())
    }
}
