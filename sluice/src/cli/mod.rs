//! The client side of the `sluice` command line: `sluice topic
//! create|delete|list|describe|add-partitions`, `sluice group list|describe|reset-offsets`,
//! `sluice cluster status|decommission|elect-leaders`, `sluice partition reassign`,
//! `sluice produce` and `sluice consume`, all through the native client (`sluice-client`).
//!
//! `main` parses these subcommands (flattened next to `serve`) and runs [`run`] on a tokio
//! runtime. Every command takes `--broker host:port` (env `SLUICE_BROKER`, default
//! 127.0.0.1:9092). Raw arguments are checked and turned into client settings here, before
//! anything is sent.

mod cluster;
mod consume;
mod group;
mod partition;
mod produce;
mod topic;

use std::process::ExitCode;

use clap::{Args, Subcommand};

pub use cluster::ClusterCommand;
pub use consume::ConsumeArgs;
pub use group::GroupCommand;
pub use partition::PartitionCommand;
pub use produce::ProduceArgs;
pub use topic::TopicCommand;

/// The broker to talk to.
#[derive(Debug, Clone, Args)]
pub struct BrokerArg {
    /// Broker address, host:port (several may be given, comma-separated).
    #[arg(long, env = "SLUICE_BROKER", default_value = "127.0.0.1:9092")]
    pub broker: String,
}

/// The client subcommands of `sluice`.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Create, delete, list and describe topics; add partitions.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// The cluster: its brokers and controller (status), draining a broker (decommission),
    /// leader elections.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Move partitions between brokers.
    #[command(subcommand)]
    Partition(PartitionCommand),
    /// List and describe consumer groups (members, committed offsets, lag); reset their
    /// offsets.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Send each line of standard input as a message; exits non-zero if any message was not
    /// acknowledged.
    Produce(ProduceArgs),
    /// Print messages, one per line (`partition<TAB>offset<TAB>key<TAB>value` with every print
    /// flag), from chosen partitions or as a member of a consumer group (`--group`).
    Consume(ConsumeArgs),
}

/// Runs a client subcommand. Failures that are the command's answer (unacknowledged
/// messages) print to stderr and give a failing exit code; other errors are returned.
pub async fn run(command: CliCommand) -> anyhow::Result<ExitCode> {
    match command {
        CliCommand::Topic(command) => topic::run(command).await,
        CliCommand::Cluster(command) => cluster::run(command).await,
        CliCommand::Partition(command) => partition::run(command).await,
        CliCommand::Group(command) => group::run(command).await,
        CliCommand::Produce(args) => produce::run(args).await,
        CliCommand::Consume(args) => consume::run(args).await,
    }
}

