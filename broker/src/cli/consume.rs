//! `sluice consume`: prints messages, one per line.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use client::{Consumer, ConsumerConfig, ConsumerRecord, Offset, TopicPartition};
use tokio::time::Instant;

use super::BrokerArg;

/// `sluice consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(long)]
    pub topic: String,
    /// Read only this partition (default: every partition).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Where to start: earliest, latest, an offset, or @TIMESTAMP_MS (the first message at or
    /// after that time).
    #[arg(long, default_value = "earliest", value_parser = parse_from)]
    pub from: Offset,
    /// Exit after printing this many messages.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Exit when nothing arrived for this long (ms). Default: wait forever.
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// Print each message's key (empty when it has none) before its value.
    #[arg(long)]
    pub print_key: bool,
    /// Print each message's offset first.
    #[arg(long)]
    pub print_offset: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: BrokerArg,
}

fn parse_from(text: &str) -> Result<Offset, String> {
    match text {
        "earliest" => Ok(Offset::Earliest),
        "latest" => Ok(Offset::Latest),
        _ => {
            if let Some(ms) = text.strip_prefix('@') {
                return ms
                    .parse()
                    .map(Offset::Timestamp)
                    .map_err(|_| format!("{ms:?} is not a timestamp in ms"));
            }
            text.parse().map(Offset::At).map_err(|_| {
                format!("{text:?} is not earliest, latest, an offset or @TIMESTAMP_MS")
            })
        }
    }
}

/// Longest single poll, so that the idle timeout is checked at least this often.
const POLL_MAX: Duration = Duration::from_secs(1);

/// Writes one message line: `[offset\t][key\t]value\n`, key and value as lossy UTF-8.
fn write_record(
    out: &mut impl Write,
    record: &ConsumerRecord<'_>,
    print_key: bool,
    print_offset: bool,
) -> std::io::Result<()> {
    if print_offset {
        write!(out, "{}\t", record.offset)?;
    }
    if print_key {
        let key = record.key.unwrap_or_default();
        write!(out, "{}\t", String::from_utf8_lossy(key))?;
    }
    out.write_all(String::from_utf8_lossy(record.value).as_bytes())?;
    out.write_all(b"\n")
}

pub(super) async fn run(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let mut consumer = Consumer::new(ConsumerConfig::new(&args.broker.broker))?;
    let partitions = match args.partition {
        Some(partition) => vec![TopicPartition::new(&args.topic, partition)],
        None => consumer
            .topic_partitions(&args.topic)
            .await
            .with_context(|| format!("finding the partitions of {:?}", args.topic))?,
    };
    consumer.assign(&partitions);
    for tp in &partitions {
        consumer.seek(tp, args.from)?;
    }
    let idle_timeout = args.idle_timeout_ms.map(Duration::from_millis);
    let mut last_data = Instant::now();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        if args.max_messages.is_some_and(|max| printed >= max) {
            break;
        }
        let wait = match idle_timeout {
            Some(idle) => {
                let left = idle.saturating_sub(last_data.elapsed());
                if left.is_zero() {
                    break;
                }
                left.min(POLL_MAX)
            }
            None => POLL_MAX,
        };
        let records = consumer.poll(wait).await.context("reading messages")?;
        if records.is_empty() {
            continue;
        }
        last_data = Instant::now();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut written = Ok(());
        for record in &records {
            if args.max_messages.is_some_and(|max| printed >= max) {
                break;
            }
            written = write_record(&mut out, &record, args.print_key, args.print_offset);
            if written.is_err() {
                break;
            }
            printed += 1;
        }
        let written = written.and_then(|()| out.flush());
        if let Err(error) = written {
            // A closed pipe (`| head`) is a normal way to stop reading.
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(error).context("writing to standard output");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every `--from` form, and the refusals.
    #[test]
    fn from_values() {
        assert_eq!(parse_from("earliest"), Ok(Offset::Earliest));
        assert_eq!(parse_from("latest"), Ok(Offset::Latest));
        assert_eq!(parse_from("42"), Ok(Offset::At(42)));
        assert_eq!(parse_from("@1000"), Ok(Offset::Timestamp(1000)));
        assert!(parse_from("@x").is_err());
        assert!(parse_from("-3").is_err());
    }
}
