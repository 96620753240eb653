//! The command line as a user runs it: `sluice topic ...`, `sluice produce` and
//! `sluice consume` as separate processes against a real `sluice serve`, checking exit codes,
//! standard output formats and error messages on standard error.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use client::partitioner::partition_for_key;
use common::Broker;

/// Longest a command may run before the test kills it and fails: a guard against a hang,
/// generous for a loaded machine (every command here ends in well under a second normally).
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `sluice ARGS --broker ADDR`, feeding `stdin` if given, and waits for it (at most
/// [`COMMAND_DEADLINE`]: then it is killed and the test fails with its standard error).
fn sluice(broker: &Broker, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .args(["--broker", &broker.addr.to_string()])
        .env_remove("SLUICE_BROKER")
        .env("RUST_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
        // Dropping the pipe closes it: end of input.
    }
    // Read on threads, so that a full pipe never blocks the child while the test waits.
    let read_to_end = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).unwrap();
            bytes
        })
    };
    let stdout = read_to_end(Box::new(child.stdout.take().unwrap()));
    let stderr = read_to_end(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + COMMAND_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap();
            panic!(
                "sluice {args:?} still running after {COMMAND_DEADLINE:?}; standard error:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts exit status 0, showing stderr otherwise.
fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {:?}\nstderr: {}",
        output.status,
        stderr(output)
    );
}

fn topic_names(broker: &Broker) -> Vec<String> {
    let output = sluice(broker, &["topic", "list"], None);
    assert_success(&output, "topic list");
    stdout(&output).lines().map(str::to_owned).collect()
}

/// The whole life of a topic through the CLI. `topic create` exits 0 and the topic shows in
/// `topic list` and in `topic describe` with its 3 partitions; a second create fails with the
/// reason on stderr. `produce --key-separator : --acks all` sends each stdin line (key before
/// the first `:`, lines without one keyless) and exits 0. `consume --from earliest
/// --max-messages N --print-key --print-offset` prints exactly the N lines as
/// `offset<TAB>key<TAB>value`, keyed lines at the offsets their key's partition gives them and
/// each partition in offset order; `--max-messages 2` stops after 2 lines; `describe` then
/// shows the log end offsets. `topic delete` exits 0 and the topic leaves `topic list`.
#[test]
fn topic_produce_consume_delete() {
    let broker = Broker::start(&[]);
    let output = sluice(
        &broker,
        &["topic", "create", "cli-orders", "--partitions", "3"],
        None,
    );
    assert_success(&output, "topic create");
    assert_eq!(stdout(&output).trim(), "created topic cli-orders");
    assert_eq!(topic_names(&broker), vec!["cli-orders"]);

    let output = sluice(&broker, &["topic", "describe", "cli-orders"], None);
    assert_success(&output, "topic describe");
    let text = stdout(&output);
    assert!(text.contains("topic:              cli-orders"), "{text}");
    assert!(text.contains("partitions:         3"), "{text}");

    let again = sluice(&broker, &["topic", "create", "cli-orders"], None);
    assert!(
        !again.status.success(),
        "creating an existing topic must fail"
    );
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    // Keyed lines first; the one keyless line last, so keyed offsets do not depend on where
    // the keyless one goes.
    let mut lines: Vec<(Option<String>, String)> = Vec::new();
    for i in 0..30 {
        lines.push((Some(format!("user-{}", i % 7)), format!("event {i}")));
    }
    lines.push((Some("k".into()), "value:with:colons".into()));
    let mut input: String = lines
        .iter()
        .map(|(key, value)| format!("{}:{value}\n", key.as_deref().unwrap()))
        .collect();
    input.push_str("no separator here\n");
    let output = sluice(
        &broker,
        &[
            "produce",
            "--topic",
            "cli-orders",
            "--key-separator",
            ":",
            "--acks",
            "all",
        ],
        Some(&input),
    );
    assert_success(&output, "produce");
    let total = lines.len() + 1;

    let mut next_offset: HashMap<u32, u64> = HashMap::new();
    let mut expected: Vec<String> = Vec::new();
    let mut expected_partition: HashMap<String, u32> = HashMap::new();
    for (key, value) in &lines {
        let key = key.as_deref().unwrap();
        let partition = partition_for_key(key.as_bytes(), 3);
        let offset = next_offset.entry(partition).or_default();
        let line = format!("{offset}\t{key}\t{value}");
        expected_partition.insert(line.clone(), partition);
        expected.push(line);
        *offset += 1;
    }

    let output = sluice(
        &broker,
        &[
            "consume",
            "--topic",
            "cli-orders",
            "--from",
            "earliest",
            "--max-messages",
            &total.to_string(),
            "--print-key",
            "--print-offset",
        ],
        None,
    );
    assert_success(&output, "consume");
    let printed = stdout(&output);
    let printed: Vec<&str> = printed.lines().collect();
    assert_eq!(printed.len(), total, "{printed:#?}");
    let (keyless, keyed): (Vec<&str>, Vec<&str>) = printed
        .iter()
        .partition(|l| l.ends_with("\t\tno separator here"));
    let mut keyed_sorted: Vec<&str> = keyed.clone();
    keyed_sorted.sort();
    let mut expected_sorted: Vec<&str> = expected.iter().map(String::as_str).collect();
    expected_sorted.sort();
    assert_eq!(keyed_sorted, expected_sorted);
    // The keyless line, with an empty key, at the end of whichever partition got it.
    assert_eq!(keyless.len(), 1, "{printed:#?}");
    let keyless_offset: u64 = keyless[0].split('\t').next().unwrap().parse().unwrap();
    assert!(
        (0..3).any(|p| next_offset.get(&p).copied().unwrap_or(0) == keyless_offset),
        "{}",
        keyless[0]
    );
    // Each partition's lines come out in offset order.
    let mut last: HashMap<u32, u64> = HashMap::new();
    for line in &keyed {
        let partition = expected_partition[*line];
        let offset: u64 = line.split('\t').next().unwrap().parse().unwrap();
        if let Some(previous) = last.insert(partition, offset) {
            assert!(
                previous < offset,
                "partition {partition}: {line} after {previous}"
            );
        }
    }

    let output = sluice(
        &broker,
        &["consume", "--topic", "cli-orders", "--max-messages", "2"],
        None,
    );
    assert_success(&output, "consume --max-messages 2");
    assert_eq!(stdout(&output).lines().count(), 2);

    let output = sluice(&broker, &["topic", "describe", "cli-orders"], None);
    assert_success(&output, "topic describe");
    let text = stdout(&output);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.starts_with("partition "))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    let log_end: u64 = rows.iter().map(|r| r[7].parse::<u64>().unwrap()).sum();
    assert_eq!(log_end, total as u64, "{text}");

    let output = sluice(&broker, &["topic", "delete", "cli-orders"], None);
    assert_success(&output, "topic delete");
    assert_eq!(stdout(&output).trim(), "deleted topic cli-orders");
    assert!(topic_names(&broker).is_empty());
}