/// Left-aligned columns as wide as their widest cell, one space apart, no trailing spaces.
fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if index > 0 {
                line.push(' ');
            }
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Broker ids as `1,2,3`; `-` for none.
fn list_ids(ids: &[u32]) -> String {
    if ids.is_empty() {
        return "-".to_owned();
    }
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    /// How `main` embeds these commands: flattened next to `serve`.
    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: CliCommand,
    }

    fn parse(args: &[&str]) -> Result<CliCommand, clap::Error> {
        let mut argv = vec!["sluice"];
        argv.extend_from_slice(args);
        TestCli::try_parse_from(argv).map(|cli| cli.command)
    }

    /// Every command parses as documented and bad values are refused by clap.
    #[test]
    fn parses_every_command() {
        let create = parse(&[
            "topic",
            "create",
            "orders",
            "--partitions",
            "4",
            "--durability",
            "interval",
            "--durability-interval-ms",
            "20",
            "--broker",
            "10.0.0.1:9000",
        ])
        .unwrap();
        let CliCommand::Topic(TopicCommand::Create(args)) = create else {
            panic!("{create:?}")
        };
        assert_eq!(args.name, "orders");
        assert_eq!(args.partitions, 4);
        assert_eq!(args.broker.broker, "10.0.0.1:9000");
        let topic = args.to_new_topic().unwrap();
        assert_eq!(topic.durability, Some(wire::Durability::interval(20)));

        assert!(parse(&["topic", "list"]).is_ok());
        assert!(parse(&["topic", "delete", "x"]).is_ok());
        assert!(parse(&["topic", "describe", "x"]).is_ok());
        let grow = parse(&["topic", "add-partitions", "x", "--total", "8"]).unwrap();
        let CliCommand::Topic(TopicCommand::AddPartitions(args)) = grow else {
            panic!("{grow:?}")
        };
        assert_eq!((args.name.as_str(), args.total), ("x", 8));
        assert!(
            parse(&["topic", "add-partitions", "x"]).is_err(),
            "--total needed"
        );
        let replicated = parse(&[
            "topic",
            "create",
            "r",
            "--replication-factor",
            "3",
            "--min-insync-replicas",
            "2",
        ])
        .unwrap();
        let CliCommand::Topic(TopicCommand::Create(args)) = replicated else {
            panic!("{replicated:?}")
        };
        let topic = args.to_new_topic().unwrap();
        assert_eq!(
            (topic.replication_factor, topic.min_insync_replicas),
            (3, Some(2))
        );
        assert!(parse(&[
            "produce",
            "--topic",
            "t",
            "--acks",
            "all",
            "--key-separator",
            ":"
        ])
        .is_ok());
        assert!(parse(&["produce", "--topic", "t", "--acks", "2"]).is_err());
        let consume = parse(&[
            "consume",
            "--topic",
            "t",
            "--from",
            "@1700000000000",
            "--max-messages",
            "3",
            "--print-key",
        ])
        .unwrap();
        let CliCommand::Consume(args) = consume else {
            panic!()
        };
        assert_eq!(args.from, client::Offset::Timestamp(1_700_000_000_000));
        assert!(parse(&["consume", "--topic", "t", "--from", "yesterday"]).is_err());
    }

    /// The cluster and partition commands parse as documented.
    #[test]
    fn parses_cluster_commands() {
        assert!(matches!(
            parse(&["cluster", "status"]).unwrap(),
            CliCommand::Cluster(ClusterCommand::Status(_))
        ));
        let drain = parse(&["cluster", "decommission", "--broker-id", "3", "--dry-run"]).unwrap();
        let CliCommand::Cluster(ClusterCommand::Decommission(args)) = drain else {
            panic!("{drain:?}")
        };
        assert_eq!((args.broker_id, args.dry_run), (3, true));
        assert!(
            parse(&["cluster", "decommission"]).is_err(),
            "--broker-id needed"
        );
        let elect = parse(&["cluster", "elect-leaders", "--preferred", "--topic", "t"]).unwrap();
        let CliCommand::Cluster(ClusterCommand::ElectLeaders(args)) = elect else {
            panic!("{elect:?}")
        };
        assert!(args.preferred);
        assert_eq!(args.topic.as_deref(), Some("t"));
        assert!(parse(&["cluster", "elect-leaders", "--partition", "1"]).is_err());
        let reassign = parse(&[
            "partition",
            "reassign",
            "--topic",
            "t",
            "--partition",
            "2",
            "--replicas",
            "1,2,3",
        ])
        .unwrap();
        let CliCommand::Partition(PartitionCommand::Reassign(args)) = reassign else {
            panic!("{reassign:?}")
        };
        assert_eq!(args.replicas, vec![1, 2, 3]);
        assert_eq!((args.topic.as_str(), args.partition), ("t", 2));
        assert!(parse(&[
            "partition",
            "reassign",
            "--topic",
            "t",
            "--partition",
            "2",
            "--replicas",
            "1,x"
        ])
        .is_err());
    }

    /// The group commands parse; `reset-offsets` needs `--topic` and a valid `--to`.
    #[test]
    fn parses_group_commands() {
        let list = parse(&["group", "list", "--broker", "h:1"]).unwrap();
        let CliCommand::Group(GroupCommand::List(broker)) = list else {
            panic!("{list:?}")
        };
        assert_eq!(broker.broker, "h:1");
        let describe = parse(&["group", "describe", "billing"]).unwrap();
        let CliCommand::Group(GroupCommand::Describe(args)) = describe else {
            panic!("{describe:?}")
        };
        assert_eq!(args.group, "billing");
        for (to, expected) in [
            ("earliest", client::Offset::Earliest),
            ("latest", client::Offset::Latest),
            ("17", client::Offset::At(17)),
            (
                "@1700000000000",
                client::Offset::Timestamp(1_700_000_000_000),
            ),
        ] {
            let reset = parse(&[
                "group",
                "reset-offsets",
                "billing",
                "--topic",
                "t",
                "--to",
                to,
                "--partition",
                "2",
            ])
            .unwrap();
            let CliCommand::Group(GroupCommand::ResetOffsets(args)) = reset else {
                panic!("{reset:?}")
            };
            assert_eq!((args.to, args.partition), (expected, Some(2)));
            assert_eq!(args.topic, "t");
        }
        assert!(parse(&["group", "reset-offsets", "g", "--topic", "t"]).is_err());
        assert!(parse(&["group", "reset-offsets", "g", "--to", "earliest"]).is_err());
        assert!(parse(&[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to",
            "soon"
        ])
        .is_err());
        assert!(parse(&["group", "describe"]).is_err());
    }

    /// `consume --group`: defaults, every flag, conflicts and refusals.
    #[test]
    fn parses_consume_group_flags() {
        use client::assignor::AssignorKind;
        use client::Delivery;
        use std::time::Duration;
        let consume = |extra: &[&str]| -> Result<ConsumeArgs, clap::Error> {
            let mut argv = vec!["consume", "--topic", "t"];
            argv.extend_from_slice(extra);
            match parse(&argv)? {
                CliCommand::Consume(args) => Ok(args),
                other => panic!("{other:?}"),
            }
        };
        let plain = consume(&[]).unwrap();
        assert!(plain.group_config().unwrap().is_none());

        let defaults = consume(&["--group", "g"]).unwrap();
        let group = defaults.group_config().unwrap().unwrap();
        assert_eq!(group.group_id, "g");
        assert_eq!(group.instance_id, None);
        assert_eq!(group.session_timeout, Duration::from_secs(10));
        assert_eq!(group.heartbeat_interval, Duration::from_secs(3));
        assert_eq!(group.assignors, vec![AssignorKind::CooperativeSticky]);
        assert_eq!(group.delivery, Delivery::AtLeastOnce);
        assert!(group.auto_commit);
        assert_eq!(group.auto_commit_interval, Duration::from_secs(5));
        assert_eq!(group.auto_offset_reset, client::Offset::Earliest);

        let all = consume(&[
            "--group",
            "g",
            "--instance-id",
            "worker-1",
            "--session-timeout-ms",
            "6000",
            "--assignor",
            "roundrobin",
            "--delivery",
            "at-most-once",
            "--from",
            "latest",
            "--print-partition",
            "--log-rebalances",
        ])
        .unwrap();
        assert!(all.print_partition && all.group.log_rebalances);
        let group = all.group_config().unwrap().unwrap();
        assert_eq!(group.instance_id.as_deref(), Some("worker-1"));
        assert_eq!(group.session_timeout, Duration::from_secs(6));
        // A third of the session timeout when below the 3 s cap.
        assert_eq!(group.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(group.assignors, vec![AssignorKind::RoundRobin]);
        assert_eq!(group.delivery, Delivery::AtMostOnce);
        assert_eq!(group.auto_offset_reset, client::Offset::Latest);
        let range = consume(&["--group", "g", "--assignor", "range"]).unwrap();
        assert_eq!(
            range.group_config().unwrap().unwrap().assignors,
            vec![AssignorKind::Range]
        );

        // A heartbeat interval must be below the session timeout.
        let slow = consume(&[
            "--group",
            "g",
            "--session-timeout-ms",
            "1000",
            "--heartbeat-interval-ms",
            "1000",
        ])
        .unwrap();
        assert!(slow.group_config().is_err());
        assert!(consume(&["--group", "g", "--partition", "1"]).is_err());
        assert!(consume(&["--group", "g", "--assignor", "sticky"]).is_err());
        assert!(consume(&["--group", "g", "--delivery", "exactly-once"]).is_err());
        // Group flags need --group.
        assert!(consume(&["--instance-id", "x"]).is_err());
        assert!(consume(&["--log-rebalances"]).is_err());
        assert!(consume(&["--print-partition"]).is_ok());
    }
}
