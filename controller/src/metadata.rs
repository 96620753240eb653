//! The cluster metadata image and its pure state machine.
//!
//! [`MetadataImage`] is everything the cluster agrees on: the registered brokers (endpoints,
//! rack, incarnation, fenced or not) and the topics with, per partition, the replicas, the ISR,
//! the leader, the leader epoch and the partition epoch. [`MetadataImage::apply`] changes it by
//! one [`Command`]; it is deterministic and does no I/O, so every controller replica that
//! applies the same Raft log reaches the same image. The Raft state machine
//! ([`crate::raft::state_machine`]) calls it for every committed entry; tests call it directly.
//!
//! # Invariants (checked by [`MetadataImage::check_invariants`] and the property tests)
//!
//! - Per partition: the ISR is a non-empty subset of the replicas without duplicates; the
//!   leader, when there is one, is in the ISR and is not fenced.
//! - No leader only when no ISR member is live: fencing the last live ISR member keeps it in
//!   the ISR (as KRaft does) and leaves the partition leaderless until it comes back, unless
//!   unclean election is enabled for the topic ([`UNCLEAN_LEADER_ELECTION_CONFIG`], off by
//!   default) or asked for by an `ElectLeaders` with [`ElectionKind::Unclean`].
//! - Every change of a partition's leader (including to "none") bumps its leader epoch; every
//!   change of its ISR or replicas bumps its partition epoch. Neither ever decreases.
//!
//! # Reassignment (model only: the data movement is the broker's)
//!
//! `Reassign` adds the target replicas that are new (`adding`) and marks the ones that will go
//! (`removing`); replicas = old ∪ new meanwhile. Once the ISR (moved forward by the leader's
//! `AlterIsr` as the new replicas catch up) contains every target replica, the reassignment
//! completes: replicas = target, the ISR loses the removed ones, and leadership moves if the
//! leader was removed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ControllerError;
use crate::placement::{self, PlacementBroker};

/// A broker's id, fixed by its configuration.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct BrokerId(pub u32);

impl fmt::Display for BrokerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A partition of a topic, by name and index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    /// The topic's name.
    pub topic: String,
    /// The partition's index in the topic.
    pub partition: u32,
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// Its id.
    pub id: BrokerId,
    /// Where clients reach it: one `host:port` per shard, shard order.
    pub endpoints: Vec<String>,
    /// Its rack, for rack-aware placement.
    pub rack: Option<String>,
    /// Which start of the broker process registered (a new process registers a higher one).
    pub incarnation: u64,
    /// Fenced: it stopped heartbeating; it leads nothing and is out of every ISR it was not the
    /// last live member of.
    pub fenced: bool,
}

/// One partition's replication state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The replicas, preferred leader first. During a reassignment: target first, then the
    /// replicas being removed.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas; never empty.
    pub isr: Vec<BrokerId>,
    /// The leader, if any live ISR member exists.
    pub leader: Option<BrokerId>,
    /// Bumped on every leader change.
    pub leader_epoch: u32,
    /// Bumped on every ISR or replica change.
    pub partition_epoch: u32,
    /// Reassignment in progress: replicas being added.
    pub adding: Vec<BrokerId>,
    /// Reassignment in progress: replicas to drop once every target replica is in the ISR.
    pub removing: Vec<BrokerId>,
}

impl PartitionState {
    /// The replicas the partition ends up with: all of them, less the ones being removed.
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|id| !self.removing.contains(id))
            .collect()
    }
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    /// The topic's name.
    pub name: String,
    /// Replicas per partition.
    pub replication_factor: u16,
    /// `min.insync.replicas`: acks=all writes are refused while the ISR is smaller.
    pub min_insync: u16,
    /// Other topic configuration, passed through to the brokers.
    pub config: BTreeMap<String, String>,
    /// `unclean.leader.election.enable` (off unless the topic's config says `true`): when no
    /// ISR member is live, a live out-of-sync replica may lead, losing what only the ISR had.
    pub unclean_leader_election: bool,
    /// The partitions, by index.
    pub partitions: Vec<PartitionState>,
}

/// How `ElectLeaders` chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionKind {
    /// Move leadership to the first replica when it is a live ISR member (rebalancing), or
    /// elect one if there is no leader.
    Preferred,
    /// Only where there is no live leader: pick the first live ISR member.
    Clean,
    /// As `Clean`, and when no ISR member is live, pick the first live replica and make it
    /// the whole ISR: committed records may be lost. Off unless asked for explicitly.
    Unclean,
}

