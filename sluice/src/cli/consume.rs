//! `sluice consume`: prints messages, one per line, from chosen partitions or as a member of
//! a consumer group (`--group`).
//!
//! In a group the partitions come from the group's assignment, each starts at the group's
//! committed offset (`--from` only for partitions without one), and what was printed is
//! committed: periodically, when a partition is taken away, and at exit (`--max-messages`,
//! `--idle-timeout-ms`, SIGINT, SIGTERM, a closed pipe). See [`run_group`] for why the
//! committed offsets are exactly the printed ones.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use client::assignor::AssignorKind;
use client::{
    Consumer, ConsumerConfig, ConsumerRecord, Delivery, GroupConfig, Offset, RebalanceEvent,
    Records, TopicPartition,
};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use super::BrokerArg;

/// `sluice consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(long)]
    pub topic: String,
    /// Read only this partition (default: every partition).
    #[arg(long, conflicts_with = "group")]
    pub partition: Option<u32>,
    /// Where to start: earliest, latest, an offset, or @TIMESTAMP_MS (the first message at or
    /// after that time). With --group, only for partitions the group has no committed offset
    /// for.
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
    /// Print each message's offset before its key and value.
    #[arg(long)]
    pub print_offset: bool,
    /// Print each message's partition first. With every print flag a line is
    /// `partition<TAB>offset<TAB>key<TAB>value`.
    #[arg(long)]
    pub print_partition: bool,
    /// Most bytes of records in one fetch response (at least one batch is returned when there
    /// is one). A poll hands out at most one response per broker shard, so this bounds a
    /// poll: with `--delivery at-most-once`, what a crash can lose. Default: the client's
    /// (50 MiB).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub fetch_max_bytes: Option<u32>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub group: GroupArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: BrokerArg,
}

pub(super) fn parse_from(text: &str) -> Result<Offset, String> {
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

/// Consumer group membership flags of `sluice consume`.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// Consume as a member of this consumer group: partitions are assigned by the group and
    /// printed messages are committed as the group's offsets.
    #[arg(long)]
    pub group: Option<String>,
    /// Static membership: a stable id for this consumer; restarting within the session
    /// timeout keeps its partitions without a rebalance.
    #[arg(long, requires = "group")]
    pub instance_id: Option<String>,
    /// Leave the group (and give up its partitions) after this long without a heartbeat.
    /// Default 10000.
    #[arg(long, requires = "group")]
    pub session_timeout_ms: Option<u64>,
    /// Time between heartbeats. Default: a third of the session timeout, at most 3000.
    #[arg(long, requires = "group")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Partition assignment strategy: range, roundrobin or cooperative-sticky (default).
    #[arg(long, requires = "group", value_parser = parse_assignor)]
    pub assignor: Option<AssignorKind>,
    /// at-least-once (default): commit what was printed, after printing it;
    /// at-most-once: commit before printing (a crash loses the messages being printed).
    #[arg(long, requires = "group", value_enum)]
    pub delivery: Option<DeliveryArg>,
    /// Print one line per rebalance event to standard error: `assigned t:0,t:3`,
    /// `revoked t:1`, `lost t:2`.
    #[arg(long, requires = "group")]
    pub log_rebalances: bool,
}

/// `--delivery` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeliveryArg {
    /// Commit after printing: nothing printed is lost, a crash may print some again.
    AtLeastOnce,
    /// Commit before printing: nothing is printed twice, a crash may lose some.
    AtMostOnce,
}

/// Session timeout when `--session-timeout-ms` is not given.
const SESSION_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Largest default heartbeat interval (Kafka's default).
const HEARTBEAT_INTERVAL_MS_MAX_DEFAULT: u64 = 3_000;
/// How often printed positions are committed while consuming (Kafka's default).
const AUTO_COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// Client id the CLI's members show in `sluice group describe`.
const CLIENT_ID: &str = "sluice-consume";

fn parse_assignor(text: &str) -> Result<AssignorKind, String> {
    AssignorKind::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = AssignorKind::ALL.iter().map(|kind| kind.name()).collect();
        format!("{text:?} is not one of {}", names.join(", "))
    })
}

impl ConsumeArgs {
    /// The consumer settings of these flags, without a group.
    fn consumer_config(&self) -> ConsumerConfig {
        let defaults = ConsumerConfig::new(&self.broker.broker);
        ConsumerConfig {
            fetch_max_bytes: self.fetch_max_bytes.unwrap_or(defaults.fetch_max_bytes),
            ..defaults
        }
    }

