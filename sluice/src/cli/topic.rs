//! `sluice topic create|delete|list|describe`.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use client::{Admin, Durability, NewTopic, TopicDescription};

use super::BrokerArg;

/// Topic administration.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(TopicCreateArgs),
    /// Delete a topic and its data.
    Delete(TopicNameArgs),
    /// List topics, one name per line.
    List(BrokerArg),
    /// Show a topic's settings and, per partition, its leader, shard and log offsets.
    Describe(TopicNameArgs),
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
    /// Copies of each partition.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: u16,
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
        if self.replication_factor == 0 {
            bail!("--replication-factor must be at least 1");
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
            ..NewTopic::new(&self.name, self.partitions)
                .with_replication_factor(self.replication_factor)
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
    }
    Ok(ExitCode::SUCCESS)
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
    let _ = writeln!(
        out,
        "{:<10} {:<8} {:<6} {:<12} {:<12}",
        "partition", "leader", "shard", "log-start", "log-end"
    );
    for partition in &description.partitions {
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:<6} {:<12} {:<12}",
            partition.partition,
            optional(partition.leader),
            partition.leader_shard,
            optional(partition.log_start_offset),
            optional(partition.log_end_offset),
        );
    }
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
            replication_factor: 1,
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
                    leader: Some(0),
                    leader_shard: 1,
                    leader_epoch: 0,
                    replicas: vec![0],
                    isr: vec![0],
                    log_start_offset: Some(0),
                    log_end_offset: Some(42),
                },
                PartitionDescription {
                    partition: 1,
                    leader: None,
                    leader_shard: 0,
                    leader_epoch: 0,
                    replicas: vec![],
                    isr: vec![],
                    log_start_offset: None,
                    log_end_offset: None,
                },
            ],
        };
        let text = render_description(&description);
        assert!(text.contains("retention:          forever"));
        assert!(
            text.contains("0          0        1      0            42"),
            "{text}"
        );
        assert!(
            text.contains("1          -        0      -            -"),
            "{text}"
        );
    }
}
