//! The peer brokers measured on this machine class (from `shared/PEERS.md`, measured
//! 2026-11-22 on 2 vCPU / 24 GiB / Linux 6.18 / ext4 on a virtio disk), embedded as data so
//! that every report can show them as **reference context**.
//!
//! They were measured on another day, in other runs, on a shared host that drifts by tens of
//! percent: a ratio of one of our figures to one of theirs would mix two days' noise with the
//! difference between the brokers, so the report never prints one ([`REFERENCE_NOTE`]). A
//! ratio needs the peer measured in the same sitting, alternating with our runs:
//! `../shared/peers/sidebyside.sh` does that for Apache Iggy (this harness cannot run a peer
//! itself).
//!
//! Their workload: 1 KiB messages, one topic with one partition, one producer and one consumer
//! at once, about 2 M messages, broker and client sharing the 2 cores. Latencies are
//! p50 / p99 / p99.9 in ms; "e2e" is from the producer's timestamp to the consumer's receipt.
//! The host varied by ±30 % between runs, so compare orders of magnitude, not digits; the
//! hardware limits of the same run ([`crate::limits`]) are the steadier yardstick.

use serde::Serialize;

/// One peer configuration.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Peer {
    /// Broker and version.
    pub broker: &'static str,
    /// Durability and batching.
    pub setup: &'static str,
    /// Durability class, to match against our points: `none` (no fsync before ack),
    /// `periodic` (fsync on a timer), `always` (fsync before every ack).
    pub fsync: &'static str,
    /// Messages per second (typical).
    pub msgs_per_s: f64,
    /// Range seen, as printed in PEERS.md.
    pub msgs_range: &'static str,
    /// MB/s.
    pub mb_per_s: &'static str,
    /// Produce latency p50 / p99 / p99.9 ms.
    pub produce_ms: &'static str,
    /// End-to-end latency p50 / p99 / p99.9 ms.
    pub e2e_ms: &'static str,
}

/// Where the figures come from.
pub const SOURCE: &str = "shared/PEERS.md, measured 2026-11-22 on this machine class \
     (2 vCPU, 24 GiB, Linux 6.18, ext4 on virtio); 1 KiB messages, 1 partition, 1 producer + \
     1 consumer at once, ~2 M messages; ±30 % run to run";

/// The day the peers were measured.
pub const MEASURED_ON: &str = "2026-11-22";

/// What every report says about the peers' figures.
pub const REFERENCE_NOTE: &str = "reference context only: measured on 2026-11-22 in other \
     runs (shared/PEERS.md), not side by side with this run, so not comparable as a ratio; \
     for a ratio, measure a peer in the same sitting (shared/peers/sidebyside.sh alternates \
     Sluice and Apache Iggy runs)";

