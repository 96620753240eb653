#!/usr/bin/env bash
# Runs the storage append benchmark (storage/benches/append.rs): the full sweep of durability
# policies x batch sizes x partitions on one core, with fio references on the same disk.
#
#   scripts/bench-storage.sh                          # default sweep (a few minutes)
#   scripts/bench-storage.sh --policies never --batch-sizes 64k,1m --no-fio
#
# Extra flags go to the bench (see `cargo bench -p sluice-storage --bench append -- --help`).
# The table goes to stdout, progress to stderr, and a CSV to target/bench-storage.csv unless
# --csv is given.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v fio >/dev/null 2>&1; then
    echo "fio not found: installing it (apt-get install -y fio)" >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    if ! ($SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y fio) >&2; then
        echo "could not install fio: the bench runs without fio references (no ratios)" >&2
    fi
fi

args=("$@")
csv_given=false
for arg in "${args[@]+"${args[@]}"}"; do
    case "$arg" in
        --csv | --csv=*) csv_given=true ;;
    esac
done
if [ "$csv_given" = false ]; then
    mkdir -p target
    args+=(--csv target/bench-storage.csv)
fi

exec cargo bench -p sluice-storage --bench append -- "${args[@]}"
