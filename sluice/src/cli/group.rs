//! `sluice group list|describe|reset-offsets`: inspect consumer groups and move their
//! committed offsets, through [`client::Admin`].
//!
//! `describe` prints one row per partition like `kafka-consumer-groups --describe`;
//! `reset-offsets` only works on a group without members (the broker refuses otherwise, since
//! running members would overwrite the new offsets at their next commit).

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use client::{
    Admin, ClientError, ErrorCode, GroupLag, GroupListing, Offset, TopicDescription, TopicPartition,
};

use super::consume::parse_from;
use super::{render_table, BrokerArg};

/// Consumer group administration.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups: GROUP STATE MEMBERS PROTOCOL-TYPE.
    List(BrokerArg),
    /// Show a group's state and members and, per partition, its committed offset, log end
    /// offset, lag and owner: TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG MEMBER-ID
    /// CLIENT-ID HOST (`-` where unknown; members without partitions get a row of their own).
    Describe(GroupNameArgs),
    /// Set a group's committed offsets for a topic; the group must have no members. Prints
    /// TOPIC PARTITION NEW-OFFSET.
    ResetOffsets(GroupResetArgs),
}

/// A command about one group.
#[derive(Debug, Args)]
pub struct GroupNameArgs {
    /// Group id.
    pub group: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: BrokerArg,
}

/// `sluice group reset-offsets`.
#[derive(Debug, Args)]
pub struct GroupResetArgs {
    /// Group id.
    pub group: String,
    /// Topic whose offsets to reset.
    #[arg(long)]
    pub topic: String,
    /// Only this partition (default: every partition of the topic).
    #[arg(long)]
    pub partition: Option<u32>,
    /// The new offset: earliest (log start), latest (log end), an offset (must lie between
    /// the log start and the log end), or @TIMESTAMP_MS (the first message at or after that
    /// time; the log end if every message is older).
    #[arg(long, value_parser = parse_from)]
    pub to: Offset,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: BrokerArg,
}