/// `consume --from @T` prints exactly the messages produced at or after `T` (ms since the
/// epoch), in each partition: both partitions hold old messages followed by one new one, so
/// a partition started before `T` would print an old message among the two printed
/// (`--max-messages 2`, then exit 0).
#[test]
fn consume_from_a_timestamp() {
    let broker = Broker::start(&[]);
    let output = sluice(
        &broker,
        &["topic", "create", "cli-time", "--partitions", "2"],
        None,
    );
    assert_success(&output, "topic create");
    let produce = |input: &str| {
        let args = ["produce", "--topic", "cli-time", "--key-separator", ":"];
        let output = sluice(&broker, &args, Some(input));
        assert_success(&output, "produce");
    };
    // A key for each partition, so that each holds old messages, then a new one.
    let keys: Vec<String> = (0..2u32)
        .map(|partition| {
            (0..)
                .map(|i| format!("k{i}"))
                .find(|key| partition_for_key(key.as_bytes(), 2) == partition)
                .unwrap()
        })
        .collect();
    let (k0, k1) = (&keys[0], &keys[1]);
    produce(&format!("{k0}:old 1\n{k1}:old 2\n{k0}:old 3\n{k1}:old 4\n"));
    // Every old message is stamped before `from`, every new one at or after it.
    let from = common::now_ms() + 1;
    while common::now_ms() < from {
        std::thread::sleep(Duration::from_millis(1));
    }
    produce(&format!("{k0}:new 1\n{k1}:new 2\n"));

    let output = sluice(
        &broker,
        &[
            "consume",
            "--topic",
            "cli-time",
            "--from",
            &format!("@{from}"),
            "--max-messages",
            "2",
            // Only a guard: the two messages normally arrive at once.
            "--idle-timeout-ms",
            "30000",
        ],
        None,
    );
    assert_success(&output, "consume --from @T");
    let mut printed: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    printed.sort();
    assert_eq!(printed, vec!["new 1", "new 2"]);
}

