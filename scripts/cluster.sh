#!/usr/bin/env bash
# Runs a 3-node Sluice cluster on this machine: brokers 0, 1, 2 on 127.0.0.1:19092, :29092,
# :39092 (controller voters on :19093, :29093, :39093), one core each (taskset; on a 2-core
# machine two brokers share a core), data under ${SLUICE_CLUSTER_DIR:-./cluster-data}/bN.
#
#   scripts/cluster.sh start   # starts the three brokers, waits until each is ready
#   scripts/cluster.sh stop    # SIGTERM to the three (clean drain), waits for them to exit
#
# Brokers log to <dir>/bN.log. Every broker is a controller voter, so a majority (two) must run
# for any of them to start serving.
set -euo pipefail
cmd=${1:-start}
dir=${SLUICE_CLUSTER_DIR:-./cluster-data}
bin=${SLUICE_BIN:-$(dirname "$0")/../target/release/sluice}
voters="0@127.0.0.1:19093,1@127.0.0.1:29093,2@127.0.0.1:39093"
cpus=$(nproc)
case "$cmd" in
start)
    mkdir -p "$dir"
    for i in 0 1 2; do
        taskset -c $((i % cpus)) "$bin" serve --broker-id "$i" --controller-voters "$voters" \
            --listen "127.0.0.1:$((i + 1))9092" --cores 1 --data-dir "$dir/b$i" \
            --default-replication-factor 3 --min-insync-replicas 2 \
            >"$dir/b$i.log" 2>&1 &
        echo $! >"$dir/b$i.pid"
    done
    for i in 0 1 2; do
        for _ in $(seq 1 600); do
            grep -q "sluice listening" "$dir/b$i.log" 2>/dev/null && break
            kill -0 "$(cat "$dir/b$i.pid")" 2>/dev/null || { echo "broker $i exited:"; tail "$dir/b$i.log"; exit 1; }
            sleep 0.1
        done
        grep "sluice listening" "$dir/b$i.log" || { echo "broker $i not ready"; exit 1; }
    done
    echo "bootstrap: 127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092"
    ;;
stop)
    for i in 0 1 2; do
        [ -f "$dir/b$i.pid" ] && kill -TERM "$(cat "$dir/b$i.pid")" 2>/dev/null || true
    done
    for i in 0 1 2; do
        [ -f "$dir/b$i.pid" ] || continue
        while kill -0 "$(cat "$dir/b$i.pid")" 2>/dev/null; do sleep 0.1; done
        rm -f "$dir/b$i.pid"
    done
    ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
