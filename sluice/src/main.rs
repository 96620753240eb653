//! `sluice`: the one binary of the project, a thin layer over three libraries. `sluice serve`
//! turns its flags into a [`broker::Config`] and runs [`broker::Node`] until SIGINT/SIGTERM;
//! the client commands (`topic`, `produce`, `consume`, `group`) run the `client` library on a
//! tokio runtime; `sluice bench` is the `bench` harness. The broker library knows nothing of
//! this crate (nor of the client or the bench).
//!
//! ```text
//!  sluice (bin) ──> broker (lib) ──> storage ──> wire
//!       │                       └──────────────> wire
//!       ├───────> client ──> wire
//!       └───────> bench ──> client
//! ```

mod args;
mod cli;
mod config_file;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Sluice: a thread-per-core, persistent message broker.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker node (data in ./data, listening on 127.0.0.1:9092 by default).
    Serve(Box<args::ServeArgs>),
    #[command(flatten)]
    Client(cli::CliCommand),
    /// Benchmark a broker (the `sluice-bench` harness; starts its own broker by default).
    Bench(Box<bench::Args>),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    match cli.command {
        Command::Serve(mut args) => {
            if let Some(path) = args.config.clone() {
                let serve_matches = matches.subcommand_matches("serve").unwrap_or(&matches);
                let merged = config_file::ConfigFile::load(&path)
                    .and_then(|file| file.merge_into(&mut args, serve_matches));
                if let Err(error) = merged {
                    eprintln!("error: {error:#}");
                    return ExitCode::from(2);
                }
            }
            serve(*args)
        }
        Command::Client(command) => run_client(command),
        Command::Bench(args) => bench::run(*args),
    }
}

fn serve(args: args::ServeArgs) -> ExitCode {
    init_logging(args.log.as_deref());
    let config = match args.into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    // Before anything can report readiness: a SIGTERM right after the readiness line must find
    // the handler installed, not the default action.
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("error: installing signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let shards = config.shards;
    let node = match broker::Node::start(config) {
        Ok(node) => node,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("sluice listening on {} ({shards} shards)", node.main_addr());
    if let Some(metrics_addr) = node.metrics_addr() {
        println!("sluice metrics on {metrics_addr}");
    }
    let trigger = node.trigger();
    let signal_handle = signals.handle();
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::info!(signal, "stopping");
            trigger.shutdown();
        }
    });
    let result = node.wait();
    signal_handle.close();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a client command on a tokio runtime (the client library is tokio-based).
fn run_client(command: cli::CliCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: Option<&str>) {
    let filter = filter
        .map(tracing_subscriber::EnvFilter::new)
        .or_else(|| tracing_subscriber::EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