pub(super) async fn run(command: GroupCommand) -> anyhow::Result<ExitCode> {
    match command {
        GroupCommand::List(broker) => {
            let admin = Admin::new(&broker.broker)?;
            let groups = admin.list_groups().await.context("listing groups")?;
            print!("{}", render_list(&groups));
        }
        GroupCommand::Describe(args) => {
            let admin = Admin::new(&args.broker.broker)?;
            let lag = admin
                .group_lag(&args.group)
                .await
                .with_context(|| format!("describing group {:?}", args.group))?;
            print!("{}", render_describe(&lag));
        }
        GroupCommand::ResetOffsets(args) => return reset_offsets(args).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn reset_offsets(args: GroupResetArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.broker.broker)?;
    let topic = admin
        .describe_topic(&args.topic)
        .await
        .with_context(|| format!("describing topic {:?}", args.topic))?;
    let mut targets = resolve_targets(&topic, args.partition, args.to)?;
    if let Offset::Timestamp(ms) = args.to {
        for (tp, offset) in &mut targets {
            *offset = admin
                .list_offsets(tp, ms.max(0))
                .await
                .with_context(|| format!("looking up the offset of {tp} at {ms} ms"))?;
        }
    }
    match admin.reset_offsets(&args.group, &targets).await {
        Ok(()) => {}
        Err(ClientError::Broker {
            code: ErrorCode::NonEmptyGroup,
            ..
        }) => {
            eprintln!(
                "error: group {} has active members; stop them first",
                args.group
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("resetting the offsets of group {:?}", args.group))
        }
    }
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|(tp, offset)| {
            vec![
                tp.topic.clone(),
                tp.partition.to_string(),
                offset.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        render_table(&["TOPIC", "PARTITION", "NEW-OFFSET"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}

/// The partitions to reset with their new offsets, from the topic's log bounds: earliest and
/// latest resolved, a plain offset checked against `[log start, log end]`. Timestamps need a
/// lookup per partition: their offsets are placeholders (0) for the caller to fill in.
fn resolve_targets(
    topic: &TopicDescription,
    partition: Option<u32>,
    to: Offset,
) -> anyhow::Result<Vec<(TopicPartition, u64)>> {
    let name = &topic.metadata.name;
    let partitions: Vec<_> = match partition {
        None => topic.partitions.iter().collect(),
        Some(wanted) => {
            let Some(found) = topic.partitions.iter().find(|p| p.partition == wanted) else {
                bail!(
                    "topic {name:?} has no partition {wanted} (it has {})",
                    topic.partitions.len()
                );
            };
            vec![found]
        }
    };
    let mut targets = Vec::with_capacity(partitions.len());
    for description in partitions {
        let tp = TopicPartition::new(name, description.partition);
        let bounds = description.log_start_offset.zip(description.log_end_offset);
        let offset = match (to, bounds) {
            (Offset::Timestamp(_), _) => 0,
            (_, None) => bail!("the log bounds of {tp} are unknown (no leader?)"),
            (Offset::Earliest, Some((start, _))) => start,
            (Offset::Latest, Some((_, end))) => end,
            (Offset::At(offset), Some((start, end))) => {
                if offset < start || offset > end {
                    bail!(
                        "offset {offset} is outside the log of {tp} (log start {start}, \
                         log end {end}); nothing was reset"
                    );
                }
                offset
            }
        };
        targets.push((tp, offset));
    }
    Ok(targets)
}

fn optional<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `-` for an empty string.
fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// The text of `sluice group list`.
fn render_list(groups: &[GroupListing]) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|group| {
            vec![
                group.group_id.clone(),
                group.state.clone(),
                group.members.to_string(),
                or_dash(&group.protocol_type),
            ]
        })
        .collect();
    render_table(&["GROUP", "STATE", "MEMBERS", "PROTOCOL-TYPE"], &rows)
}

/// The text of `sluice group describe`: a header, then one row per partition and one per
/// member without partitions.
fn render_describe(lag: &GroupLag) -> String {
    use std::fmt::Write;
    let group = &lag.description;
    let mut out = String::new();
    let _ = writeln!(out, "group:      {}", group.group_id);
    let _ = writeln!(out, "state:      {}", group.state);
    let _ = writeln!(out, "type:       {}", or_dash(&group.protocol_type));
    let _ = writeln!(out, "protocol:   {}", or_dash(&group.protocol));
    let _ = writeln!(out, "generation: {}", group.generation);
    let _ = writeln!(out, "leader:     {}", or_dash(&group.leader));
    let _ = writeln!(out, "members:    {}", group.members.len());
    out.push('\n');
    let member = |id: &str| group.members.iter().find(|m| m.member_id == id);
    let mut rows: Vec<Vec<String>> = lag
        .partitions
        .iter()
        .map(|partition| {
            let owner = partition.member_id.as_deref().and_then(member);
            vec![
                partition.partition.topic.clone(),
                partition.partition.partition.to_string(),
                optional(partition.committed),
                optional(partition.log_end_offset),
                optional(partition.lag),
                optional(partition.member_id.as_deref()),
                optional(owner.map(|m| or_dash(&m.client_id))),
                optional(owner.map(|m| or_dash(&m.client_host))),
            ]
        })
        .collect();
    for idle in group.members.iter().filter(|m| m.assignment.is_empty()) {
        let mut row = vec!["-".to_owned(); 5];
        row.extend([
            idle.member_id.clone(),
            or_dash(&idle.client_id),
            or_dash(&idle.client_host),
        ]);
        rows.push(row);
    }
    out.push_str(&render_table(
        &[
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "MEMBER-ID",
            "CLIENT-ID",
            "HOST",
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use client::{
        GroupDescription, MemberDescription, PartitionDescription, PartitionLag, TopicMetadata,
    };

    fn topic(bounds: &[(u64, u64)]) -> TopicDescription {
        TopicDescription {
            metadata: TopicMetadata {
                name: "t".into(),
                ..TopicMetadata::default()
            },
            partitions: bounds
                .iter()
                .enumerate()
                .map(|(partition, &(start, end))| PartitionDescription {
                    partition: partition as u32,
                    leader: Some(0),
                    leader_shard: 0,
                    leader_epoch: 0,
                    replicas: vec![0],
                    isr: vec![0],
                    log_start_offset: Some(start),
                    log_end_offset: Some(end),
                })
                .collect(),
        }
    }

    /// earliest/latest take the log bounds; a plain offset must lie within them (either end
    /// included); `--partition` picks one partition and must exist.
    #[test]
    fn reset_targets() {
        let topic = topic(&[(0, 10), (5, 7)]);
        let tp = |p| TopicPartition::new("t", p);
        assert_eq!(
            resolve_targets(&topic, None, Offset::Earliest).unwrap(),
            vec![(tp(0), 0), (tp(1), 5)]
        );
        assert_eq!(
            resolve_targets(&topic, None, Offset::Latest).unwrap(),
            vec![(tp(0), 10), (tp(1), 7)]
        );
        assert_eq!(
            resolve_targets(&topic, Some(1), Offset::At(7)).unwrap(),
            vec![(tp(1), 7)]
        );
        assert_eq!(
            resolve_targets(&topic, Some(0), Offset::Timestamp(5)).unwrap(),
            vec![(tp(0), 0)]
        );
        let below = resolve_targets(&topic, None, Offset::At(3)).unwrap_err();
        assert!(
            below.to_string().contains("log start 5, log end 7"),
            "{below}"
        );
        assert!(resolve_targets(&topic, Some(0), Offset::At(11)).is_err());
        assert!(resolve_targets(&topic, Some(2), Offset::Earliest).is_err());
    }

    /// The list table, `-` for an empty protocol type.
    #[test]
    fn list_renders_groups() {
        let text = render_list(&[
            GroupListing {
                group_id: "billing".into(),
                state: "Stable".into(),
                protocol_type: "consumer".into(),
                members: 2,
            },
            GroupListing {
                group_id: "old".into(),
                state: "Empty".into(),
                protocol_type: String::new(),
                members: 0,
            },
        ]);
        assert_eq!(
            text,
            "GROUP   STATE  MEMBERS PROTOCOL-TYPE\n\
             billing Stable 2       consumer\n\
             old     Empty  0       -\n"
        );
    }

    /// The describe table: owned and unowned partitions, `-` for unknowns, and a row for a
    /// member without partitions.
    #[test]
    fn describe_renders_partitions_and_idle_members() {
        let member = |id: &str, assignment: Vec<TopicPartition>| MemberDescription {
            member_id: id.into(),
            instance_id: None,
            client_id: "cli".into(),
            client_host: "127.0.0.1".into(),
            assignment,
        };
        let lag = GroupLag {
            description: GroupDescription {
                group_id: "g".into(),
                state: "Stable".into(),
                protocol_type: "consumer".into(),
                protocol: "range".into(),
                generation: 3,
                leader: "m1".into(),
                members: vec![
                    member("m1", vec![TopicPartition::new("t", 0)]),
                    member("m2", vec![]),
                ],
            },
            partitions: vec![
                PartitionLag {
                    partition: TopicPartition::new("t", 0),
                    committed: Some(4),
                    log_end_offset: Some(10),
                    lag: Some(6),
                    member_id: Some("m1".into()),
                },
                PartitionLag {
                    partition: TopicPartition::new("t", 1),
                    committed: None,
                    log_end_offset: Some(3),
                    lag: None,
                    member_id: None,
                },
            ],
        };
        let text = render_describe(&lag);
        assert!(
            text.contains("type:       consumer\nprotocol:   range\n"),
            "{text}"
        );
        assert!(text.contains("generation: 3\n"), "{text}");
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip_while(|line| !line.starts_with("TOPIC"))
            .skip(1)
            .map(|line| line.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec!["t", "0", "4", "10", "6", "m1", "cli", "127.0.0.1"],
                vec!["t", "1", "-", "3", "-", "-", "-", "-"],
                vec!["-", "-", "-", "-", "-", "m2", "cli", "127.0.0.1"],
            ]
        );
    }
}
