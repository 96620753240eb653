#!/usr/bin/env bash
# Writes the standard benchmark report of Sluice: bench/results/<NAME>.md with its SVG plot
# (p50 and p99 end-to-end latency against achieved throughput, one curve per batch size), CSV
# and JSON, measured with the release build of the harness (bench/) against a broker it starts.
#
#   scripts/bench-curves.sh                       # NAME = standard
#   scripts/bench-curves.sh my-run --duration 10s # a name, then extra sluice-bench flags
#
# The standard workload is the peers' (shared/PEERS.md): 1 KiB messages, one partition, one
# producer and one consumer at once, end to end, acks=1, the broker's default durability
# (fsync every 10 ms), batches of 1, 16, 64, 256 and 1024 messages at open-loop target rates
# up to the closed-loop maximum. 35 points of 1 s warm-up + 5 s measured: about 6 minutes.
# fio and iperf3 (Debian's packages, installed here when missing) measure the disk and loopback
# limits in the same run. Broker and client share this machine's cores: the report says so,
# and says where the client was the bottleneck.
set -euo pipefail
cd "$(dirname "$0")/.."

name="standard"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    name="$1"
    shift
fi

missing=()
command -v fio >/dev/null 2>&1 || missing+=(fio)
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages) for the hardware references" >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    if ! ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}") >&2; then
        echo "could not install ${missing[*]}: the report uses the built-in probes or omits those ratios" >&2
    fi
fi

# io_uring registers buffers in locked memory; non-root users need a raised limit.
ulimit -l unlimited 2>/dev/null || ulimit -l 1048576 2>/dev/null || true

cargo build --release -p sluice --bin sluice -p sluice-bench --bin sluice-bench

cores="$(nproc)"
note="Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), ${cores} cores, \
$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r); \
broker (${cores} shards, pinned) and load generator (2 tokio threads + 1 send thread) share these ${cores} cores, \
so every CPU second the client spends is taken from the broker."

exec target/release/sluice-bench \
    --scenario e2e \
    --message-size 1k \
    --partitions 1 --producers 1 --consumers 1 \
    --acks 1 \
    --sweep batch=1,16,64,256,1024 \
    --rates 10k,50k,100k,150k,200k,300k,max \
    --duration 5s --warmup 1s \
    --with-limits --limits-duration 5s \
    --output-dir bench/results --name "$name" \
    --progress auto \
    --note "$note" \
    "$@"