/// With nothing to read, `consume --idle-timeout-ms 500` exits 0, not before 500 ms, and
/// prints nothing.
#[test]
fn idle_timeout_exits_cleanly() {
    let broker = Broker::start(&[]);
    let output = sluice(&broker, &["topic", "create", "cli-quiet"], None);
    assert_success(&output, "topic create");
    let started = Instant::now();
    let output = sluice(
        &broker,
        &[
            "consume",
            "--topic",
            "cli-quiet",
            "--from",
            "latest",
            "--idle-timeout-ms",
            "500",
        ],
        None,
    );
    let took = started.elapsed();
    assert_success(&output, "consume --idle-timeout-ms");
    assert_eq!(stdout(&output), "");
    assert!(took >= Duration::from_millis(500), "exited after {took:?}");
    // No upper bound: starting and connecting may take long on a loaded machine, and
    // `sluice` fails the test on a hang (COMMAND_DEADLINE).
}

/// Unknown topics are errors a user sees: `produce` exits non-zero saying how many messages
/// were not acknowledged and why; `consume` exits non-zero naming the topic; neither hangs.
#[test]
fn unknown_topic_is_an_error() {
    let broker = Broker::start(&[]);
    let output = sluice(
        &broker,
        &["produce", "--topic", "nowhere", "--acks", "all"],
        Some("a\nb\n"),
    );
    assert!(!output.status.success(), "produce to an unknown topic");
    let message = stderr(&output);
    assert!(
        message.contains("2 of 2 messages were not acknowledged"),
        "{message}"
    );
    assert!(message.contains("unknown topic \"nowhere\""), "{message}");

    let output = sluice(
        &broker,
        &["consume", "--topic", "nowhere", "--idle-timeout-ms", "500"],
        None,
    );
    assert!(!output.status.success(), "consume from an unknown topic");
    assert!(stderr(&output).contains("nowhere"), "{}", stderr(&output));
    assert_eq!(stdout(&output), "");

    let output = sluice(&broker, &["topic", "delete", "nowhere"], None);
    assert!(!output.status.success(), "deleting an unknown topic");
    assert!(stderr(&output).contains("nowhere"), "{}", stderr(&output));
}

/// The rows of `topic describe`'s partition table, split on whitespace (header excluded).
fn partition_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip_while(|l| !l.starts_with("partition "))
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// `topic describe` on one node: per partition the broker leads (its id, as `cluster status`
/// and the metadata give it), with a leader epoch, the one replica and the one in-sync
/// replica being the leader, status `ok`, and `under-replicated: 0`.
#[test]
fn topic_describe_shows_replicas_isr_and_epochs() {
    let broker = Broker::start(&[]);
    let output = sluice(
        &broker,
        &["topic", "create", "described", "--partitions", "2"],
        None,
    );
    assert_success(&output, "topic create");
    let output = sluice(&broker, &["topic", "describe", "described"], None);
    assert_success(&output, "topic describe");
    let text = stdout(&output);
    assert!(text.contains("under-replicated:   0"), "{text}");
    let header: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("partition "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "partition",
            "leader",
            "epoch",
            "shard",
            "replicas",
            "isr",
            "log-start",
            "log-end",
            "status"
        ]
    );
    let rows = partition_rows(&text);
    assert_eq!(rows.len(), 2, "{text}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let metadata = runtime
        .block_on(
            client::Admin::new(broker.addr.to_string())
                .unwrap()
                .describe_topic("described"),
        )
        .unwrap();
    for (row, partition) in rows.iter().zip(&metadata.partitions) {
        let leader = partition.leader.unwrap().to_string();
        assert_eq!(row[0], partition.partition.to_string(), "{text}");
        assert_eq!(row[1], leader, "{text}");
        assert_eq!(row[2], partition.leader_epoch.to_string(), "{text}");
        assert_eq!(row[4], leader, "the one replica is the leader: {text}");
        assert_eq!(row[5], leader, "in sync: {text}");
        assert_eq!(row[8], "ok", "{text}");
    }
}

/// `topic create --replication-factor 0` and a `--min-insync-replicas` above the factor are
/// refused before anything is sent, with the reason on stderr.
#[test]
fn replication_flags_are_checked() {
    let broker = Broker::start(&[]);
    for (args, reason) in [
        (&["--replication-factor", "0"][..], "--replication-factor"),
        (
            &["--replication-factor", "1", "--min-insync-replicas", "2"][..],
            "exceeds --replication-factor",
        ),
    ] {
        let mut argv = vec!["topic", "create", "refused"];
        argv.extend_from_slice(args);
        let output = sluice(&broker, &argv, None);
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr(&output).contains(reason), "{}", stderr(&output));
    }
    assert!(topic_names(&broker).is_empty());
}

