//! The `--config` file of `sluice serve`: TOML, one key per long flag with underscores
//! (`listen = "127.0.0.1:9092"`, `cores = 2`, `default_durability = "always"`), parsed by the
//! `toml` crate into [`ConfigFile`] (unknown keys are refused, naming the key). Its values are
//! merged into the parsed flags only where clap says a value came from its default, so the
//! precedence is: flag, then environment variable, then config file, then default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;
use wire::Durability;

use crate::args::ServeArgs;

/// Every setting a config file may hold; absent keys leave the flag's value alone.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    cores: Option<usize>,
    shard_port_base: Option<u16>,
    advertised_shard_port_base: Option<u16>,
    advertised_host: Option<String>,
    broker_id: Option<u32>,
    max_frame_bytes: Option<usize>,
    idle_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    max_request_bytes_in_flight: Option<usize>,
    receive_buffer_budget_bytes: Option<usize>,
    request_budget_bytes: Option<usize>,
    request_timeout_ms: Option<u64>,
    spin_before_park_us: Option<u64>,
    default_partitions: Option<u32>,
    default_retention_ms: Option<i64>,
    default_durability: Option<String>,
    durability_interval_ms: Option<u32>,
    segment_bytes: Option<u64>,
    max_batch_bytes: Option<u32>,
    retention_check_ms: Option<u64>,
    offsets_partitions: Option<u32>,
    offsets_segment_bytes: Option<u64>,
    offsets_snapshot_records: Option<u64>,
    group_max_size: Option<usize>,
    group_min_session_timeout_ms: Option<u64>,
    group_max_session_timeout_ms: Option<u64>,
    group_initial_rebalance_delay_ms: Option<u64>,
    shard_inbox_bytes: Option<u32>,
    bind_retry_ms: Option<u64>,
    tail_cache_bytes_per_core: Option<usize>,
    metrics_listen: Option<SocketAddr>,
    log: Option<String>,
}

impl ConfigFile {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<ConfigFile> {
        Ok(toml::from_str(text)?)
    }

    /// Sets every value of the file whose flag was neither given nor set by its environment
    /// variable (`matches` are the `serve` subcommand's).
    pub fn merge_into(self, args: &mut ServeArgs, matches: &ArgMatches) -> anyhow::Result<()> {
        let from_default = |id: &str| {
            matches!(
                matches.value_source(id),
                None | Some(ValueSource::DefaultValue)
            )
        };
        macro_rules! merge {
            ($($field:ident),* $(,)?) => {$(
                if let Some(value) = self.$field {
                    if from_default(stringify!($field)) {
                        args.$field = value.into();
                    }
                }
            )*};
        }
        merge!(
            data_dir,
            listen,
            cores,
            shard_port_base,
            advertised_shard_port_base,
            advertised_host,
            broker_id,
            max_frame_bytes,
            idle_timeout_ms,
            max_connections,
            max_request_bytes_in_flight,
            receive_buffer_budget_bytes,
            request_budget_bytes,
            request_timeout_ms,
            spin_before_park_us,
            default_partitions,
            default_retention_ms,
            durability_interval_ms,
            segment_bytes,
            max_batch_bytes,
            retention_check_ms,
            offsets_partitions,
            offsets_segment_bytes,
            offsets_snapshot_records,
            group_max_size,
            group_min_session_timeout_ms,
            group_max_session_timeout_ms,
            group_initial_rebalance_delay_ms,
            shard_inbox_bytes,
            bind_retry_ms,
            tail_cache_bytes_per_core,
            metrics_listen,
            log,
        );
        if let Some(text) = self.default_durability {
            if from_default("default_durability") {
                args.default_durability = text
                    .parse::<Durability>()
                    .context("key default_durability")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn merged(argv: &[&str], file: &str) -> anyhow::Result<ServeArgs> {
        let matches = Serve::command()
            .try_get_matches_from(std::iter::once("serve").chain(argv.iter().copied()))?;
        let mut args = Serve::from_arg_matches(&matches)?.args;
        ConfigFile::parse(file)?.merge_into(&mut args, &matches)?;
        Ok(args)
    }

    /// The file fills what flags left at their defaults and never overrides a flag.
    #[test]
    fn file_fills_defaults_only() {
        let file = "listen = \"127.0.0.1:7001\"\ncores = 3\ndefault_durability = \"always\"\n";
        let args = merged(&["--cores", "2"], file).unwrap();
        assert_eq!(args.listen, "127.0.0.1:7001".parse::<SocketAddr>().unwrap());
        assert_eq!(args.cores, 2, "the flag wins");
        assert_eq!(args.default_durability, Durability::Always);
    }

    /// The network bounds can be set in the file too.
    #[test]
    fn file_sets_the_network_bounds() {
        let file = "max_connections = 500\nrequest_timeout_ms = 2000\nreceive_buffer_budget_bytes = 134217728\n";
        let args = merged(&[], file).unwrap();
        assert_eq!(args.max_connections, 500);
        assert_eq!(args.request_timeout_ms, 2000);
        assert_eq!(args.receive_buffer_budget_bytes, 128 << 20);
    }

    /// Unknown keys, wrong types and bad policy names are refused with the key named.
    #[test]
    fn bad_files_name_the_key() {
        let error = merged(&[], "lisen = \"x\"\n").unwrap_err();
        assert!(format!("{error:#}").contains("lisen"), "{error:#}");
        let error = merged(&[], "cores = \"many\"\n").unwrap_err();
        assert!(format!("{error:#}").contains("cores"), "{error:#}");
        let error = merged(&[], "default_durability = \"sometimes\"\n").unwrap_err();
        assert!(
            format!("{error:#}").contains("default_durability"),
            "{error:#}"
        );
    }
}