    /// The checked group settings, or `None` without `--group`.
    pub fn group_config(&self) -> anyhow::Result<Option<GroupConfig>> {
        let Some(group_id) = &self.group.group else {
            return Ok(None);
        };
        if group_id.is_empty() {
            bail!("--group must not be empty");
        }
        let session_ms = self
            .group
            .session_timeout_ms
            .unwrap_or(SESSION_TIMEOUT_MS_DEFAULT);
        let heartbeat_ms = self
            .group
            .heartbeat_interval_ms
            .unwrap_or((session_ms / 3).min(HEARTBEAT_INTERVAL_MS_MAX_DEFAULT));
        if heartbeat_ms == 0 || heartbeat_ms >= session_ms {
            bail!(
                "--heartbeat-interval-ms ({heartbeat_ms}) must be at least 1 and below \
                 --session-timeout-ms ({session_ms})"
            );
        }
        let delivery = match self.group.delivery.unwrap_or(DeliveryArg::AtLeastOnce) {
            DeliveryArg::AtLeastOnce => Delivery::AtLeastOnce,
            DeliveryArg::AtMostOnce => Delivery::AtMostOnce,
        };
        let assignor = self
            .group
            .assignor
            .unwrap_or(AssignorKind::CooperativeSticky);
        Ok(Some(GroupConfig {
            instance_id: self.group.instance_id.clone(),
            client_id: CLIENT_ID.to_owned(),
            session_timeout: Duration::from_millis(session_ms),
            heartbeat_interval: Duration::from_millis(heartbeat_ms),
            assignors: vec![assignor],
            delivery,
            // The consumer's own commits (periodic, on revoke, at close) commit its positions,
            // which equal the printed positions at every poll boundary: see `run_group`.
            auto_commit: true,
            auto_commit_interval: AUTO_COMMIT_INTERVAL,
            auto_offset_reset: self.from,
            ..GroupConfig::new(group_id.clone())
        }))
    }
}

/// Longest single poll, so that the idle timeout and a stop signal are checked at least this
/// often.
const POLL_MAX: Duration = Duration::from_secs(1);

/// Which fields precede each value.
#[derive(Debug, Clone, Copy)]
struct PrintFlags {
    partition: bool,
    offset: bool,
    key: bool,
}

/// Writes one message line: `[partition\t][offset\t][key\t]value\n`, key and value as lossy
/// UTF-8.
fn write_record(
    out: &mut impl Write,
    record: &ConsumerRecord<'_>,
    flags: PrintFlags,
) -> std::io::Result<()> {
    if flags.partition {
        write!(out, "{}\t", record.partition)?;
    }
    if flags.offset {
        write!(out, "{}\t", record.offset)?;
    }
    if flags.key {
        let key = record.key.unwrap_or_default();
        write!(out, "{}\t", String::from_utf8_lossy(key))?;
    }
    out.write_all(String::from_utf8_lossy(record.value).as_bytes())?;
    out.write_all(b"\n")
}

