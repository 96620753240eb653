//! `sluice topic create|delete|list|describe|add-partitions`.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use client::{Admin, Durability, NewTopic, PartitionDescription, TopicDescription};

use super::{list_ids, render_table, BrokerArg};

/// Topic administration.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(TopicCreateArgs),
    /// Delete a topic and its data.
    Delete(TopicNameArgs),
    /// List topics, one name per line.
    List(BrokerArg),
    /// Show a topic's settings and, per partition, its leader, leader epoch, shard, replicas,
    /// in-sync replicas, log offsets and status (ok, under-replicated: fewer replicas in sync
    /// than assigned, or offline: no leader).
    Describe(TopicNameArgs),
    /// Grow a topic to more partitions.
    ///
    /// No data moves: existing messages stay in their partitions. Keys hash over the new
    /// partition count from now on, so new messages with a given key may go to another
    /// partition than the earlier ones with that key (per-key order holds only within each
    /// side of the change). Partitions are never removed.
    AddPartitions(TopicAddPartitionsArgs),
}

/// `sluice topic add-partitions`.
#[derive(Debug, Args)]
pub struct TopicAddPartitionsArgs {
    /// Topic name.
    pub name: String,
    /// The partition count after the change (more than the topic has).
    #[arg(long)]
    pub total: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: BrokerArg,
}

/// A command about one topic.
#[derive(Debug, Args)]
pub struct TopicNameArgs {
    /// Topic name.
    pub name: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: BrokerArg,
}

/// `sluice topic create`.
#[derive(Debug, Args)]
pub struct TopicCreateArgs {
    /// Topic name: 1 to 200 of [A-Za-z0-9._-].
    pub name: String,
    /// Number of partitions.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Copies of each partition, on as many brokers. Default: the broker's
    /// (`--default-replication-factor`).
    #[arg(long)]
    pub replication_factor: Option<u16>,
    /// Acks=all writes are refused while fewer replicas than this are in sync. Default: the
    /// broker's (`--min-insync-replicas`).
    #[arg(long)]
    pub min_insync_replicas: Option<u16>,
    /// Delete data older than this (ms); -1 keeps it forever. Default: the broker's.
    #[arg(long, allow_negative_numbers = true)]
    pub retention_ms: Option<i64>,
    /// Keep at most this many bytes per partition; -1 for no limit. Default: the broker's.
    #[arg(long, allow_negative_numbers = true)]
    pub retention_bytes: Option<i64>,
    /// fsync policy: always, interval or never. Default: the broker's.
    #[arg(long)]
    pub durability: Option<Durability>,
    /// Longest time unsynced with `interval` durability (implies it). Default 10 ms.
    #[arg(long)]
    pub durability_interval_ms: Option<u32>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: BrokerArg,
}

impl TopicCreateArgs {
    /// The checked topic settings.
    pub fn to_new_topic(&self) -> anyhow::Result<NewTopic> {
        if self.partitions == 0 {
            bail!("--partitions must be at least 1");
        }
        if self.replication_factor == Some(0) {
            bail!("--replication-factor must be at least 1");
        }
        if self.min_insync_replicas == Some(0) {
            bail!("--min-insync-replicas must be at least 1");
        }
        if let (Some(rf), Some(min)) = (self.replication_factor, self.min_insync_replicas) {
            if min > rf {
                bail!(
                    "--min-insync-replicas {min} exceeds --replication-factor {rf}: \
                     no acks=all write could ever succeed"
                );
            }
        }
        let durability = match (self.durability, self.durability_interval_ms) {
            (None, None) => None,
            (Some(Durability::Interval { .. }) | None, ms) => {
                let ms = ms.unwrap_or(Durability::INTERVAL_MS_DEFAULT);
                if ms == 0 {
                    bail!("--durability-interval-ms must be at least 1");
                }
                Some(Durability::interval(ms))
            }
            (Some(_), Some(_)) => {
                bail!("--durability-interval-ms only applies to --durability interval")
            }
            (Some(other), None) => Some(other),
        };
        Ok(NewTopic {
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            durability,
            min_insync_replicas: self.min_insync_replicas,
            // 0 asks for the broker's default.
            replication_factor: self.replication_factor.unwrap_or(0),
            ..NewTopic::new(&self.name, self.partitions)
        })
    }
}

