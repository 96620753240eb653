//! Encodes a [`NodeSnapshot`] in the Prometheus text format (0.0.4) through the
//! `prometheus-client` crate: the snapshot is wrapped in a [`Collector`] registered in a fresh
//! registry per scrape, and the crate writes every line (names, escaping, `_total` and
//! histogram suffixes). Called by the metrics thread; [`METRICS`] lists what is exported.

use std::collections::HashMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue};
use prometheus_client::encoding::{MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::snapshot::{NodeSnapshot, ShardReport, ShardSnapshot};
use crate::probe::HistogramSnapshot;

/// Every exported metric: name (as written, after the crate's `_total` suffix for counters),
/// labels, meaning. The README's table is this list.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        "sluice_node_ready",
        "",
        "1 while the node serves and is not shutting down",
    ),
    (
        "sluice_shard_up",
        "shard",
        "1 when the shard answered this scrape in time",
    ),
    (
        "sluice_produce_requests_total",
        "shard",
        "produce requests received",
    ),
    (
        "sluice_produce_bytes_total",
        "shard",
        "record-batch bytes in produce requests",
    ),
    (
        "sluice_fetch_requests_total",
        "shard",
        "fetch requests received",
    ),
    (
        "sluice_fetch_bytes_total",
        "shard",
        "record-batch bytes in fetch responses",
    ),
    (
        "sluice_produce_latency_seconds",
        "shard",
        "histogram: produce request to response",
    ),
    (
        "sluice_fetch_latency_seconds",
        "shard",
        "histogram: fetch request to response",
    ),
    (
        "sluice_fsync_latency_seconds",
        "shard",
        "histogram: fdatasync of the shard's logs",
    ),
    (
        "sluice_appended_batches_total",
        "shard",
        "batches appended to the shard's logs",
    ),
    (
        "sluice_appended_bytes_total",
        "shard",
        "bytes of those batches",
    ),
    ("sluice_connections", "shard", "client connections open"),
    (
        "sluice_connections_accepted_total",
        "shard",
        "client connections accepted",
    ),
    (
        "sluice_requests_in_flight",
        "shard",
        "requests being handled",
    ),
    (
        "sluice_shard_inbox_messages",
        "shard",
        "work items waiting in the shard's inbox",
    ),
    (
        "sluice_shard_inbox_bytes",
        "shard",
        "payload bytes they hold of the inbox budget",
    ),
    (
        "sluice_tail_cache_bytes",
        "shard",
        "tail-cache memory the shard's logs hold",
    ),
    (
        "sluice_tail_cache_budget_bytes",
        "shard",
        "the shard's tail-cache budget",
    ),
    (
        "sluice_read_ahead_bytes",
        "shard",
        "disk reads ahead of sequential readers, in flight or waiting",
    ),
    (
        "sluice_read_ahead_hits_total",
        "shard",
        "disk reads served from bytes read ahead",
    ),
    (
        "sluice_partition_log_start_offset",
        "topic, partition",
        "first offset in the log",
    ),
    (
        "sluice_partition_log_end_offset",
        "topic, partition",
        "offset of the next record",
    ),
    (
        "sluice_partition_high_watermark",
        "topic, partition",
        "offsets below are readable",
    ),
    (
        "sluice_group_committed_offset",
        "group, topic, partition",
        "the group's committed offset",
    ),
    (
        "sluice_group_lag",
        "group, topic, partition",
        "log end offset minus committed offset",
    ),
];

/// The Prometheus text of one scrape (`ready`: whether the node serves).
pub fn encode_text(snapshot: NodeSnapshot, ready: bool) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(NodeCollector { snapshot, ready }));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

/// Reads a per-shard counter out of a shard's snapshot.
type ReadCounter = fn(&ShardSnapshot) -> u64;
/// Reads a per-shard histogram out of a shard's snapshot.
type ReadHistogram = fn(&ShardSnapshot) -> &HistogramSnapshot;
/// Reads a per-shard gauge out of a shard's report (`None`: no sample for that shard).
type ReadGauge = fn(&ShardReport) -> Option<u64>;