/// `cluster status` on one node: one live broker, which is also the controller leader and
/// the only voter; nothing under-replicated or offline. (Needs the broker's DescribeCluster.)
#[test]
fn cluster_status_shows_the_one_broker_as_controller() {
    let broker = Broker::start(&[]);
    let output = sluice(&broker, &["cluster", "status"], None);
    assert_success(&output, "cluster status");
    let text = stdout(&output);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.starts_with("BROKER"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 1, "{text}");
    let id = rows[0][0];
    assert_eq!(rows[0][1], "live,controller", "{text}");
    assert!(
        rows[0][3].contains(&broker.addr.port().to_string()),
        "the broker's endpoints include its listener: {text}"
    );
    let controller = text
        .lines()
        .find_map(|l| l.strip_prefix("controller:"))
        .unwrap()
        .trim();
    assert!(controller.starts_with(&format!("{id} (term ")), "{text}");
    let voters = text
        .lines()
        .find_map(|l| l.strip_prefix("voters:"))
        .unwrap()
        .trim();
    assert!(voters.starts_with(&format!("{id}@")), "{text}");
    assert_eq!(voters.split_whitespace().count(), 1, "{text}");
    assert!(text.contains("under-replicated: 0"), "{text}");
    assert!(text.contains("offline:          0"), "{text}");
}

/// `topic add-partitions` grows a topic from 2 to 5 partitions: the help text warns that key
/// routing changes; describe shows 5 partitions, the old ones keep their messages; the new
/// ones take messages (`produce --partition 4`) that `consume` reads back; shrinking is
/// refused. (Needs the broker's CreatePartitions.)
#[test]
fn add_partitions_grows_a_topic() {
    let broker = Broker::start(&[]);
    let help = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["topic", "add-partitions", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("Keys hash over the new"), "{help}");
    let output = sluice(
        &broker,
        &["topic", "create", "growing", "--partitions", "2"],
        None,
    );
    assert_success(&output, "topic create");
    let output = sluice(
        &broker,
        &[
            "produce",
            "--topic",
            "growing",
            "--partition",
            "1",
            "--acks",
            "all",
        ],
        Some("old\n"),
    );
    assert_success(&output, "produce before");

    let output = sluice(
        &broker,
        &["topic", "add-partitions", "growing", "--total", "5"],
        None,
    );
    assert_success(&output, "topic add-partitions");
    assert!(
        stdout(&output).contains("now has 5 partitions"),
        "{}",
        stdout(&output)
    );
    let output = sluice(&broker, &["topic", "describe", "growing"], None);
    assert_success(&output, "topic describe");
    let text = stdout(&output);
    assert!(text.contains("partitions:         5"), "{text}");
    let rows = partition_rows(&text);
    let log_ends: Vec<&str> = rows.iter().map(|r| r[7].as_str()).collect();
    assert_eq!(log_ends, ["0", "1", "0", "0", "0"], "{text}");

    let output = sluice(
        &broker,
        &[
            "produce",
            "--topic",
            "growing",
            "--partition",
            "4",
            "--acks",
            "all",
        ],
        Some("new\n"),
    );
    assert_success(&output, "produce to a new partition");
    let output = sluice(
        &broker,
        &[
            "consume",
            "--topic",
            "growing",
            "--partition",
            "4",
            "--max-messages",
            "1",
            "--idle-timeout-ms",
            "10000",
        ],
        None,
    );
    assert_success(&output, "consume a new partition");
    assert_eq!(stdout(&output).trim(), "new");

    let output = sluice(
        &broker,
        &["topic", "add-partitions", "growing", "--total", "3"],
        None,
    );
    assert!(!output.status.success(), "shrinking must be refused");
}

/// `cluster decommission` on one node: draining the only broker is refused (no other broker
/// can take its replicas), moving nothing, with the reason on stderr, `--dry-run` or not; an
/// unknown broker id is refused naming the registered ones. (Needs the broker's
/// DescribeCluster.)
#[test]
fn decommission_of_the_only_broker_is_refused() {
    let broker = Broker::start(&[]);
    let output = sluice(
        &broker,
        &["topic", "create", "kept", "--partitions", "2"],
        None,
    );
    assert_success(&output, "topic create");
    let output = sluice(&broker, &["cluster", "status"], None);
    assert_success(&output, "cluster status");
    let text = stdout(&output);
    let id = text
        .lines()
        .skip_while(|l| !l.starts_with("BROKER"))
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    for dry_run in [true, false] {
        let mut args = vec!["cluster", "decommission", "--broker-id", id.as_str()];
        if dry_run {
            args.push("--dry-run");
        }
        let output = sluice(&broker, &args, None);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            stderr(&output).contains("add a broker first"),
            "{}",
            stderr(&output)
        );
    }
    let output = sluice(
        &broker,
        &["cluster", "decommission", "--broker-id", "9999"],
        None,
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("broker 9999 is not registered"),
        "{}",
        stderr(&output)
    );
    let output = sluice(&broker, &["topic", "describe", "kept"], None);
    let rows = partition_rows(&stdout(&output));
    assert!(rows.iter().all(|r| r[4] == id), "nothing moved");
}