/// The peers, best throughput first within each broker.
pub const PEERS: &[Peer] = &[
    Peer {
        broker: "Apache Iggy 0.9 dev (thread-per-core io_uring)",
        setup: "no fsync, batch 1000",
        fsync: "none",
        msgs_per_s: 611_000.0,
        msgs_range: "611k (254k-797k)",
        mb_per_s: "625",
        produce_ms: "1.6 / 3.1 / 5.2 per batch",
        e2e_ms: "4.4 / 8.5 / 10.6",
    },
    Peer {
        broker: "Apache Iggy 0.9 dev",
        setup: "no fsync, batch 100",
        fsync: "none",
        msgs_per_s: 360_000.0,
        msgs_range: "360k",
        mb_per_s: "368",
        produce_ms: "0.19 / 1.5 / 2.1",
        e2e_ms: "consumer falls behind",
    },
    Peer {
        broker: "Apache Iggy 0.9 dev",
        setup: "write + fsync before every ack, batch 1000",
        fsync: "always",
        msgs_per_s: 316_000.0,
        msgs_range: "300k-332k",
        mb_per_s: "308-340",
        produce_ms: "3.2 / 7.5 / 11.2",
        e2e_ms: "4.4 / 10.1 / 15.0",
    },
    Peer {
        broker: "Apache Iggy 0.9 dev",
        setup: "write + fsync before every ack, batch 1",
        fsync: "always",
        msgs_per_s: 3_400.0,
        msgs_range: "3.4k",
        mb_per_s: "3.5",
        produce_ms: "0.27 / 0.70 / 1.65",
        e2e_ms: "0.31 / 1.6 / 7.2",
    },
    Peer {
        broker: "NATS JetStream 2.15.1",
        setup: "default, 1000 in flight",
        fsync: "periodic",
        msgs_per_s: 83_000.0,
        msgs_range: "83k",
        mb_per_s: "85",
        produce_ms: "10.4 / 20-31 / 28-39",
        e2e_ms: "18 / 50-64 / 59-79",
    },
    Peer {
        broker: "NATS JetStream 2.15.1",
        setup: "fsync always",
        fsync: "always",
        msgs_per_s: 13_700.0,
        msgs_range: "13.7k",
        mb_per_s: "14",
        produce_ms: "72 / 123 / 144",
        e2e_ms: "116 / 225 / 274",
    },
    Peer {
        broker: "Redis 7.0 Streams",
        setup: "AOF fsync every second, pipeline 16",
        fsync: "periodic",
        msgs_per_s: 142_000.0,
        msgs_range: "142k",
        mb_per_s: "145",
        produce_ms: "0.07 / 0.8-1.0 / 3.7-4.1",
        e2e_ms: "-",
    },
    Peer {
        broker: "Redis 7.0 Streams",
        setup: "AOF fsync every second, pipeline 1",
        fsync: "periodic",
        msgs_per_s: 38_700.0,
        msgs_range: "38.7k",
        mb_per_s: "40",
        produce_ms: "0.015 / 0.17 / 0.73",
        e2e_ms: "0.76 / 5.4 / 10.3",
    },
    Peer {
        broker: "Redis 7.0 Streams",
        setup: "AOF fsync always, pipeline 16",
        fsync: "always",
        msgs_per_s: 74_500.0,
        msgs_range: "74.5k",
        mb_per_s: "76",
        produce_ms: "0.16 / 0.62 / 4.1",
        e2e_ms: "0.75 / 3.5 / 53",
    },
    Peer {
        broker: "RabbitMQ 3.10 streams",
        setup: "1000 in flight",
        fsync: "periodic",
        msgs_per_s: 177_000.0,
        msgs_range: "177k",
        mb_per_s: "182",
        produce_ms: "4.4 / 13.6 / 18.8",
        e2e_ms: "69 / 340 / 360",
    },
];

/// The hardware limits PEERS.md measured (for context next to this run's own).
pub const PEERS_LIMITS: &[(&str, &str)] = &[
    (
        "sequential write, O_DIRECT, io_uring, 1 MiB qd8",
        "1896 MiB/s (sustained 20 s: 2940 MiB/s)",
    ),
    (
        "O_DIRECT write + fdatasync per write, qd1, 256 KiB",
        "1609 MiB/s",
    ),
    ("loopback TCP (iperf3), 1 stream", "4.65 GB/s"),
    ("loopback TCP, 1 KiB per send()", "0.74 GB/s"),
];

/// The best peer throughput for a durability class (`none`, `periodic`, `always`).
pub fn best_for(fsync: &str) -> Option<&'static Peer> {
    PEERS
        .iter()
        .filter(|peer| peer.fsync == fsync)
        .max_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The best published peer figure is picked per durability class, and an unknown class has
    /// none.
    #[test]
    fn best_peer_per_class() {
        assert_eq!(best_for("none").map(|p| p.msgs_per_s), Some(611_000.0));
        assert_eq!(best_for("always").map(|p| p.msgs_per_s), Some(316_000.0));
        assert_eq!(best_for("periodic").map(|p| p.msgs_per_s), Some(177_000.0));
        assert!(best_for("other").is_none());
    }
}
