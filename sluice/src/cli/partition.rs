//! `sluice partition reassign`: move one partition to a new replica set, through
//! [`client::Admin::reassign_partitions`].

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use client::{Admin, Reassignment, TopicPartition};

use super::{list_ids, BrokerArg};

/// Partition operations.
#[derive(Debug, Subcommand)]
pub enum PartitionCommand {
    /// Move a partition to a new replica set (preferred leader first). The new replicas are
    /// added and catch up first; the old ones are dropped once every new one is in sync, so
    /// the partition stays writable with its replication factor throughout. Returns once the
    /// controller accepted the move; `sluice topic describe` shows its progress.
    Reassign(ReassignArgs),
}

/// `sluice partition reassign`.
#[derive(Debug, Args)]
pub struct ReassignArgs {
    /// Topic name.
    #[arg(long)]
    pub topic: String,
    /// Partition number.
    #[arg(long)]
    pub partition: u32,
    /// The new replica set: broker ids, comma-separated, preferred leader first.
    #[arg(long, value_delimiter = ',', required = true)]
    pub replicas: Vec<u32>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: BrokerArg,
}

impl ReassignArgs {
    /// The checked reassignment: no broker twice.
    pub fn to_reassignment(&self) -> anyhow::Result<Reassignment> {
        let mut sorted = self.replicas.clone();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
            bail!("--replicas names broker {} twice", pair[0]);
        }
        Ok(Reassignment {
            partition: TopicPartition::new(&self.topic, self.partition),
            replicas: self.replicas.clone(),
        })
    }
}

pub(super) async fn run(command: PartitionCommand) -> anyhow::Result<ExitCode> {
    match command {
        PartitionCommand::Reassign(args) => {
            let reassignment = args.to_reassignment()?;
            let admin = Admin::new(&args.broker.broker)?;
            let outcomes = admin
                .reassign_partitions(std::slice::from_ref(&reassignment))
                .await
                .with_context(|| format!("reassigning {}", reassignment.partition))?;
            for (tp, outcome) in outcomes {
                outcome.with_context(|| format!("reassigning {tp}"))?;
                println!(
                    "reassignment of {tp} to replicas {} started",
                    list_ids(&reassignment.replicas)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A broker named twice is refused before anything is sent.
    #[test]
    fn duplicate_replicas_are_refused() {
        let args = |replicas: Vec<u32>| ReassignArgs {
            topic: "t".into(),
            partition: 1,
            replicas,
            broker: BrokerArg {
                broker: "x:1".into(),
            },
        };
        let ok = args(vec![3, 1, 2]).to_reassignment().unwrap();
        assert_eq!(
            ok.replicas,
            vec![3, 1, 2],
            "order kept: preferred leader first"
        );
        let error = args(vec![1, 2, 1]).to_reassignment().unwrap_err();
        assert!(error.to_string().contains("broker 1 twice"), "{error}");
    }
}
