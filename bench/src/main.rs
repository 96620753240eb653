//! `sluice-bench`: the benchmark harness of Sluice (see the `bench` library for what it does;
//! `sluice bench` is the same program).

use clap::Parser;

fn main() -> std::process::ExitCode {
    bench::run(bench::Args::parse())
}