/// A scrape's snapshot, encoded when the registry asks.
#[derive(Debug)]
struct NodeCollector {
    snapshot: NodeSnapshot,
    ready: bool,
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shards = &self.snapshot.shards;
        encoder
            .encode_descriptor(
                "sluice_node_ready",
                "1 while the node serves and is not shutting down",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&u64::from(self.ready))?;
        let net = &self.snapshot.net;
        encoder
            .encode_descriptor(
                "sluice_connections_refused",
                "Connections refused by --max-connections since start",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<prometheus_client::encoding::NoLabelSet, u64, f64>(
                &net.connections_refused,
                None,
            )?;
        for (name, help, value) in [
            (
                "sluice_receive_buffer_bytes",
                "Receive-buffer bytes grown beyond the connections' first buffers (memory budget in use)",
                net.receive_buffer_bytes,
            ),
            (
                "sluice_request_bytes_in_flight",
                "Request bytes charged to requests not yet answered (memory budget in use)",
                net.request_bytes_in_flight,
            ),
        ] {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&value)?;
        }
        shard_gauge(
            &mut encoder,
            "sluice_shard_up",
            "1 when the shard answered this scrape in time",
            shards,
            |report| Some(u64::from(report.snapshot.is_some())),
        )?;
        let counters: [(&str, &str, ReadCounter); 8] = [
            (
                "sluice_produce_requests",
                "Produce requests received on the shard's connections",
                |s| s.probe.produce_requests,
            ),
            (
                "sluice_produce_bytes",
                "Record-batch bytes of the produce requests received",
                |s| s.probe.produce_bytes,
            ),
            (
                "sluice_fetch_requests",
                "Fetch requests received on the shard's connections",
                |s| s.probe.fetch_requests,
            ),
            (
                "sluice_fetch_bytes",
                "Record-batch bytes of the fetch responses sent",
                |s| s.probe.fetch_bytes,
            ),
            (
                "sluice_appended_batches",
                "Record batches appended to the shard's logs",
                |s| s.probe.appended_batches,
            ),
            (
                "sluice_appended_bytes",
                "Bytes of the record batches appended to the shard's logs",
                |s| s.probe.appended_bytes,
            ),
            (
                "sluice_connections_accepted",
                "Client connections the shard accepted",
                |s| s.probe.connections_accepted,
            ),
            (
                "sluice_read_ahead_hits",
                "Disk reads of the shard's logs served from bytes read ahead (a consumer or \
                 follower catching up from disk)",
                |s| s.read_ahead_hits,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for report in shards {
                if let Some(snapshot) = &report.snapshot {
                    encode_counter(&mut family, &shard_label(report), &value(snapshot))?;
                }
            }
        }
        let histograms: [(&str, &str, ReadHistogram); 3] = [
            (
                "sluice_produce_latency_seconds",
                "Produce requests, from decoded to response ready (acks and fsync waits included)",
                |s| &s.probe.produce_latency,
            ),
            (
                "sluice_fetch_latency_seconds",
                "Fetch requests, from decoded to response ready (long polls included)",
                |s| &s.probe.fetch_latency,
            ),
            (
                "sluice_fsync_latency_seconds",
                "fdatasync of the shard's logs (one per group commit)",
                |s| &s.probe.fsync_latency,
            ),
        ];
        for (name, help, histogram) in histograms {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for report in shards {
                if let Some(snapshot) = &report.snapshot {
                    let histogram = histogram(snapshot);
                    family
                        .encode_family(&shard_label(report))?
                        .encode_histogram::<NoLabelSet>(
                            histogram.sum_seconds(),
                            histogram.count,
                            &histogram.buckets_seconds(),
                            None,
                        )?;
                }
            }
        }
        let gauges: [(&str, &str, ReadGauge); 7] = [
            (
                "sluice_connections",
                "Client connections open on the shard",
                |r| r.snapshot.as_ref().map(|s| s.probe.connections_open),
            ),
            (
                "sluice_requests_in_flight",
                "Requests being handled on the shard",
                |r| r.snapshot.as_ref().map(|s| s.requests_in_flight),
            ),
            (
                "sluice_shard_inbox_messages",
                "Work items waiting in the shard's inbox",
                |r| r.inbox.map(|i| i.messages as u64),
            ),
            (
                "sluice_shard_inbox_bytes",
                "Payload bytes the waiting work items hold of the inbox's budget",
                |r| r.inbox.map(|i| i.payload_bytes as u64),
            ),
            (
                "sluice_tail_cache_bytes",
                "Tail-cache memory the shard's logs hold (the shard's memory budget in use)",
                |r| r.snapshot.as_ref().map(|s| s.tail_cache_bytes),
            ),
            (
                "sluice_tail_cache_budget_bytes",
                "The shard's tail-cache memory budget",
                |r| r.snapshot.as_ref().map(|s| s.tail_cache_budget_bytes),
            ),
            (
                "sluice_read_ahead_bytes",
                "Bytes the shard's logs read ahead for sequential disk readers, in flight or \
                 waiting for their reader (at most a quarter of the tail-cache budget)",
                |r| r.snapshot.as_ref().map(|s| s.read_ahead_bytes),
            ),
        ];
        for (name, help, value) in gauges {
            shard_gauge(&mut encoder, name, help, shards, value)?;
        }
        encode_partitions(&mut encoder, shards)?;
        encode_groups(&mut encoder, shards)
    }
}

