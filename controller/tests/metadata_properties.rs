//! Property tests of the metadata state machine and its codec.
//!
//! Random histories of commands (registrations, fencing, topics, ISR changes with right and
//! stale epochs, elections, reassignments) are applied to an image; after every step the
//! invariants of `controller::metadata` must hold, epochs must never go back, a leader change
//! must bump the leader epoch, and no fenced broker may be chosen leader. Every command and
//! every image on the way must survive an encode/decode round trip unchanged, and decoding
//! arbitrary bytes must fail cleanly, never panic.

use std::collections::BTreeMap;

use controller::codec::{decode, encode};
use controller::metadata::{PartitionState, UNCLEAN_LEADER_ELECTION_CONFIG};
use controller::{BrokerId, Command, ElectionKind, MetadataImage, TopicPartition};
use proptest::prelude::*;

const TOPICS: [&str; 3] = ["orders", "payments", "audit"];

/// A command drawn with some knowledge of the image, so most of them do something.
#[derive(Debug, Clone)]
enum Step {
    Register {
        id: u32,
        rack: Option<u8>,
        incarnation: u64,
    },
    Fence {
        id: u32,
    },
    Unfence {
        id: u32,
    },
    Create {
        topic: usize,
        partitions: u32,
        rf: u16,
    },
    Delete {
        topic: usize,
    },
    AddPartitions {
        topic: usize,
        more: u32,
    },
    /// An ISR change by the current leader: `keep` picks members, `stale` spoils an epoch.
    AlterIsr {
        topic: usize,
        partition: u32,
        keep: u8,
        grow: bool,
        stale: Option<bool>,
    },
    Elect {
        topic: usize,
        partition: u32,
        kind: u8,
    },
    Reassign {
        topic: usize,
        partition: u32,
        target: Vec<u32>,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u32..7, proptest::option::of(0u8..3), 1u64..4)
            .prop_map(|(id, rack, incarnation)| Step::Register { id, rack, incarnation }),
        2 => (1u32..7).prop_map(|id| Step::Fence { id }),
        2 => (1u32..7).prop_map(|id| Step::Unfence { id }),
        2 => (0usize..3, 1u32..6, 1u16..4)
            .prop_map(|(topic, partitions, rf)| Step::Create { topic, partitions, rf }),
        1 => (0usize..3).prop_map(|topic| Step::Delete { topic }),
        1 => (0usize..3, 1u32..3).prop_map(|(topic, more)| Step::AddPartitions { topic, more }),
        4 => (0usize..3, 0u32..6, any::<u8>(), any::<bool>(), proptest::option::of(any::<bool>()))
            .prop_map(|(topic, partition, keep, grow, stale)| Step::AlterIsr {
                topic, partition, keep, grow, stale,
            }),
        2 => (0usize..3, 0u32..6, 0u8..3)
            .prop_map(|(topic, partition, kind)| Step::Elect { topic, partition, kind }),
        2 => (0usize..3, 0u32..6, proptest::collection::vec(1u32..7, 1..4))
            .prop_map(|(topic, partition, target)| Step::Reassign { topic, partition, target }),
    ]
}

/// The third topic allows unclean leader election; the others keep Kafka's default (off).
fn topic_config(topic: usize) -> BTreeMap<String, String> {
    let mut config = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
    if topic == 2 {
        config.insert(
            UNCLEAN_LEADER_ELECTION_CONFIG.to_string(),
            "true".to_string(),
        );
    }
    config
}

fn to_command(step: &Step, image: &MetadataImage) -> Command {
    match step {
        Step::Register {
            id,
            rack,
            incarnation,
        } => Command::RegisterBroker {
            id: BrokerId(*id),
            endpoints: vec![
                format!("127.0.0.1:{}", 9000 + id),
                format!("127.0.0.1:{}", 9100 + id),
            ],
            rack: rack.map(|r| format!("rack-{r}")),
            incarnation: *incarnation,
        },
        Step::Fence { id } => Command::FenceBroker { id: BrokerId(*id) },
        Step::Unfence { id } => Command::UnfenceBroker { id: BrokerId(*id) },
        Step::Create {
            topic,
            partitions,
            rf,
        } => Command::CreateTopic {
            name: TOPICS[*topic].to_string(),
            partitions: *partitions,
            replication_factor: *rf,
            min_insync: 1,
            config: topic_config(*topic),
        },
        Step::Delete { topic } => Command::DeleteTopic {
            name: TOPICS[*topic].to_string(),
        },
        Step::AddPartitions { topic, more } => Command::AddPartitions {
            name: TOPICS[*topic].to_string(),
            total_partitions: image
                .topics
                .get(TOPICS[*topic])
                .map_or(1, |t| t.partitions.len() as u32)
                + more,
        },
        Step::AlterIsr {
            topic,
            partition,
            keep,
            grow,
            stale,
        } => {
            let name = TOPICS[*topic];
            let Some(state) = image.partition(name, *partition) else {
                return Command::AlterIsr {
                    topic: name.to_string(),
                    partition: *partition,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    new_isr: vec![BrokerId(1)],
                };
            };
            let mut new_isr: Vec<BrokerId> = state.leader.into_iter().collect();
            for (i, replica) in state.replicas.iter().enumerate() {
                let chosen = keep & (1 << (i % 8)) != 0;
                let eligible = state.isr.contains(replica) || *grow;
                if chosen && eligible && !new_isr.contains(replica) {
                    new_isr.push(*replica);
                }
            }
            if new_isr.is_empty() {
                new_isr = state.isr.clone();
            }
            let (leader_epoch, partition_epoch) = match stale {
                None => (state.leader_epoch, state.partition_epoch),
                Some(true) => (state.leader_epoch.wrapping_sub(1), state.partition_epoch),
                Some(false) => (state.leader_epoch, state.partition_epoch.wrapping_sub(1)),
            };
            Command::AlterIsr {
                topic: name.to_string(),
                partition: *partition,
                leader_epoch,
                partition_epoch,
                new_isr,
            }
        }
        Step::Elect {
            topic,
            partition,
            kind,
        } => Command::ElectLeaders {
            partitions: vec![TopicPartition {
                topic: TOPICS[*topic].to_string(),
                partition: *partition,
            }],
            kind: match kind {
                0 => ElectionKind::Preferred,
                1 => ElectionKind::Clean,
                _ => ElectionKind::Unclean,
            },
        },
        Step::Reassign {
            topic,
            partition,
            target,
        } => {
            let mut distinct = Vec::new();
            for id in target {
                if !distinct.contains(&BrokerId(*id)) {
                    distinct.push(BrokerId(*id));
                }
            }
            Command::Reassign {
                topic: TOPICS[*topic].to_string(),
                partition: *partition,
                target_replicas: distinct,
            }
        }
    }
}