pub(super) async fn run(command: TopicCommand) -> anyhow::Result<ExitCode> {
    match command {
        TopicCommand::Create(args) => {
            let topic = args.to_new_topic()?;
            let admin = Admin::new(&args.broker.broker)?;
            admin
                .create_topic(topic)
                .await
                .with_context(|| format!("creating topic {:?}", args.name))?;
            println!("created topic {}", args.name);
        }
        TopicCommand::Delete(args) => {
            let admin = Admin::new(&args.broker.broker)?;
            admin
                .delete_topic(&args.name)
                .await
                .with_context(|| format!("deleting topic {:?}", args.name))?;
            println!("deleted topic {}", args.name);
        }
        TopicCommand::List(broker) => {
            let admin = Admin::new(&broker.broker)?;
            for topic in admin.list_topics().await.context("listing topics")? {
                println!("{}", topic.name);
            }
        }
        TopicCommand::Describe(args) => {
            let admin = Admin::new(&args.broker.broker)?;
            let description = admin
                .describe_topic(&args.name)
                .await
                .with_context(|| format!("describing topic {:?}", args.name))?;
            print!("{}", render_description(&description));
        }
        TopicCommand::AddPartitions(args) => {
            let admin = Admin::new(&args.broker.broker)?;
            admin
                .create_partitions(&args.name, args.total)
                .await
                .with_context(|| {
                    format!(
                        "adding partitions to {:?} (to {} in all)",
                        args.name, args.total
                    )
                })?;
            println!(
                "topic {} now has {} partitions (keys of new messages hash over the new count)",
                args.name, args.total
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ok`, `under-replicated` (a replica out of sync) or `offline` (no leader).
fn partition_status(partition: &PartitionDescription) -> &'static str {
    if partition.is_offline() {
        "offline"
    } else if partition.is_under_replicated() {
        "under-replicated"
    } else {
        "ok"
    }
}

/// `-1` → "none", else the number with its unit.
fn limit(value: i64, unit: &str, none: &str) -> String {
    if value < 0 {
        none.to_owned()
    } else {
        format!("{value} {unit}")
    }
}

fn optional<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The text of `sluice topic describe`.
fn render_description(description: &TopicDescription) -> String {
    use std::fmt::Write;
    let config = &description.metadata.config;
    let mut out = String::new();
    let _ = writeln!(out, "topic:              {}", description.metadata.name);
    let _ = writeln!(out, "partitions:         {}", config.partitions);
    let _ = writeln!(out, "replication factor: {}", config.replication_factor);
    let _ = writeln!(
        out,
        "retention:          {}",
        limit(config.retention_ms, "ms", "forever")
    );
    let _ = writeln!(
        out,
        "retention bytes:    {}",
        limit(config.retention_bytes, "bytes", "unlimited")
    );
    let _ = writeln!(out, "segment bytes:      {}", config.segment_bytes);
    let _ = writeln!(out, "max batch bytes:    {}", config.max_batch_bytes);
    let _ = writeln!(out, "durability:         {}", config.durability);
    let under_replicated = description
        .partitions
        .iter()
        .filter(|p| p.is_under_replicated())
        .count();
    let _ = writeln!(out, "under-replicated:   {under_replicated}");
    let rows: Vec<Vec<String>> = description
        .partitions
        .iter()
        .map(|partition| {
            vec![
                partition.partition.to_string(),
                optional(partition.leader),
                partition.leader_epoch.to_string(),
                partition.leader_shard.to_string(),
                list_ids(&partition.replicas),
                list_ids(&partition.isr),
                optional(partition.log_start_offset),
                optional(partition.log_end_offset),
                partition_status(partition).to_owned(),
            ]
        })
        .collect();
    out.push_str(&render_table(
        &[
            "partition",
            "leader",
            "epoch",
            "shard",
            "replicas",
            "isr",
            "log-start",
            "log-end",
            "status",
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use client::{PartitionDescription, TopicConfig, TopicMetadata};

    fn create(durability: Option<Durability>, ms: Option<u32>) -> TopicCreateArgs {
        TopicCreateArgs {
            name: "t".into(),
            partitions: 2,
            replication_factor: Some(1),
            min_insync_replicas: None,
            retention_ms: Some(-1),
            retention_bytes: None,
            durability,
            durability_interval_ms: ms,
            broker: BrokerArg {
                broker: "x:1".into(),
            },
        }
    }

    /// `--durability` and `--durability-interval-ms` combine into one setting or an error.
    #[test]
    fn durability_flags() {
        assert_eq!(create(None, None).to_new_topic().unwrap().durability, None);
        let always = create(Some(Durability::Always), None)
            .to_new_topic()
            .unwrap();
        assert_eq!(always.durability, Some(Durability::Always));
        let implied = create(None, Some(50)).to_new_topic().unwrap();
        assert_eq!(implied.durability, Some(Durability::interval(50)));
        assert!(create(Some(Durability::Never), Some(5))
            .to_new_topic()
            .is_err());
        assert!(create(Some(Durability::interval(10)), Some(0))
            .to_new_topic()
            .is_err());
        let mut zero = create(None, None);
        zero.partitions = 0;
        assert!(zero.to_new_topic().is_err());
    }

    /// Replication flags: unset means the broker's default (0 on the wire); 0 and a
    /// min-insync above the factor are refused before anything is sent.
    #[test]
    fn replication_flags() {
        let mut args = create(None, None);
        args.replication_factor = None;
        let topic = args.to_new_topic().unwrap();
        assert_eq!(topic.replication_factor, 0, "broker default");
        assert_eq!(topic.min_insync_replicas, None);
        args.replication_factor = Some(3);
        args.min_insync_replicas = Some(2);
        let topic = args.to_new_topic().unwrap();
        assert_eq!(
            (topic.replication_factor, topic.min_insync_replicas),
            (3, Some(2))
        );
        args.min_insync_replicas = Some(4);
        assert!(args.to_new_topic().is_err());
        args.min_insync_replicas = Some(0);
        assert!(args.to_new_topic().is_err());
        args.min_insync_replicas = None;
        args.replication_factor = Some(0);
        assert!(args.to_new_topic().is_err());
    }

    /// The describe table: settings, then one row per partition, `-` where unknown.
    #[test]
    fn describe_renders_partitions() {
        let description = TopicDescription {
            metadata: TopicMetadata {
                name: "orders".into(),
                config: TopicConfig {
                    partitions: 2,
                    retention_ms: -1,
                    ..TopicConfig::default()
                },
                ..TopicMetadata::default()
            },
            partitions: vec![
                PartitionDescription {
                    partition: 0,
                    leader: Some(2),
                    leader_shard: 1,
                    leader_epoch: 7,
                    replicas: vec![2, 3, 1],
                    isr: vec![2, 1],
                    log_start_offset: Some(0),
                    log_end_offset: Some(42),
                },
                PartitionDescription {
                    partition: 1,
                    leader: None,
                    leader_shard: 0,
                    leader_epoch: 3,
                    replicas: vec![1],
                    isr: vec![],
                    log_start_offset: None,
                    log_end_offset: None,
                },
                PartitionDescription {
                    partition: 2,
                    leader: Some(1),
                    leader_shard: 0,
                    leader_epoch: 0,
                    replicas: vec![1, 2],
                    isr: vec![2, 1],
                    log_start_offset: Some(5),
                    log_end_offset: Some(9),
                },
            ],
        };
        let text = render_description(&description);
        assert!(text.contains("retention:          forever"));
        assert!(text.contains("under-replicated:   2"), "{text}");
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip_while(|l| !l.starts_with("partition "))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec![
                    "partition",
                    "leader",
                    "epoch",
                    "shard",
                    "replicas",
                    "isr",
                    "log-start",
                    "log-end",
                    "status"
                ],
                vec![
                    "0",
                    "2",
                    "7",
                    "1",
                    "2,3,1",
                    "2,1",
                    "0",
                    "42",
                    "under-replicated"
                ],
                vec!["1", "-", "3", "0", "1", "-", "-", "-", "offline"],
                vec!["2", "1", "0", "0", "1,2", "2,1", "5", "9", "ok"],
            ],
            "{text}"
        );
    }
}
