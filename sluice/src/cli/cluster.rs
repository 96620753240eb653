//! `sluice cluster status|decommission|elect-leaders`: the cluster's brokers and controller
//! quorum, draining a broker of its replicas, and leader elections, through
//! [`client::Admin`].
//!
//! `decommission` computes its plan here with [`client::plan_decommission`] from the current
//! placement (the metadata of every topic, `__consumer_offsets` included) and the live
//! brokers (`DescribeCluster`), prints it, and submits it as partition reassignments unless
//! `--dry-run`.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use client::{
    plan_decommission, Admin, ClusterDescription, PlannedMove, Reassignment, TopicPartition,
};

use super::{list_ids, render_table, BrokerArg};

/// Cluster operations.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster: its id, the controller leader and voters, the count of
    /// under-replicated and offline partitions, then one row per broker: BROKER STATE
    /// (live or fenced) RACK ENDPOINTS.
    Status(BrokerArg),
    /// Move every replica off a broker, onto the other live brokers, evenly and keeping each
    /// partition's replication factor; prints the plan (TOPIC PARTITION FROM TO), then
    /// submits it. The new replicas join first; the old ones are dropped once the new ones
    /// are in sync (`sluice topic describe` shows the progress). Refused when fewer live
    /// brokers than a partition's replication factor would remain.
    Decommission(DecommissionArgs),
    /// Elect partition leaders: with --preferred, move leadership back to each partition's
    /// first replica where it is in sync (rebalance leaders, e.g. after a broker came back);
    /// without, give a leader from the in-sync replicas to partitions that have none. Prints
    /// the partitions whose leader changed.
    ElectLeaders(ElectLeadersArgs),
}

/// `sluice cluster decommission`.
#[derive(Debug, Args)]
pub struct DecommissionArgs {
    /// Id of the broker to drain.
    #[arg(long)]
    pub broker_id: u32,
    /// Print the plan without submitting it.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: BrokerArg,
}

/// `sluice cluster elect-leaders`.
#[derive(Debug, Args)]
pub struct ElectLeadersArgs {
    /// Preferred-leader election (else only leaderless partitions get a leader).
    #[arg(long)]
    pub preferred: bool,
    /// Only this topic's partitions (default: every partition of the cluster).
    #[arg(long)]
    pub topic: Option<String>,
    /// Only this partition of --topic.
    #[arg(long, requires = "topic")]
    pub partition: Option<u32>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: BrokerArg,
}