fn partitions_of(image: &MetadataImage) -> BTreeMap<(String, u32), PartitionState> {
    let mut all = BTreeMap::new();
    for (name, topic) in &image.topics {
        for (index, state) in topic.partitions.iter().enumerate() {
            all.insert((name.clone(), index as u32), state.clone());
        }
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// After every command: invariants hold; epochs never decrease; the leader epoch moves by
    /// exactly one when the leader changed and not at all otherwise; a changed ISR or replica
    /// set comes with a higher partition epoch; a newly chosen leader is live and was in the
    /// ISR (unless the election was unclean); a rejected command changes nothing.
    #[test]
    fn invariants_hold_over_random_histories(steps in proptest::collection::vec(step(), 1..80)) {
        let mut image = MetadataImage::new();
        for step in &steps {
            let command = to_command(step, &image);
            let before = image.clone();
            let result = image.apply(&command);
            prop_assert_eq!(image.applied_commands, before.applied_commands + 1);
            if let Err(invariant) = image.check_invariants() {
                prop_assert!(false, "after {:?} -> {:?}: {}", command, result, invariant);
            }
            if result.is_err() {
                let mut unchanged = image.clone();
                unchanged.applied_commands = before.applied_commands;
                prop_assert_eq!(&unchanged, &before, "a rejected command changed the image");
                continue;
            }
            let old = partitions_of(&before);
            for (key, new) in partitions_of(&image) {
                let Some(old) = old.get(&key) else { continue };
                prop_assert!(new.leader_epoch >= old.leader_epoch);
                prop_assert!(new.partition_epoch >= old.partition_epoch);
                // One command, one leader change at most, one epoch step for it.
                let expected_epoch = old.leader_epoch + u32::from(new.leader != old.leader);
                prop_assert_eq!(new.leader_epoch, expected_epoch, "{:?}: leader {:?} -> {:?}", key, old.leader, new.leader);
                if new.isr != old.isr || new.replicas != old.replicas {
                    prop_assert!(new.partition_epoch > old.partition_epoch, "{:?}: ISR/replicas changed without an epoch bump", key);
                }
                if let Some(leader) = new.leader {
                    prop_assert!(image.is_live(leader), "{:?}: fenced leader {}", key, leader);
                    let unclean = matches!(command, Command::ElectLeaders { kind: ElectionKind::Unclean, .. })
                        || image.topics[&key.0].unclean_leader_election;
                    if new.leader != old.leader && !unclean {
                        prop_assert!(
                            old.isr.contains(&leader) || old.adding.contains(&leader),
                            "{:?}: leader {} came from outside the ISR {:?}", key, leader, old.isr
                        );
                    }
                }
            }
        }
    }

    /// Every command and every image on the way round-trips through the codec.
    #[test]
    fn codec_round_trips(steps in proptest::collection::vec(step(), 1..40)) {
        let mut image = MetadataImage::new();
        for step in &steps {
            let command = to_command(step, &image);
            let bytes = encode(&command, "command").expect("encode command");
            prop_assert_eq!(decode::<Command>(&bytes, "command").expect("decode command"), command.clone());
            let result = image.apply(&command);
            let result_bytes = encode(&result, "result").expect("encode result");
            prop_assert_eq!(decode::<controller::raft::CommandResult>(&result_bytes, "result").expect("decode"), result);
        }
        let bytes = encode(&image, "image").expect("encode image");
        prop_assert_eq!(decode::<MetadataImage>(&bytes, "image").expect("decode image"), image);
    }

    /// Arbitrary bytes decode to an error or to some value, never a panic; a truncated
    /// encoding never decodes to the original.
    #[test]
    fn hostile_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..64) {
        let _ = decode::<Command>(&bytes, "command");
        let _ = decode::<MetadataImage>(&bytes, "image");
        let _ = decode::<controller::raft::network::Request>(&bytes, "request");
        let command = Command::CreateTopic {
            name: "orders".into(),
            partitions: 3,
            replication_factor: 3,
            min_insync: 2,
            config: BTreeMap::new(),
        };
        let encoded = encode(&command, "command").expect("encode");
        let cut = cut.min(encoded.len().saturating_sub(1));
        prop_assert_ne!(decode::<Command>(&encoded[..cut], "command").ok(), Some(command));
    }
}