/// A change to the metadata: the payload of a controller Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A broker process announces itself (a new start carries a higher incarnation). It is
    /// live (unfenced) from then on, and takes over partitions left without a leader where it
    /// is in the ISR.
    RegisterBroker {
        /// The broker.
        id: BrokerId,
        /// One `host:port` per shard.
        endpoints: Vec<String>,
        /// Its rack.
        rack: Option<String>,
        /// Its process start number.
        incarnation: u64,
    },
    /// The broker stopped heartbeating: it leaves the ISRs (except as the last member) and
    /// loses leadership; new leaders come from the ISR.
    FenceBroker {
        /// The broker.
        id: BrokerId,
    },
    /// A fenced broker heartbeats again: it is live, and leads leaderless partitions whose ISR
    /// it is in.
    UnfenceBroker {
        /// The broker.
        id: BrokerId,
    },
    /// A new topic, placed over the live brokers by [`crate::placement`].
    CreateTopic {
        /// The name.
        name: String,
        /// Partition count.
        partitions: u32,
        /// Replicas per partition.
        replication_factor: u16,
        /// `min.insync.replicas`.
        min_insync: u16,
        /// Other configuration.
        config: BTreeMap<String, String>,
    },
    /// Remove a topic.
    DeleteTopic {
        /// The name.
        name: String,
    },
    /// Grow a topic to `total_partitions` partitions (never shrinks).
    AddPartitions {
        /// The topic.
        name: String,
        /// The partition count after the change.
        total_partitions: u32,
    },
    /// The partition leader's ISR change (KIP-497): accepted only with the current epochs.
    AlterIsr {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The leader epoch the leader believes current.
        leader_epoch: u32,
        /// The partition epoch the leader believes current.
        partition_epoch: u32,
        /// The ISR it asks for.
        new_isr: Vec<BrokerId>,
    },
    /// Elect leaders for these partitions.
    ElectLeaders {
        /// Which partitions.
        partitions: Vec<TopicPartition>,
        /// How.
        kind: ElectionKind,
    },
    /// Move a partition to a new replica set.
    Reassign {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The replica set it should end with, preferred leader first.
        target_replicas: Vec<BrokerId>,
    },
}

/// What an applied command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The command changed nothing (e.g. fencing a fenced broker).
    Unchanged,
    /// A broker registration was recorded.
    BrokerRegistered {
        /// Partitions that got a leader through it.
        led: Vec<TopicPartition>,
    },
    /// A topic was created or grown; the replicas of its new partitions.
    TopicPlaced {
        /// Index of the first new partition.
        first_partition: u32,
        /// Per new partition, the replicas (leader first).
        replicas: Vec<Vec<BrokerId>>,
    },
    /// A topic was deleted.
    TopicDeleted,
    /// Partitions whose state changed (leader, ISR or replicas).
    PartitionsChanged {
        /// Which partitions.
        partitions: Vec<TopicPartition>,
    },
    /// An ISR change was accepted.
    IsrAltered {
        /// The partition epoch after it, for the leader's next AlterIsr.
        partition_epoch: u32,
        /// The leader epoch after it (changes only when a reassignment completed and moved the
        /// leader).
        leader_epoch: u32,
    },
}

/// The whole cluster metadata; a value, cheap to share behind an `Arc` once built.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Registered brokers by id.
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMetadata>,
    /// Commands applied so far (changed or not); grows by one per `apply`.
    pub applied_commands: u64,
}

/// The topic config key that enables unclean leader election for a topic (Kafka's name).
pub const UNCLEAN_LEADER_ELECTION_CONFIG: &str = "unclean.leader.election.enable";

/// Longest topic name, as Kafka.
pub const TOPIC_NAME_MAX_BYTES: usize = 249;
/// Most partitions a topic may have: bounds the per-command work and the image size
/// (100 000 partitions × ~64 bytes of state ≈ 6.4 MB, within a snapshot frame).
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 100_000;
/// Largest replication factor: beyond 7 copies Kafka deployments gain nothing.
pub const REPLICATION_FACTOR_MAX: u16 = 7;

impl MetadataImage {
    /// An empty image: no brokers, no topics.
    pub fn new() -> Self {
        MetadataImage::default()
    }

    /// True when the broker is registered and not fenced.
    pub fn is_live(&self, id: BrokerId) -> bool {
        self.brokers.get(&id).is_some_and(|broker| !broker.fenced)
    }