/// Log start, log end and high watermark of every partition.
fn encode_partitions(
    encoder: &mut DescriptorEncoder,
    shards: &[ShardReport],
) -> Result<(), std::fmt::Error> {
    type Offset = fn(&super::snapshot::PartitionSnapshot) -> u64;
    let offsets: [(&str, &str, Offset); 3] = [
        (
            "sluice_partition_log_start_offset",
            "First offset still in the partition's log",
            |p| p.log_start_offset,
        ),
        (
            "sluice_partition_log_end_offset",
            "Offset the partition's next record gets",
            |p| p.log_end_offset,
        ),
        (
            "sluice_partition_high_watermark",
            "Offsets below it are visible to consumers",
            |p| p.high_watermark,
        ),
    ];
    for (name, help, value) in offsets {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for snapshot in shards.iter().filter_map(|r| r.snapshot.as_ref()) {
            for partition in &snapshot.partitions {
                let labels = [
                    ("topic", partition.topic.clone()),
                    ("partition", partition.partition.to_string()),
                ];
                encode_gauge(&mut family, &labels, &value(partition))?;
            }
        }
    }
    Ok(())
}

/// Committed offset and lag (log end minus committed, at least 0) of every group partition.
/// The coordinator and the partition's owner are often different shards: the scrape joins
/// their snapshots here.
fn encode_groups(
    encoder: &mut DescriptorEncoder,
    shards: &[ShardReport],
) -> Result<(), std::fmt::Error> {
    let snapshots: Vec<&ShardSnapshot> =
        shards.iter().filter_map(|r| r.snapshot.as_ref()).collect();
    let log_ends: HashMap<(&str, u32), u64> = snapshots
        .iter()
        .flat_map(|s| s.partitions.iter())
        .map(|p| ((p.topic.as_str(), p.partition), p.log_end_offset))
        .collect();
    let committed: Vec<_> = snapshots.iter().flat_map(|s| s.committed.iter()).collect();
    let labels_of = |c: &super::snapshot::CommittedSnapshot| {
        [
            ("group", c.group.clone()),
            ("topic", c.topic.clone()),
            ("partition", c.partition.to_string()),
        ]
    };
    let mut family = encoder.encode_descriptor(
        "sluice_group_committed_offset",
        "The next offset the group consumes (its committed offset)",
        None,
        MetricType::Gauge,
    )?;
    for entry in &committed {
        encode_gauge(&mut family, &labels_of(entry), &entry.offset)?;
    }
    let mut family = encoder.encode_descriptor(
        "sluice_group_lag",
        "Records between the group's committed offset and the partition's log end",
        None,
        MetricType::Gauge,
    )?;
    for entry in &committed {
        if let Some(log_end) = log_ends.get(&(entry.topic.as_str(), entry.partition)) {
            let lag = log_end.saturating_sub(entry.offset);
            encode_gauge(&mut family, &labels_of(entry), &lag)?;
        }
    }
    Ok(())
}

fn shard_label(report: &ShardReport) -> [(&'static str, String); 1] {
    [("shard", report.shard.to_string())]
}

/// A gauge with one sample per shard that has a value.
fn shard_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    shards: &[ShardReport],
    value: impl Fn(&ShardReport) -> Option<u64>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for report in shards {
        if let Some(value) = value(report) {
            encode_gauge(&mut family, &shard_label(report), &value)?;
        }
    }
    Ok(())
}

