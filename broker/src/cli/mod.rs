//! The client side of the `sluice` command line: `sluice topic create|delete|list|describe`,
//! `sluice produce` and `sluice consume`, all through the native client (`sluice-client`).
//!
//! `main` parses these subcommands (flattened next to `serve`) and runs [`run`] on a tokio
//! runtime. Every command takes `--broker host:port` (env `SLUICE_BROKER`, default
//! 127.0.0.1:9092). Raw arguments are checked and turned into client settings here, before
//! anything is sent.

mod consume;
mod produce;
mod topic;

use std::process::ExitCode;

use clap::{Args, Subcommand};

pub use consume::ConsumeArgs;
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
    /// Create, delete, list and describe topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Send each line of standard input as a message; exits non-zero if any message was not
    /// acknowledged.
    Produce(ProduceArgs),
    /// Print messages, one per line (`offset<TAB>key<TAB>value` with the print flags).
    Consume(ConsumeArgs),
}

/// Runs a client subcommand. Failures that are the command's answer (unacknowledged
/// messages) print to stderr and give a failing exit code; other errors are returned.
pub async fn run(command: CliCommand) -> anyhow::Result<ExitCode> {
    match command {
        CliCommand::Topic(command) => topic::run(command).await,
        CliCommand::Produce(args) => produce::run(args).await,
        CliCommand::Consume(args) => consume::run(args).await,
    }
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
        assert_eq!(topic.durability.unwrap().interval_ms, 20);

        assert!(parse(&["topic", "list"]).is_ok());
        assert!(parse(&["topic", "delete", "x"]).is_ok());
        assert!(parse(&["topic", "describe", "x"]).is_ok());
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
}