    /// A partition's state.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionState> {
        self.topics
            .get(topic)
            .and_then(|t| t.partitions.get(partition as usize))
    }

    /// The partitions `id` leads.
    pub fn partitions_led_by(&self, id: BrokerId) -> Vec<TopicPartition> {
        let mut led = Vec::new();
        for (name, topic) in &self.topics {
            for (index, state) in topic.partitions.iter().enumerate() {
                if state.leader == Some(id) {
                    led.push(TopicPartition {
                        topic: name.clone(),
                        partition: index as u32,
                    });
                }
            }
        }
        led
    }

    /// Apply one command. On `Err` the image is unchanged except for `applied_commands`
    /// (every command, rejected or not, counts: all replicas count the same).
    pub fn apply(&mut self, command: &Command) -> Result<Outcome, ControllerError> {
        self.applied_commands += 1;
        match command {
            Command::RegisterBroker {
                id,
                endpoints,
                rack,
                incarnation,
            } => self.register_broker(*id, endpoints, rack, *incarnation),
            Command::FenceBroker { id } => self.fence_broker(*id),
            Command::UnfenceBroker { id } => self.unfence_broker(*id),
            Command::CreateTopic {
                name,
                partitions,
                replication_factor,
                min_insync,
                config,
            } => self.create_topic(name, *partitions, *replication_factor, *min_insync, config),
            Command::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => Ok(Outcome::TopicDeleted),
                None => Err(ControllerError::UnknownTopic { name: name.clone() }),
            },
            Command::AddPartitions {
                name,
                total_partitions,
            } => self.add_partitions(name, *total_partitions),
            Command::AlterIsr {
                topic,
                partition,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => self.alter_isr(topic, *partition, *leader_epoch, *partition_epoch, new_isr),
            Command::ElectLeaders { partitions, kind } => self.elect_leaders(partitions, *kind),
            Command::Reassign {
                topic,
                partition,
                target_replicas,
            } => self.reassign(topic, *partition, target_replicas),
        }
    }

    fn register_broker(
        &mut self,
        id: BrokerId,
        endpoints: &[String],
        rack: &Option<String>,
        incarnation: u64,
    ) -> Result<Outcome, ControllerError> {
        if endpoints.is_empty() {
            return Err(ControllerError::NoEndpoints { id });
        }
        if let Some(existing) = self.brokers.get(&id) {
            if incarnation < existing.incarnation {
                return Err(ControllerError::StaleIncarnation {
                    id,
                    got: incarnation,
                    registered: existing.incarnation,
                });
            }
        }
        self.brokers.insert(
            id,
            BrokerRegistration {
                id,
                endpoints: endpoints.to_vec(),
                rack: rack.clone(),
                incarnation,
                fenced: false,
            },
        );
        let led = self.lead_leaderless_partitions(id);
        Ok(Outcome::BrokerRegistered { led })
    }

    fn fence_broker(&mut self, id: BrokerId) -> Result<Outcome, ControllerError> {
        let broker = self
            .brokers
            .get_mut(&id)
            .ok_or(ControllerError::UnknownBroker { id })?;
        if broker.fenced {
            return Ok(Outcome::Unchanged);
        }
        broker.fenced = true;
        let brokers = &self.brokers;
        let mut changed = Vec::new();
        for (name, topic) in self.topics.iter_mut() {
            for (index, state) in topic.partitions.iter_mut().enumerate() {
                if !state.isr.contains(&id) {
                    continue;
                }
                if state.isr.len() > 1 {
                    state.isr.retain(|member| *member != id);
                    state.partition_epoch += 1;
                }
                if state.leader == Some(id) {
                    let next = first_live(&state.replicas, &state.isr, brokers);
                    let unclean = next.is_none() && topic.unclean_leader_election;
                    if !(unclean && elect_unclean(state, brokers)) {
                        set_leader(state, next);
                    }
                }
                changed.push(TopicPartition {
                    topic: name.clone(),
                    partition: index as u32,
                });
            }
        }
        Ok(Outcome::PartitionsChanged {
            partitions: changed,
        })
    }

    fn unfence_broker(&mut self, id: BrokerId) -> Result<Outcome, ControllerError> {
        let broker = self
            .brokers
            .get_mut(&id)
            .ok_or(ControllerError::UnknownBroker { id })?;
        if !broker.fenced {
            return Ok(Outcome::Unchanged);
        }
        broker.fenced = false;
        let led = self.lead_leaderless_partitions(id);
        Ok(Outcome::PartitionsChanged { partitions: led })
    }

    /// Make the live broker `id` leader of every leaderless partition whose ISR it is in.
    fn lead_leaderless_partitions(&mut self, id: BrokerId) -> Vec<TopicPartition> {
        let mut led = Vec::new();
        for (name, topic) in self.topics.iter_mut() {
            for (index, state) in topic.partitions.iter_mut().enumerate() {
                if state.leader.is_some() || !state.replicas.contains(&id) {
                    continue;
                }
                if !state.isr.contains(&id) && topic.unclean_leader_election {
                    state.isr = vec![id];
                    state.partition_epoch += 1;
                }
                if state.isr.contains(&id) {
                    set_leader(state, Some(id));
                    led.push(TopicPartition {
                        topic: name.clone(),
                        partition: index as u32,
                    });
                }
            }
        }
        led
    }

    fn placement_brokers(&self) -> Vec<PlacementBroker> {
        let mut brokers: Vec<PlacementBroker> = self
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| PlacementBroker {
                id: b.id,
                rack: b.rack.clone(),
                replicas_hosted: 0,
                partitions_led: 0,
            })
            .collect();
        for topic in self.topics.values() {
            for state in &topic.partitions {
                for broker in brokers.iter_mut() {
                    if state.replicas.contains(&broker.id) {
                        broker.replicas_hosted += 1;
                    }
                    if state.replicas.first() == Some(&broker.id) {
                        broker.partitions_led += 1;
                    }
                }
            }
        }
        brokers
    }

    fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        min_insync: u16,
        config: &BTreeMap<String, String>,
    ) -> Result<Outcome, ControllerError> {
        let invalid = |reason: &str| ControllerError::InvalidTopic {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        if name.is_empty() || name.len() > TOPIC_NAME_MAX_BYTES {
            return Err(invalid("the name must have 1 to 249 bytes"));
        }
        if self.topics.contains_key(name) {
            return Err(ControllerError::TopicExists {
                name: name.to_string(),
            });
        }
        if partitions == 0 || partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(invalid("partitions must be between 1 and 100000"));
        }
        if replication_factor == 0 || replication_factor > REPLICATION_FACTOR_MAX {
            return Err(invalid("replication factor must be between 1 and 7"));
        }
        if min_insync == 0 || min_insync > replication_factor {
            return Err(invalid(
                "min insync replicas must be between 1 and the replication factor",
            ));
        }
        let replicas =
            placement::assign(&self.placement_brokers(), partitions, replication_factor)?;
        let topic = TopicMetadata {
            name: name.to_string(),
            replication_factor,
            min_insync,
            config: config.clone(),
            unclean_leader_election: config
                .get(UNCLEAN_LEADER_ELECTION_CONFIG)
                .is_some_and(|value| value == "true"),
            partitions: replicas.iter().map(|r| new_partition(r)).collect(),
        };
        self.topics.insert(name.to_string(), topic);
        Ok(Outcome::TopicPlaced {
            first_partition: 0,
            replicas,
        })
    }

    fn add_partitions(
        &mut self,
        name: &str,
        total_partitions: u32,
    ) -> Result<Outcome, ControllerError> {
        let brokers = self.placement_brokers();
        let topic = self
            .topics
            .get_mut(name)
            .ok_or_else(|| ControllerError::UnknownTopic {
                name: name.to_string(),
            })?;
        let existing = topic.partitions.len() as u32;
        if total_partitions <= existing || total_partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(ControllerError::InvalidTopic {
                name: name.to_string(),
                reason: format!(
                    "partition count {total_partitions} must exceed the current {existing} and be at most 100000"
                ),
            });
        }
        let replicas = placement::assign(
            &brokers,
            total_partitions - existing,
            topic.replication_factor,
        )?;
        topic
            .partitions
            .extend(replicas.iter().map(|r| new_partition(r)));
        Ok(Outcome::TopicPlaced {
            first_partition: existing,
            replicas,
        })
    }

    fn alter_isr(
        &mut self,
        topic_name: &str,
        partition: u32,
        leader_epoch: u32,
        partition_epoch: u32,
        new_isr: &[BrokerId],
    ) -> Result<Outcome, ControllerError> {
        let brokers = &self.brokers;
        let state = partition_mut(&mut self.topics, topic_name, partition)?;
        if leader_epoch != state.leader_epoch {
            return Err(ControllerError::FencedLeaderEpoch {
                topic: topic_name.to_string(),
                partition,
                got: leader_epoch,
                current: state.leader_epoch,
            });
        }
        if partition_epoch != state.partition_epoch {
            return Err(ControllerError::InvalidUpdateVersion {
                topic: topic_name.to_string(),
                partition,
                got: partition_epoch,
                current: state.partition_epoch,
            });
        }
        let invalid = |reason: String| ControllerError::InvalidReplicas {
            topic: topic_name.to_string(),
            partition,
            reason,
        };
        check_distinct(new_isr).map_err(invalid)?;
        let Some(leader) = state.leader else {
            return Err(invalid("the partition has no leader".to_string()));
        };
        if !new_isr.contains(&leader) {
            return Err(invalid(format!("the ISR must contain the leader {leader}")));
        }
        for member in new_isr {
            if !state.replicas.contains(member) {
                return Err(invalid(format!("{member} is not a replica")));
            }
            if !state.isr.contains(member) && brokers.get(member).is_none_or(|b| b.fenced) {
                return Err(invalid(format!(
                    "{member} is fenced or unknown and cannot join the ISR"
                )));
            }
        }
        if state.isr != new_isr {
            state.isr = new_isr.to_vec();
            state.partition_epoch += 1;
        }
        maybe_complete_reassignment(state, brokers);
        Ok(Outcome::IsrAltered {
            partition_epoch: state.partition_epoch,
            leader_epoch: state.leader_epoch,
        })
    }

    fn elect_leaders(
        &mut self,
        partitions: &[TopicPartition],
        kind: ElectionKind,
    ) -> Result<Outcome, ControllerError> {
        let brokers = &self.brokers;
        let mut changed = Vec::new();
        for tp in partitions {
            let unclean_topic = self
                .topics
                .get(&tp.topic)
                .is_some_and(|topic| topic.unclean_leader_election);
            let state = partition_mut(&mut self.topics, &tp.topic, tp.partition)?;
            let leader_live = state
                .leader
                .is_some_and(|id| brokers.get(&id).is_some_and(|b| !b.fenced));
            let next = match kind {
                ElectionKind::Preferred => {
                    let preferred = state
                        .replicas
                        .first()
                        .copied()
                        .filter(|id| state.isr.contains(id))
                        .filter(|id| brokers.get(id).is_some_and(|b| !b.fenced));
                    match preferred {
                        Some(id) => Some(id),
                        None if leader_live => state.leader,
                        None => first_live(&state.replicas, &state.isr, brokers),
                    }
                }
                ElectionKind::Clean if leader_live => state.leader,
                ElectionKind::Clean => first_live(&state.replicas, &state.isr, brokers),
                ElectionKind::Unclean if leader_live => state.leader,
                ElectionKind::Unclean => first_live(&state.replicas, &state.isr, brokers),
            };
            let unclean = kind == ElectionKind::Unclean || unclean_topic;
            if next.is_none() && unclean {
                if elect_unclean(state, brokers) {
                    changed.push(tp.clone());
                }
            } else if next != state.leader {
                set_leader(state, next);
                changed.push(tp.clone());
            }
        }
        if changed.is_empty() {
            Ok(Outcome::Unchanged)
        } else {
            Ok(Outcome::PartitionsChanged {
                partitions: changed,
            })
        }
    }

    fn reassign(
        &mut self,
        topic_name: &str,
        partition: u32,
        target: &[BrokerId],
    ) -> Result<Outcome, ControllerError> {
        let brokers = &self.brokers;
        let state = partition_mut(&mut self.topics, topic_name, partition)?;
        let invalid = |reason: String| ControllerError::InvalidReplicas {
            topic: topic_name.to_string(),
            partition,
            reason,
        };
        if target.is_empty() || target.len() > REPLICATION_FACTOR_MAX as usize {
            return Err(invalid("a replica set has 1 to 7 brokers".to_string()));
        }
        check_distinct(target).map_err(invalid)?;
        if let Some(unknown) = target.iter().find(|id| !brokers.contains_key(id)) {
            return Err(ControllerError::UnknownBroker { id: *unknown });
        }
        // A new reassignment replaces one in progress: start from the replicas that stay.
        let current: Vec<BrokerId> = state.replicas.clone();
        let adding: Vec<BrokerId> = target
            .iter()
            .copied()
            .filter(|id| !current.contains(id))
            .collect();
        let removing: Vec<BrokerId> = current
            .iter()
            .copied()
            .filter(|id| !target.contains(id))
            .collect();
        let mut replicas = target.to_vec();
        replicas.extend(removing.iter().copied());
        if replicas == state.replicas && adding == state.adding && removing == state.removing {
            return Ok(Outcome::Unchanged);
        }
        state.replicas = replicas;
        state.adding = adding;
        state.removing = removing;
        state.partition_epoch += 1;
        maybe_complete_reassignment(state, brokers);
        Ok(Outcome::PartitionsChanged {
            partitions: vec![TopicPartition {
                topic: topic_name.to_string(),
                partition,
            }],
        })
    }

    /// Check every invariant of the module doc; the first broken one as a message.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (name, topic) in &self.topics {
            for (index, state) in topic.partitions.iter().enumerate() {
                let at = format!("{name}-{index}");
                if state.isr.is_empty() {
                    return Err(format!("{at}: empty ISR"));
                }
                check_distinct(&state.replicas).map_err(|e| format!("{at}: replicas: {e}"))?;
                check_distinct(&state.isr).map_err(|e| format!("{at}: isr: {e}"))?;
                if let Some(outside) = state.isr.iter().find(|id| !state.replicas.contains(id)) {
                    return Err(format!("{at}: ISR member {outside} is not a replica"));
                }
                match state.leader {
                    Some(leader) => {
                        if !state.isr.contains(&leader) {
                            return Err(format!("{at}: leader {leader} not in the ISR"));
                        }
                        if !self.is_live(leader) {
                            return Err(format!("{at}: leader {leader} is fenced or unknown"));
                        }
                    }
                    None => {
                        if let Some(live) = state.isr.iter().find(|id| self.is_live(**id)) {
                            return Err(format!("{at}: no leader but ISR member {live} is live"));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn new_partition(replicas: &[BrokerId]) -> PartitionState {
    PartitionState {
        replicas: replicas.to_vec(),
        isr: replicas.to_vec(),
        leader: replicas.first().copied(),
        leader_epoch: 0,
        partition_epoch: 0,
        adding: Vec::new(),
        removing: Vec::new(),
    }
}

fn partition_mut<'a>(
    topics: &'a mut BTreeMap<String, TopicMetadata>,
    topic: &str,
    partition: u32,
) -> Result<&'a mut PartitionState, ControllerError> {
    let t = topics
        .get_mut(topic)
        .ok_or_else(|| ControllerError::UnknownTopic {
            name: topic.to_string(),
        })?;
    t.partitions
        .get_mut(partition as usize)
        .ok_or_else(|| ControllerError::UnknownPartition {
            topic: topic.to_string(),
            partition,
        })
}

/// The first member of `order` that is in `eligible` and live.
fn first_live(
    order: &[BrokerId],
    eligible: &[BrokerId],
    brokers: &BTreeMap<BrokerId, BrokerRegistration>,
) -> Option<BrokerId> {
    order
        .iter()
        .copied()
        .find(|id| eligible.contains(id) && brokers.get(id).is_some_and(|b| !b.fenced))
}

/// No ISR member is live: make the first live replica the leader and the whole ISR (records
/// only the old ISR had are lost; only with unclean election enabled). False if no replica is
/// live either.
fn elect_unclean(
    state: &mut PartitionState,
    brokers: &BTreeMap<BrokerId, BrokerRegistration>,
) -> bool {
    let Some(id) = first_live(&state.replicas, &state.replicas, brokers) else {
        return false;
    };
    if state.isr != [id] {
        state.isr = vec![id];
        state.partition_epoch += 1;
    }
    set_leader(state, Some(id));
    true
}

/// Set the leader, bumping the leader epoch when it changes.
fn set_leader(state: &mut PartitionState, leader: Option<BrokerId>) {
    if state.leader != leader {
        state.leader = leader;
        state.leader_epoch += 1;
    }
}

fn check_distinct(ids: &[BrokerId]) -> Result<(), String> {
    if ids.is_empty() {
        return Err("empty".to_string());
    }
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return Err(format!("{id} appears twice"));
        }
    }
    Ok(())
}

