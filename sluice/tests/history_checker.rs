//! Tests of the history checker of the cluster tests (`common/history.rs`): it must pass every
//! correct history (property: simulated runs with acknowledged, failed, unanswered and
//! never-written sends, offset gaps and consumer reads) and catch every planted fault — loss,
//! duplication, reordering, phantoms, a moved acknowledgement, two acknowledgements at one
//! offset and a read record that disappeared.
#![allow(clippy::unwrap_used)]

#[path = "common/history.rs"]
mod history;

use history::{FinalLog, History, MessageId, Outcome};
use proptest::prelude::*;

/// What the simulated broker did with one send.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Appended and acknowledged.
    Acked,
    /// Appended, but the producer saw an error (e.g. a timeout after the write).
    WrittenFailed,
    /// Appended, the run stopped before the answer.
    WrittenPending,
    /// Never appended, the producer gave up.
    DroppedFailed,
    /// Never appended, the run stopped first.
    DroppedPending,
    /// An offset the log skips (a control batch): no message.
    Gap,
}

fn fate(code: u8) -> Fate {
    match code % 6 {
        0 => Fate::Acked,
        1 => Fate::WrittenFailed,
        2 => Fate::WrittenPending,
        3 => Fate::DroppedFailed,
        4 => Fate::DroppedPending,
        _ => Fate::Gap,
    }
}

/// A correct run: sends of `(producer, partition, fate)` in order, each producer numbering
/// its messages from 0, then every partition read up to `read_percent` of its records.
fn simulate(ops: &[(u8, u8, u8)], partitions: u32, read_percent: u8) -> (History, FinalLog) {
    let mut history = History::new();
    let mut log = FinalLog::default();
    for partition in 0..partitions {
        log.partitions.insert(partition, Vec::new());
    }
    let mut next_offset = vec![0u64; partitions as usize];
    let mut next_seq = std::collections::HashMap::<u32, u64>::new();
    for &(producer, partition, code) in ops {
        let producer = u32::from(producer % 4);
        let partition = u32::from(partition) % partitions;
        let fate = fate(code);
        if let Fate::Gap = fate {
            next_offset[partition as usize] += 1;
            continue;
        }
        let seq = next_seq.entry(producer).or_default();
        let id = MessageId::new(producer, *seq);
        *seq += 1;
        history.attempt(id, partition);
        let offset = next_offset[partition as usize];
        let written = matches!(
            fate,
            Fate::Acked | Fate::WrittenFailed | Fate::WrittenPending
        );
        if written {
            log.partitions
                .get_mut(&partition)
                .unwrap()
                .push((offset, id.value().into_bytes()));
            next_offset[partition as usize] += 1;
        }
        match fate {
            Fate::Acked => history.acked(id, partition, offset),
            Fate::WrittenFailed | Fate::DroppedFailed => history.failed(id, "timed out"),
            _ => {}
        }
    }
    for (&partition, records) in &log.partitions {
        let count = records.len() * usize::from(read_percent.min(100)) / 100;
        for (offset, value) in &records[..count] {
            history.read("consumer-0", partition, *offset, value);
        }
    }
    (history, log)
}

/// An acknowledged message: its id, partition and offset.
type AckedAt = (MessageId, u32, u64);

/// The acknowledged messages with their partition and offset, in id order.
fn acked(history: &History, ids: impl Iterator<Item = MessageId>) -> Vec<AckedAt> {
    ids.filter_map(|id| match history.outcome(id) {
        Some(Outcome::Acked { partition, offset }) => Some((id, *partition, *offset)),
        _ => None,
    })
    .collect()
}

/// Every id a simulation may have used.
fn all_ids(ops: &[(u8, u8, u8)]) -> impl Iterator<Item = MessageId> {
    let count = ops.len() as u64;
    (0..4).flat_map(move |producer| (0..count).map(move |seq| MessageId::new(producer, seq)))
}