pub(super) async fn run(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    if let Some(group) = args.group_config()? {
        return run_group(args, group).await;
    }
    let mut consumer = Consumer::new(args.consumer_config())?;
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
    // Without a group nothing is committed: where the loop stopped does not matter.
    let stopped = print_loop(&mut consumer, &args, None).await?;
    if let Some(error) = stopped.error {
        return Err(error);
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice consume --group`.
///
/// Commits are exactly what was printed and flushed to standard output. The consumer commits
/// its positions (the offset after the last record it handed out, per partition) inside
/// `poll`: periodically, and for the partitions a rebalance takes away, before they go. The
/// loop below prints and flushes every record of a poll before it polls again, so at each of
/// those moments the consumer's positions are the printed positions, and its own commits
/// (`Delivery::AtLeastOnce` with `auto_commit`) commit exactly what was printed, including
/// on revocation, which a commit of our own could not do (the rebalance callback is
/// synchronous and runs inside `poll`). The one place where positions run ahead of the
/// output is the last poll, when `--max-messages` stops in its middle or standard output
/// closes or fails: the partitions with unprinted records are sought back to their first
/// unprinted record before the final `commit_sync` and `close` (a write error is reported
/// after them). Stop signals are only acted on
/// between polls, never by cancelling one, so no poll's records are half taken.
///
/// With `Delivery::AtMostOnce` the consumer commits each poll's positions before handing the
/// records out; the final commit after a mid-poll stop moves the cut partitions back to their
/// first unprinted record, which prints nothing twice.
async fn run_group(args: ConsumeArgs, group: GroupConfig) -> anyhow::Result<ExitCode> {
    let group_id = group.group_id.clone();
    let mut consumer = Consumer::new(ConsumerConfig {
        group: Some(group),
        ..args.consumer_config()
    })?;
    if args.group.log_rebalances {
        consumer.on_rebalance(log_rebalance);
    }
    consumer
        .subscribe(&[args.topic.as_str()])
        .with_context(|| format!("subscribing to {:?}", args.topic))?;
    // Registered before the first poll (which joins the group), so that from here on a
    // signal never kills the process with printed messages uncommitted.
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let signals = tokio::spawn(async move {
        watch_signals(&mut interrupt, &mut terminate, &stop_flag).await;
    });
    let result = print_loop(&mut consumer, &args, Some(&stop)).await;
    signals.abort();
    let stopped = match result {
        Ok(stopped) => stopped,
        Err(error) => {
            // `poll` failed, which moves no position: positions equal the printed positions
            // (a poll boundary), so the commit of `close` on the way out is still right, but
            // the first error is the one to report.
            let _ = consumer.close().await;
            return Err(error);
        }
    };
    // Standard output failing mid-poll (a closed pipe, or another write error, which is
    // reported below) leaves positions past records that were not printed. Rather than
    // exiting without a commit (which would also skip LeaveGroup and leave the partitions
    // orphaned for the session timeout), the cut is carried out of `print_loop` in every
    // case and the partitions are sought back to it before the final commit and `close`:
    // nothing unprinted is ever committed.
    for (tp, offset) in &stopped.unprinted {
        consumer
            .seek(tp, Offset::At(*offset))
            .with_context(|| format!("moving {tp} back to the first unprinted message"))?;
    }
    // Explicit for both deliveries (`close` commits only at-least-once with auto-commit); it
    // waits for an automatic commit in flight, so the last commit to land is this one.
    let committed = consumer
        .commit_sync()
        .await
        .with_context(|| format!("committing the offsets of group {group_id:?}"));
    // Leave the group even when the commit failed, so that the partitions move at once.
    let closed = consumer
        .close()
        .await
        .with_context(|| format!("leaving group {group_id:?}"));
    if let Some(error) = stopped.error {
        return Err(error);
    }
    committed.and(closed)?;
    Ok(ExitCode::SUCCESS)
}

/// Sets `stop` at the first SIGINT or SIGTERM, so that the loop stops at the end of the
/// current poll and commits; a second signal exits at once (status 130) without committing.
async fn watch_signals(interrupt: &mut Signal, terminate: &mut Signal, stop: &AtomicBool) {
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    stop.store(true, Ordering::SeqCst);
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("interrupted again: exiting without committing");
    std::process::exit(130);
}

/// `--log-rebalances`: one line per event on standard error (unbuffered, so each line is out
/// before the consumer goes on).
fn log_rebalance(event: &RebalanceEvent) {
    let line = rebalance_line(event);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}

/// `assigned t:0,t:3`, `revoked t:1`, `lost t:2`: partitions sorted, `assigned` alone for an
/// empty list.
fn rebalance_line(event: &RebalanceEvent) -> String {
    let (what, partitions) = match event {
        RebalanceEvent::Assigned(partitions) => ("assigned", partitions),
        RebalanceEvent::Revoked(partitions) => ("revoked", partitions),
        RebalanceEvent::Lost(partitions) => ("lost", partitions),
    };
    let mut partitions: Vec<&TopicPartition> = partitions.iter().collect();
    partitions.sort();
    let list: Vec<String> = partitions
        .iter()
        .map(|tp| format!("{}:{}", tp.topic, tp.partition))
        .collect();
    if list.is_empty() {
        what.to_owned()
    } else {
        format!("{what} {}", list.join(","))
    }
}

/// Polls and prints until `--max-messages`, `--idle-timeout-ms`, `stop` or a closed standard
/// output. Returns, for the partitions of the last poll that has records left unprinted, the
/// offset of the first unprinted record (empty when the loop stopped at a poll boundary), and
/// the error of standard output if it failed otherwise than by closing. Fails only when
/// `poll` does (which moves no position: they are still the printed ones).
async fn print_loop(
    consumer: &mut Consumer,
    args: &ConsumeArgs,
    stop: Option<&AtomicBool>,
) -> anyhow::Result<Stopped> {
    let flags = PrintFlags {
        partition: args.print_partition,
        offset: args.print_offset,
        key: args.print_key,
    };
    let idle_timeout = args.idle_timeout_ms.map(Duration::from_millis);
    let mut last_data = Instant::now();
    let mut printed = 0u64;
    let at_most_once = args.group.delivery == Some(DeliveryArg::AtMostOnce);
    let stdout = std::io::stdout();
    loop {
        if args.max_messages.is_some_and(|max| printed >= max)
            || stop.is_some_and(|stop| stop.load(Ordering::SeqCst))
        {
            return Ok(Stopped::default());
        }
        let wait = match idle_timeout {
            Some(idle) => {
                let left = idle.saturating_sub(last_data.elapsed());
                if left.is_zero() {
                    return Ok(Stopped::default());
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
        let mut printed_now = 0usize;
        for record in &records {
            if args.max_messages.is_some_and(|max| printed >= max) {
                break;
            }
            written = write_record(&mut out, &record, flags);
            if written.is_err() {
                break;
            }
            printed += 1;
            printed_now += 1;
        }
        // The record whose write failed was handed to the writer (and maybe partly out).
        let handed = printed_now + usize::from(written.is_err());
        let written = written.and_then(|()| out.flush());
        if let Err(error) = written {
            // Which of this poll's lines got out is unknown (the writer may have passed some
            // on before failing). At least once, count none of them as printed: printed
            // again rather than lost. At most once, count every line handed to the writer as
            // printed: lost rather than printed twice. Records never handed to it are
            // unprinted either way, and are not committed (see `run_group`).
            let unprinted = first_unprinted(&records, if at_most_once { handed } else { 0 });
            // A closed pipe (`| head`) is a normal way to stop reading.
            let error = (error.kind() != std::io::ErrorKind::BrokenPipe)
                .then(|| anyhow::Error::new(error).context("writing to standard output"));
            return Ok(Stopped { unprinted, error });
        }
        if printed_now < records.len() {
            return Ok(Stopped {
                unprinted: first_unprinted(&records, printed_now),
                error: None,
            });
        }
    }
}

/// How [`print_loop`] ended.
#[derive(Debug, Default)]
struct Stopped {
    /// For the partitions of the last poll with records left unprinted, the offset of the
    /// first unprinted one (empty at a poll boundary).
    unprinted: Vec<(TopicPartition, u64)>,
    /// Standard output failed (otherwise than by closing): the error to exit with, once the
    /// printed offsets are committed.
    error: Option<anyhow::Error>,
}

/// Per partition with records after the first `printed` of `records`, the offset of its first
/// such record, sorted by partition.
fn first_unprinted(records: &Records, printed: usize) -> Vec<(TopicPartition, u64)> {
    let mut first: Vec<(TopicPartition, u64)> = Vec::new();
    for record in records.iter().skip(printed) {
        let seen = first
            .iter()
            .any(|(tp, _)| tp.partition == record.partition && tp.topic == record.topic);
        if !seen {
            first.push((
                TopicPartition::new(record.topic, record.partition),
                record.offset,
            ));
        }
    }
    first.sort();
    first
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

    /// Rebalance lines as `--log-rebalances` prints them: sorted, `topic:partition`, comma
    /// separated.
    #[test]
    fn rebalance_lines() {
        let tps = |list: &[(&str, u32)]| -> Vec<TopicPartition> {
            list.iter()
                .map(|&(t, p)| TopicPartition::new(t, p))
                .collect()
        };
        assert_eq!(
            rebalance_line(&RebalanceEvent::Assigned(tps(&[("t", 3), ("t", 0)]))),
            "assigned t:0,t:3"
        );
        assert_eq!(
            rebalance_line(&RebalanceEvent::Revoked(tps(&[("t", 1)]))),
            "revoked t:1"
        );
        assert_eq!(rebalance_line(&RebalanceEvent::Lost(Vec::new())), "lost");
    }
}