/// Finish a reassignment whose target replicas are all in the ISR.
fn maybe_complete_reassignment(
    state: &mut PartitionState,
    brokers: &BTreeMap<BrokerId, BrokerRegistration>,
) {
    if state.adding.is_empty() && state.removing.is_empty() {
        return;
    }
    let target = state.target_replicas();
    if !target.iter().all(|id| state.isr.contains(id)) {
        return;
    }
    state.replicas = target;
    let removing = std::mem::take(&mut state.removing);
    state.adding.clear();
    state.isr.retain(|id| !removing.contains(id));
    state.partition_epoch += 1;
    if state.leader.is_none_or(|leader| removing.contains(&leader)) {
        let next = first_live(&state.replicas, &state.isr, brokers);
        set_leader(state, next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(image: &mut MetadataImage, id: u32, rack: Option<&str>) {
        let outcome = image.apply(&Command::RegisterBroker {
            id: BrokerId(id),
            endpoints: vec![format!("127.0.0.1:{}", 9000 + id)],
            rack: rack.map(str::to_string),
            incarnation: 1,
        });
        assert!(outcome.is_ok(), "{outcome:?}");
    }

    fn create(image: &mut MetadataImage, name: &str, partitions: u32, rf: u16) {
        let outcome = image.apply(&Command::CreateTopic {
            name: name.to_string(),
            partitions,
            replication_factor: rf,
            min_insync: 1,
            config: BTreeMap::new(),
        });
        assert!(
            matches!(outcome, Ok(Outcome::TopicPlaced { .. })),
            "{outcome:?}"
        );
    }

    #[test]
    fn fencing_the_leader_elects_from_the_isr_and_bumps_the_epochs() {
        let mut image = MetadataImage::new();
        for id in 1..=3 {
            register(&mut image, id, None);
        }
        create(&mut image, "orders", 3, 3);
        let before = image.clone();
        let led = image.partitions_led_by(BrokerId(1));
        assert!(!led.is_empty());
        let outcome = image.apply(&Command::FenceBroker { id: BrokerId(1) });
        assert!(matches!(outcome, Ok(Outcome::PartitionsChanged { .. })));
        for tp in &led {
            let old = before
                .partition(&tp.topic, tp.partition)
                .expect("partition");
            let new = image.partition(&tp.topic, tp.partition).expect("partition");
            assert_ne!(new.leader, Some(BrokerId(1)));
            assert!(new.leader.is_some_and(|l| old.isr.contains(&l)));
            assert_eq!(new.leader_epoch, old.leader_epoch + 1);
            assert_eq!(new.partition_epoch, old.partition_epoch + 1);
            assert!(!new.isr.contains(&BrokerId(1)));
        }
        assert_eq!(image.check_invariants(), Ok(()));
    }

    #[test]
    fn the_last_isr_member_stays_when_fenced_and_leads_again_when_back() {
        let mut image = MetadataImage::new();
        register(&mut image, 1, None);
        create(&mut image, "solo", 1, 1);
        assert!(image
            .apply(&Command::FenceBroker { id: BrokerId(1) })
            .is_ok());
        let state = image.partition("solo", 0).expect("partition");
        assert_eq!(state.leader, None);
        assert_eq!(state.isr, vec![BrokerId(1)]);
        assert_eq!(state.leader_epoch, 1);
        assert!(image
            .apply(&Command::UnfenceBroker { id: BrokerId(1) })
            .is_ok());
        let state = image.partition("solo", 0).expect("partition");
        assert_eq!(state.leader, Some(BrokerId(1)));
        assert_eq!(state.leader_epoch, 2);
        assert_eq!(image.check_invariants(), Ok(()));
    }

    #[test]
    fn alter_isr_with_stale_epochs_is_rejected() {
        let mut image = MetadataImage::new();
        for id in 1..=3 {
            register(&mut image, id, None);
        }
        create(&mut image, "t", 1, 3);
        let state = image.partition("t", 0).expect("partition").clone();
        let leader = state.leader.expect("leader");
        let shrink = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            new_isr: vec![leader],
        };
        assert_eq!(
            image.apply(&shrink),
            Ok(Outcome::IsrAltered {
                partition_epoch: 1,
                leader_epoch: 0
            })
        );
        // The same request again carries a stale partition epoch now.
        assert!(matches!(
            image.apply(&shrink),
            Err(ControllerError::InvalidUpdateVersion {
                got: 0,
                current: 1,
                ..
            })
        ));
        let stale_leader = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader_epoch: 7,
            partition_epoch: 1,
            new_isr: state.replicas.clone(),
        };
        assert!(matches!(
            image.apply(&stale_leader),
            Err(ControllerError::FencedLeaderEpoch {
                got: 7,
                current: 0,
                ..
            })
        ));
    }

    #[test]
    fn reassignment_adds_first_and_drops_once_the_new_replicas_are_in_sync() {
        let mut image = MetadataImage::new();
        for id in 1..=4 {
            register(&mut image, id, None);
        }
        create(&mut image, "t", 1, 2);
        let old = image.partition("t", 0).expect("partition").clone();
        let newcomer = (1..=4)
            .map(BrokerId)
            .find(|id| !old.replicas.contains(id))
            .expect("a broker outside the replicas");
        let kept = old.replicas[1];
        let target = vec![kept, newcomer];
        assert!(image
            .apply(&Command::Reassign {
                topic: "t".into(),
                partition: 0,
                target_replicas: target.clone(),
            })
            .is_ok());
        let mid = image.partition("t", 0).expect("partition").clone();
        assert_eq!(mid.replicas.len(), 3, "old and new replicas while moving");
        assert_eq!(mid.adding, vec![newcomer]);
        assert_eq!(mid.removing, vec![old.replicas[0]]);
        // The leader reports the newcomer caught up.
        let mut isr = mid.isr.clone();
        isr.push(newcomer);
        let outcome = image.apply(&Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader_epoch: mid.leader_epoch,
            partition_epoch: mid.partition_epoch,
            new_isr: isr,
        });
        assert!(outcome.is_ok(), "{outcome:?}");
        let done = image.partition("t", 0).expect("partition");
        assert_eq!(done.replicas, target);
        assert!(done.adding.is_empty() && done.removing.is_empty());
        assert_eq!(done.leader, Some(kept), "the removed leader handed over");
        assert_eq!(done.leader_epoch, old.leader_epoch + 1);
        assert_eq!(image.check_invariants(), Ok(()));
    }

    #[test]
    fn a_topic_with_unclean_election_moves_to_an_out_of_sync_replica() {
        let mut image = MetadataImage::new();
        for id in 1..=2 {
            register(&mut image, id, None);
        }
        image
            .apply(&Command::CreateTopic {
                name: "lossy".into(),
                partitions: 1,
                replication_factor: 2,
                min_insync: 1,
                config: BTreeMap::from([(UNCLEAN_LEADER_ELECTION_CONFIG.into(), "true".into())]),
            })
            .expect("create");
        let state = image.partition("lossy", 0).expect("partition").clone();
        let leader = state.leader.expect("leader");
        let follower = state.replicas[1];
        image
            .apply(&Command::AlterIsr {
                topic: "lossy".into(),
                partition: 0,
                leader_epoch: 0,
                partition_epoch: 0,
                new_isr: vec![leader],
            })
            .expect("shrink");
        image
            .apply(&Command::FenceBroker { id: leader })
            .expect("fence");
        let state = image.partition("lossy", 0).expect("partition");
        assert_eq!(state.leader, Some(follower));
        assert_eq!(state.isr, vec![follower]);
        assert_eq!(state.leader_epoch, 1);
        assert_eq!(image.check_invariants(), Ok(()));
    }

    #[test]
    fn unclean_election_only_when_asked() {
        let mut image = MetadataImage::new();
        for id in 1..=2 {
            register(&mut image, id, None);
        }
        create(&mut image, "t", 1, 2);
        let state = image.partition("t", 0).expect("partition").clone();
        let leader = state.leader.expect("leader");
        let follower = state.replicas[1];
        image
            .apply(&Command::AlterIsr {
                topic: "t".into(),
                partition: 0,
                leader_epoch: 0,
                partition_epoch: 0,
                new_isr: vec![leader],
            })
            .expect("shrink");
        image
            .apply(&Command::FenceBroker { id: leader })
            .expect("fence");
        let tp = vec![TopicPartition {
            topic: "t".into(),
            partition: 0,
        }];
        assert_eq!(
            image.apply(&Command::ElectLeaders {
                partitions: tp.clone(),
                kind: ElectionKind::Clean
            }),
            Ok(Outcome::Unchanged)
        );
        assert_eq!(image.partition("t", 0).and_then(|p| p.leader), None);
        assert!(image
            .apply(&Command::ElectLeaders {
                partitions: tp,
                kind: ElectionKind::Unclean
            })
            .is_ok());
        let state = image.partition("t", 0).expect("partition");
        assert_eq!(state.leader, Some(follower));
        assert_eq!(state.isr, vec![follower]);
        assert_eq!(image.check_invariants(), Ok(()));
    }
}