fn ops_strategy() -> impl Strategy<Value = Vec<(u8, u8, u8)>> {
    prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 1..120)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A correct history passes, whatever was acknowledged, failed, lost unacknowledged or
    /// read, and the counts add up.
    #[test]
    fn correct_histories_pass(ops in ops_strategy(), partitions in 1u32..4, read_percent in 0u8..=100) {
        let (history, log) = simulate(&ops, partitions, read_percent);
        let report = history.check(&log);
        prop_assert!(report.is_valid(), "{report}");
        prop_assert_eq!(report.attempted, history.attempted());
        prop_assert_eq!(report.acked + report.failed + report.pending, report.attempted);
        prop_assert_eq!(report.final_records, log.len());
        prop_assert_eq!(report.final_records, report.acked + report.unacked_present);
    }

    /// Removing an acknowledged message from the final log is reported as lost (and as read
    /// then lost when a consumer had read it).
    #[test]
    fn planted_loss_is_caught(ops in ops_strategy(), partitions in 1u32..4, read_percent in 0u8..=100, pick in any::<usize>()) {
        let (history, mut log) = simulate(&ops, partitions, read_percent);
        let acked = acked(&history, all_ids(&ops));
        prop_assume!(!acked.is_empty());
        let (id, partition, offset) = acked[pick % acked.len()];
        log.partitions.get_mut(&partition).unwrap().retain(|(o, _)| *o != offset);
        let report = history.check(&log);
        prop_assert_eq!(report.lost.len(), 1, "{}", report);
        prop_assert!(report.lost[0].contains(&id.to_string()), "{}", report);
        prop_assert!(report.duplicated.is_empty() && report.phantom.is_empty() && report.reordered.is_empty(), "{}", report);
    }

    /// A second copy of any record, acknowledged or not, is reported as duplicated.
    #[test]
    fn planted_duplicate_is_caught(ops in ops_strategy(), partitions in 1u32..4, pick in any::<usize>()) {
        let (history, mut log) = simulate(&ops, partitions, 0);
        let records: Vec<(u32, Vec<u8>)> = log
            .partitions
            .iter()
            .flat_map(|(p, records)| records.iter().map(|(_, v)| (*p, v.clone())))
            .collect();
        prop_assume!(!records.is_empty());
        let (partition, value) = records[pick % records.len()].clone();
        // The copy lands at the end of a partition (a retried batch written again).
        let target = log.partitions.get_mut(&((partition + 1) % partitions)).unwrap();
        let end = target.last().map_or(1_000, |(o, _)| o + 1);
        target.push((end, value));
        let report = history.check(&log);
        prop_assert_eq!(report.duplicated.len(), 1, "{}", report);
        prop_assert!(report.lost.is_empty() && report.phantom.is_empty(), "{}", report);
    }

    /// Two acknowledged messages of one producer in one partition swapped: reordered (and
    /// misplaced: their acknowledged offsets no longer hold them).
    #[test]
    fn planted_reorder_is_caught(ops in ops_strategy(), partitions in 1u32..4, pick in any::<usize>()) {
        let (history, mut log) = simulate(&ops, partitions, 0);
        let acked = acked(&history, all_ids(&ops));
        let pairs: Vec<(AckedAt, AckedAt)> = acked
            .iter()
            .flat_map(|a| acked.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.0.producer == b.0.producer && a.1 == b.1 && a.0.seq < b.0.seq)
            .collect();
        prop_assume!(!pairs.is_empty());
        let ((a, partition, offset_a), (b, _, offset_b)) = pairs[pick % pairs.len()];
        for (offset, value) in log.partitions.get_mut(&partition).unwrap() {
            if *offset == offset_a {
                *value = b.value().into_bytes();
            } else if *offset == offset_b {
                *value = a.value().into_bytes();
            }
        }
        let report = history.check(&log);
        prop_assert!(!report.reordered.is_empty(), "{}", report);
        prop_assert_eq!(report.misplaced.len(), 2, "{}", report);
        prop_assert!(report.lost.is_empty() && report.duplicated.is_empty(), "{}", report);
    }

    /// A record nobody sent, in the log or read by a consumer, is a phantom.
    #[test]
    fn planted_phantom_is_caught(ops in ops_strategy(), partitions in 1u32..4, kind in 0u8..3, read in any::<bool>()) {
        let (mut history, mut log) = simulate(&ops, partitions, 0);
        let value: Vec<u8> = match kind {
            0 => b"p999-0".to_vec(),                              // an unknown producer
            1 => MessageId::new(0, 1 << 40).value().into_bytes(), // a seq never sent
            _ => vec![0xff, 0x00, 0x13],                          // not one of ours at all
        };
        let records = log.partitions.get_mut(&0).unwrap();
        let end = records.last().map_or(0, |(o, _)| o + 1);
        if read {
            history.read("consumer-1", 0, end, &value);
        } else {
            records.push((end, value));
        }
        let report = history.check(&log);
        prop_assert_eq!(report.phantom.len(), 1, "{}", report);
        prop_assert!(report.lost.is_empty() && report.duplicated.is_empty(), "{}", report);
        // A phantom read is also missing from the final log.
        prop_assert_eq!(report.read_lost.len(), usize::from(read), "{}", report);
    }

    /// Cutting a partition's final log below what a consumer read (a leader that lost
    /// records it had exposed) is caught as read then lost.
    #[test]
    fn planted_truncation_below_reads_is_caught(ops in ops_strategy(), partitions in 1u32..4, read_percent in 1u8..=100) {
        let (history, mut log) = simulate(&ops, partitions, read_percent);
        let Some((&partition, records)) = log.partitions.iter_mut().find(|(_, r)| {
            r.len() * usize::from(read_percent) / 100 > 0
        }) else {
            return Err(TestCaseError::reject("nothing read"));
        };
        let read = records.len() * usize::from(read_percent) / 100;
        records.truncate(read - 1);
        let report = history.check(&log);
        prop_assert!(!report.read_lost.is_empty(), "partition {}: {}", partition, report);
    }
}