pub(super) async fn run(command: ClusterCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClusterCommand::Status(broker) => {
            let admin = Admin::new(&broker.broker)?;
            let cluster = admin
                .describe_cluster()
                .await
                .context("describing the cluster")?;
            print!("{}", render_status(&cluster));
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::Decommission(args) => decommission(args).await,
        ClusterCommand::ElectLeaders(args) => {
            let admin = Admin::new(&args.broker.broker)?;
            let partitions = match (&args.topic, args.partition) {
                (None, _) => None,
                (Some(topic), Some(partition)) => Some(vec![TopicPartition::new(topic, partition)]),
                (Some(topic), None) => {
                    let description = admin
                        .describe_topic(topic)
                        .await
                        .with_context(|| format!("describing topic {topic:?}"))?;
                    Some(
                        description
                            .partitions
                            .iter()
                            .map(|p| TopicPartition::new(topic, p.partition))
                            .collect(),
                    )
                }
            };
            let changed = admin
                .elect_leaders(args.preferred, partitions.as_deref())
                .await
                .context("electing leaders")?;
            if changed.is_empty() {
                println!("no leader changed");
            }
            for tp in changed {
                println!("{tp}: new leader elected");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `sluice cluster decommission`: plan, print, submit.
async fn decommission(args: DecommissionArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.broker.broker)?;
    let cluster = admin
        .describe_cluster()
        .await
        .context("describing the cluster")?;
    if !cluster
        .brokers
        .iter()
        .any(|b| b.broker_id == args.broker_id)
    {
        bail!(
            "broker {} is not registered in this cluster (brokers: {})",
            args.broker_id,
            list_ids(
                &cluster
                    .brokers
                    .iter()
                    .map(|b| b.broker_id)
                    .collect::<Vec<_>>()
            )
        );
    }
    let live: Vec<u32> = cluster
        .brokers
        .iter()
        .filter(|b| !b.fenced)
        .map(|b| b.broker_id)
        .collect();
    let placement = admin
        .partition_placement()
        .await
        .context("reading the partitions' placement")?;
    let moves = plan_decommission(&placement, args.broker_id, &live)
        .with_context(|| format!("planning the decommission of broker {}", args.broker_id))?;
    if moves.is_empty() {
        println!(
            "broker {} holds no replica: nothing to move",
            args.broker_id
        );
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render_plan(&moves));
    if args.dry_run {
        println!(
            "dry run: {} partitions would move; nothing submitted",
            moves.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let reassignments: Vec<Reassignment> = moves
        .iter()
        .map(|planned| Reassignment {
            partition: planned.partition.clone(),
            replicas: planned.to.clone(),
        })
        .collect();
    let outcomes = admin
        .reassign_partitions(&reassignments)
        .await
        .context("submitting the reassignments")?;
    let mut failed = 0;
    for (tp, outcome) in &outcomes {
        if let Err(error) = outcome {
            failed += 1;
            eprintln!("{tp}: not reassigned: {error}");
        }
    }
    println!(
        "submitted {} reassignments off broker {}{}",
        outcomes.len() - failed,
        args.broker_id,
        if failed > 0 {
            format!(", {failed} refused")
        } else {
            String::new()
        }
    );
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The text of `sluice cluster status`.
fn render_status(cluster: &ClusterDescription) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let cluster_id = if cluster.cluster_id.is_empty() {
        "-"
    } else {
        cluster.cluster_id.as_str()
    };
    let _ = writeln!(out, "cluster id:       {cluster_id}");
    let controller = match cluster.controller_id {
        Some(id) => format!("{id} (term {})", cluster.controller_term),
        None => "none (no quorum leader)".to_owned(),
    };
    let _ = writeln!(out, "controller:       {controller}");
    let voters: Vec<String> = cluster
        .voters
        .iter()
        .map(|voter| format!("{}@{}", voter.id, voter.address))
        .collect();
    let voters = if voters.is_empty() {
        "-".to_owned()
    } else {
        voters.join(" ")
    };
    let _ = writeln!(out, "voters:           {voters}");
    let _ = writeln!(
        out,
        "under-replicated: {}",
        cluster.under_replicated_partitions
    );
    let _ = writeln!(out, "offline:          {}", cluster.offline_partitions);
    out.push('\n');
    let rows: Vec<Vec<String>> = cluster
        .brokers
        .iter()
        .map(|broker| {
            let mut state = if broker.fenced { "fenced" } else { "live" }.to_owned();
            if cluster.controller_id == Some(broker.broker_id) {
                state.push_str(",controller");
            }
            vec![
                broker.broker_id.to_string(),
                state,
                broker.rack.clone().unwrap_or_else(|| "-".to_owned()),
                if broker.endpoints.is_empty() {
                    "-".to_owned()
                } else {
                    broker.endpoints.join(",")
                },
            ]
        })
        .collect();
    out.push_str(&render_table(
        &["BROKER", "STATE", "RACK", "ENDPOINTS"],
        &rows,
    ));
    out
}

/// The text of a decommission plan: one row per moved partition.
fn render_plan(moves: &[PlannedMove]) -> String {
    let rows: Vec<Vec<String>> = moves
        .iter()
        .map(|planned| {
            vec![
                planned.partition.topic.clone(),
                planned.partition.partition.to_string(),
                list_ids(&planned.from),
                list_ids(&planned.to),
            ]
        })
        .collect();
    render_table(&["TOPIC", "PARTITION", "FROM", "TO"], &rows)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use client::{ClusterBroker, ControllerVoter};

    /// The status text: quorum lines, then one row per broker, the controller marked,
    /// fenced brokers shown as such, `-` for no rack.
    #[test]
    fn status_renders_brokers_and_quorum() {
        let broker = |id: u32, fenced: bool, rack: Option<&str>| ClusterBroker {
            broker_id: id,
            endpoints: vec![format!("10.0.0.{id}:9092"), format!("10.0.0.{id}:9100")],
            rack: rack.map(str::to_owned),
            fenced,
            incarnation: 1,
        };
        let cluster = ClusterDescription {
            cluster_id: "c-1".into(),
            controller_id: Some(2),
            controller_term: 5,
            voters: vec![
                ControllerVoter {
                    id: 1,
                    address: "10.0.0.1:9093".into(),
                },
                ControllerVoter {
                    id: 2,
                    address: "10.0.0.2:9093".into(),
                },
            ],
            brokers: vec![
                broker(1, false, Some("r1")),
                broker(2, false, None),
                broker(3, true, None),
            ],
            under_replicated_partitions: 4,
            offline_partitions: 1,
        };
        let text = render_status(&cluster);
        assert!(text.contains("controller:       2 (term 5)"), "{text}");
        assert!(
            text.contains("voters:           1@10.0.0.1:9093 2@10.0.0.2:9093"),
            "{text}"
        );
        assert!(text.contains("under-replicated: 4"), "{text}");
        assert!(text.contains("offline:          1"), "{text}");
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip_while(|l| !l.starts_with("BROKER"))
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec!["1", "live", "r1", "10.0.0.1:9092,10.0.0.1:9100"],
                vec!["2", "live,controller", "-", "10.0.0.2:9092,10.0.0.2:9100"],
                vec!["3", "fenced", "-", "10.0.0.3:9092,10.0.0.3:9100"],
            ]
        );
        let leaderless = ClusterDescription {
            controller_id: None,
            ..cluster
        };
        assert!(render_status(&leaderless).contains("controller:       none"));
    }

    /// The plan table names each partition with its replica sets before and after.
    #[test]
    fn plan_renders_moves() {
        let text = render_plan(&[PlannedMove {
            partition: TopicPartition::new("orders", 3),
            from: vec![4, 1],
            to: vec![2, 1],
        }]);
        assert_eq!(
            text,
            "TOPIC  PARTITION FROM TO\norders 3         4,1  2,1\n"
        );
    }
}