fn encode_counter<const N: usize>(
    family: &mut MetricEncoder,
    labels: &[(&'static str, String); N],
    value: &impl EncodeCounterValue,
) -> Result<(), std::fmt::Error> {
    family
        .encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(value, None)
}

fn encode_gauge<const N: usize>(
    family: &mut MetricEncoder,
    labels: &[(&'static str, String); N],
    value: &impl EncodeGaugeValue,
) -> Result<(), std::fmt::Error> {
    family.encode_family(labels)?.encode_gauge(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::metrics::snapshot::{CommittedSnapshot, PartitionSnapshot};
    use crate::shard::bus::InboxDepth;

    /// A snapshot of two shards: shard 1 owns the partition, shard 0 coordinates the group
    /// that committed on it; a third shard did not answer.
    fn two_shards() -> NodeSnapshot {
        let mut owner = ShardSnapshot::default();
        owner.probe.produce_requests = 3;
        let latency = crate::probe::LatencyHistogram::default();
        for took_ms in [1, 2, 20_000] {
            latency.observe(std::time::Duration::from_millis(took_ms));
        }
        owner.probe.produce_latency = latency.snapshot();
        owner.partitions.push(PartitionSnapshot {
            topic: "orders".into(),
            partition: 2,
            log_start_offset: 4,
            log_end_offset: 10,
            high_watermark: 9,
        });
        let mut coordinator = ShardSnapshot::default();
        coordinator.committed.push(CommittedSnapshot {
            group: "billing".into(),
            topic: "orders".into(),
            partition: 2,
            offset: 7,
        });
        let inbox = Some(InboxDepth {
            messages: 1,
            payload_bytes: 64,
        });
        NodeSnapshot {
            net: Default::default(),
            shards: vec![
                ShardReport {
                    shard: 0,
                    snapshot: Some(coordinator),
                    inbox,
                },
                ShardReport {
                    shard: 1,
                    snapshot: Some(owner),
                    inbox: None,
                },
                ShardReport {
                    shard: 2,
                    snapshot: None,
                    inbox,
                },
            ],
        }
    }

    /// The value of the one line that starts with `series ` (name and labels as written).
    fn sample(text: &str, series: &str) -> Option<String> {
        let prefix = format!("{series} ");
        let mut found = text
            .lines()
            .filter_map(|line| line.strip_prefix(prefix.as_str()));
        let value = found.next().map(str::to_owned);
        assert!(found.next().is_none(), "{series} appears twice");
        value
    }

    /// Counters get `_total`, the lag joins the coordinator's commit with the owner's log end,
    /// a shard that did not answer is down and has no counters, histograms have their buckets.
    #[test]
    fn snapshot_encodes_as_prometheus_text() {
        let text = encode_text(two_shards(), true).unwrap();
        assert_eq!(sample(&text, "sluice_node_ready").as_deref(), Some("1"));
        assert_eq!(
            sample(&text, r#"sluice_produce_requests_total{shard="1"}"#).as_deref(),
            Some("3")
        );
        assert_eq!(
            sample(&text, r#"sluice_produce_requests_total{shard="2"}"#),
            None
        );
        assert_eq!(
            sample(&text, r#"sluice_shard_up{shard="2"}"#).as_deref(),
            Some("0")
        );
        assert_eq!(
            sample(&text, r#"sluice_shard_up{shard="0"}"#).as_deref(),
            Some("1")
        );
        assert_eq!(
            sample(&text, r#"sluice_shard_inbox_bytes{shard="2"}"#).as_deref(),
            Some("64")
        );
        assert_eq!(
            sample(
                &text,
                r#"sluice_partition_log_start_offset{topic="orders",partition="2"}"#
            )
            .as_deref(),
            Some("4")
        );
        assert_eq!(
            sample(
                &text,
                r#"sluice_partition_high_watermark{topic="orders",partition="2"}"#
            )
            .as_deref(),
            Some("9")
        );
        assert_eq!(
            sample(
                &text,
                r#"sluice_group_lag{group="billing",topic="orders",partition="2"}"#
            )
            .as_deref(),
            Some("3")
        );
        let bucket = |le: &str| -> u64 {
            let line = text
                .lines()
                .find(|line| {
                    line.starts_with("sluice_produce_latency_seconds_bucket{")
                        && line.contains(r#"shard="1""#)
                        && line.contains(&format!(r#"le="{le}""#))
                })
                .unwrap_or_else(|| panic!("no bucket le={le}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!(bucket("0.001"), 1, "cumulative: 1 ms");
        assert_eq!(bucket("0.0025"), 2, "cumulative: 1 and 2 ms");
        assert_eq!(bucket("10"), 2, "20 s is beyond the last bound");
        assert_eq!(bucket("+Inf"), 3);
        assert_eq!(
            sample(&text, r#"sluice_produce_latency_seconds_count{shard="1"}"#).as_deref(),
            Some("3")
        );
        assert!(text.contains("# TYPE sluice_fsync_latency_seconds histogram"));
        for (name, _, _) in METRICS {
            assert!(
                text.contains(&format!("# TYPE {}", name.trim_end_matches("_total"))),
                "{name} missing"
            );
        }
    }
}