/// Two acknowledgements naming one offset: split brain, reported as conflicting.
#[test]
fn two_acks_at_one_offset_conflict() {
    let mut history = History::new();
    let (a, b) = (MessageId::new(0, 0), MessageId::new(1, 0));
    history.attempt(a, 0);
    history.attempt(b, 0);
    history.acked(a, 0, 7);
    history.acked(b, 0, 7);
    let mut log = FinalLog::default();
    log.partitions.insert(0, vec![(7, a.value().into_bytes())]);
    let report = history.check(&log);
    assert_eq!(report.conflicting.len(), 1, "{report}");
    assert!(report.conflicting[0].contains("split brain"), "{report}");
    assert_eq!(report.lost.len(), 1, "{report}");
    assert!(report.lost[0].contains("p1-0"), "{report}");
}

/// An acknowledgement that names the wrong offset is reported even though the message is
/// there.
#[test]
fn acknowledgement_at_another_offset_is_misplaced() {
    let mut history = History::new();
    let id = MessageId::new(3, 9);
    history.attempt(id, 1);
    history.acked(id, 1, 4);
    let mut log = FinalLog::default();
    log.partitions.insert(1, vec![(5, id.value().into_bytes())]);
    let report = history.check(&log);
    assert_eq!(report.misplaced.len(), 1, "{report}");
    assert!(report.misplaced[0].contains("1@4") && report.misplaced[0].contains("1@5"));
    assert!(!report.is_valid());
}

/// A consumer read a value the final log holds at another offset: read then lost.
#[test]
fn read_value_at_another_offset_is_read_then_lost() {
    let mut history = History::new();
    let (a, b) = (MessageId::new(0, 0), MessageId::new(0, 1));
    history.attempt(a, 0);
    history.attempt(b, 0);
    history.read("c", 0, 0, &b.value().into_bytes());
    let mut log = FinalLog::default();
    log.partitions.insert(
        0,
        vec![(0, a.value().into_bytes()), (1, b.value().into_bytes())],
    );
    let report = history.check(&log);
    assert_eq!(report.read_lost.len(), 1, "{report}");
    assert!(report.read_lost[0].contains("\"p0-0\""), "{report}");
}

/// The report names each kind with its count and at most ten examples.
#[test]
fn report_prints_counts_and_examples() {
    let mut history = History::new();
    let mut log = FinalLog::default();
    let mut records = Vec::new();
    for seq in 0..25 {
        let id = MessageId::new(0, seq);
        history.attempt(id, 0);
        history.acked(id, 0, seq);
        if seq >= 12 {
            records.push((seq, id.value().into_bytes()));
        }
    }
    log.partitions.insert(0, records);
    let report = history.check(&log);
    let text = report.to_string();
    assert!(text.contains("lost: 12"), "{text}");
    assert!(text.contains("... 2 more"), "{text}");
    assert!(text.starts_with("25 sent: 25 acknowledged"), "{text}");
    let panic = std::panic::catch_unwind(|| report.assert_valid());
    assert!(panic.is_err());
}

/// Only the canonical spelling of an id parses, so look-alikes count as phantoms.
#[test]
fn message_ids_parse_only_canonical_values() {
    let id = MessageId::new(12, 345);
    assert_eq!(id.value(), "p12-345");
    assert_eq!(MessageId::parse(b"p12-345"), Some(id));
    for bad in [
        &b"p12-0345"[..],
        b"p+12-345",
        b"p12-",
        b"12-345",
        b"p12-345 ",
        b"p-1-2",
        b"\xff",
    ] {
        assert_eq!(MessageId::parse(bad), None, "{bad:?}");
    }
}

/// A full read must reach one past the highest offset acknowledged or read.
#[test]
fn committed_end_covers_acks_and_reads() {
    let mut history = History::new();
    assert_eq!(history.committed_end(0), None);
    let (a, b) = (MessageId::new(0, 0), MessageId::new(0, 1));
    history.attempt(a, 0);
    history.attempt(b, 1);
    history.acked(a, 0, 4);
    history.acked(b, 1, 2);
    assert_eq!(history.committed_end(0), Some(5));
    history.read("c", 0, 9, b"p0-7");
    assert_eq!(history.committed_end(0), Some(10));
    assert_eq!(history.committed_end(1), Some(3));
    assert_eq!(history.committed_end(2), None);
}
