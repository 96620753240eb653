//! `sluice produce`: every line of standard input becomes one message.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use client::{Acks, ClientError, Producer, ProducerConfig, ProducerRecord};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::BrokerArg;

/// `sluice produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to send to.
    #[arg(long)]
    pub topic: String,
    /// Split each line at the first occurrence of this: the part before is the key, the part
    /// after the value. Lines without it are sent without a key.
    #[arg(long)]
    pub key_separator: Option<String>,
    /// Acknowledgement: 0 (none), 1 (leader) or all.
    #[arg(long, default_value = "1")]
    pub acks: Acks,
    /// Send every message to this partition (default: by key, else spread).
    #[arg(long)]
    pub partition: Option<u32>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: BrokerArg,
}

/// Most acknowledgements awaited at once before reading more input; the producer's own buffer
/// limit applies as well.
const PENDING_MAX: usize = 100_000;

/// The record for one input line (without its line ending).
fn record_for(args: &ProduceArgs, line: &str) -> ProducerRecord {
    let (key, value) = match args.key_separator.as_deref() {
        Some(separator) if !separator.is_empty() => match line.split_once(separator) {
            Some((key, value)) => (Some(key), value),
            None => (None, line),
        },
        _ => (None, line),
    };
    let mut record = ProducerRecord::new(args.topic.clone(), value.as_bytes().to_vec());
    if let Some(key) = key {
        record = record.with_key(key.as_bytes().to_vec());
    }
    if let Some(partition) = args.partition {
        record = record.with_partition(partition);
    }
    record
}

pub(super) async fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    if args.key_separator.as_deref() == Some("") {
        bail!("--key-separator must not be empty");
    }
    let producer = Producer::new(ProducerConfig {
        acks: args.acks,
        ..ProducerConfig::new(&args.broker.broker)
    })?;
    let mut pending = FuturesUnordered::new();
    let mut sent = 0u64;
    let mut failed = 0u64;
    let mut first_error: Option<ClientError> = None;
    let mut note = |result: Result<client::RecordMetadata, ClientError>| {
        if let Err(error) = result {
            failed += 1;
            first_error.get_or_insert(error);
        }
    };

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("reading standard input")? {
        let delivery = match producer.enqueue(record_for(&args, &line)).await {
            Ok(delivery) => delivery,
            Err(error) => {
                // The producer refused it outright (closed, record too large): count it.
                sent += 1;
                note(Err(error));
                continue;
            }
        };
        sent += 1;
        pending.push(delivery);
        // Collect what is already acknowledged, so memory stays bounded on long inputs.
        while pending.len() >= PENDING_MAX {
            if let Some(result) = pending.next().await {
                note(result);
            }
        }
        while let Some(Some(result)) = futures::FutureExt::now_or_never(pending.next()) {
            note(result);
        }
    }
    producer.flush().await.context("flushing")?;
    while let Some(result) = pending.next().await {
        note(result);
    }
    producer.close().await.context("closing the producer")?;

    match first_error {
        None => Ok(ExitCode::SUCCESS),
        Some(error) => {
            eprintln!(
                "error: {failed} of {sent} messages were not acknowledged; first error: {error}"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(separator: Option<&str>) -> ProduceArgs {
        ProduceArgs {
            topic: "t".into(),
            key_separator: separator.map(str::to_owned),
            acks: Acks::Leader,
            partition: Some(2),
            broker: BrokerArg {
                broker: "x:1".into(),
            },
        }
    }

    /// Keys split at the first separator; lines without one are keyless; acks values.
    #[test]
    fn lines_become_records() {
        let record = record_for(&args(Some("::")), "user-1::hello::world");
        assert_eq!(record.key.as_deref(), Some(&b"user-1"[..]));
        assert_eq!(&record.value[..], b"hello::world");
        assert_eq!(record.partition, Some(2));
        let keyless = record_for(&args(Some("::")), "no separator");
        assert_eq!(keyless.key, None);
        assert_eq!(&keyless.value[..], b"no separator");
        assert_eq!(&record_for(&args(None), "a:b").value[..], b"a:b");
        assert!(matches!("all".parse::<Acks>(), Ok(Acks::All)));
        assert!(matches!("0".parse::<Acks>(), Ok(Acks::None)));
        assert!("2".parse::<Acks>().is_err());
    }
}
