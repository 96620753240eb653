//! The one fio runner of the workspace: a sequential O_DIRECT io_uring write in a fresh
//! directory, read back from fio's JSON output (through `serde_json`). Called by
//! [`crate::limits`] (the hardware references of a broker run) and by the storage append
//! benchmark (`storage/benches/append.rs`).
//!
//! Why this file is shared by inclusion: the storage bench compiles it as its own module
//! (`#[path = "../../bench/src/fio.rs"] mod fio;`) rather than dev-depending on
//! `sluice-bench`. Such a dev-dependency would point from `storage` up to the top of the
//! dependency graph (`wire` ← `storage`, `wire` ← `client` ← `bench`, DESIGN.md §3) and make
//! every storage test build compile the client, tokio and plotters. So this module uses only
//! the standard library, `anyhow`, `serde_json` and `tempfile` (dev-dependencies of both),
//! and nothing of the bench crate.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

/// One fio job: sequential writes of `block_bytes`, `iodepth` in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqWrite {
    /// Bytes per write.
    pub block_bytes: u64,
    /// Writes in flight.
    pub iodepth: u32,
    /// An fdatasync after every write.
    pub fdatasync: bool,
    /// Size of the file (rounded down to whole blocks, at least one).
    pub size_bytes: u64,
    /// Time-based: how long fio writes, going over the file again as often as it takes.
    /// Otherwise fio writes the file once and this is only a cap.
    pub runtime: Duration,
    /// Whether the job is time-based (see `runtime`).
    pub time_based: bool,
}

/// What a job measured.
#[derive(Debug, Clone)]
pub struct FioRun {
    /// The job.
    pub job: SeqWrite,
    /// fio's version line (`fio-3.33`).
    pub version: String,
    /// The exact command.
    pub command: String,
    /// Write bandwidth, bytes per second.
    pub bytes_per_s: f64,
    /// Writes per second.
    pub iops: f64,
}

/// fio's version (`fio --version`), or `None` when fio cannot be run.
pub fn version() -> Option<String> {
    let output = Command::new("fio").arg("--version").output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().next().map(|line| line.trim().to_owned())
}

/// Runs `job` in a fresh directory under `base` (deleted afterwards).
pub fn run(base: &Path, job: SeqWrite) -> Result<FioRun> {
    let version = version().context("fio is not installed (apt-get install fio)")?;
    std::fs::create_dir_all(base).with_context(|| format!("cannot create {}", base.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("fio-")
        .tempdir_in(base)
        .with_context(|| format!("cannot create a directory under {}", base.display()))?;
    let block_bytes = job.block_bytes.max(1);
    let size_bytes = (job.size_bytes / block_bytes).max(1) * block_bytes;
    let mut args = vec![
        "--name=seqwrite".to_owned(),
        format!("--directory={}", dir.path().display()),
        "--rw=write".into(),
        format!("--bs={block_bytes}"),
        format!("--iodepth={}", job.iodepth),
        "--ioengine=io_uring".into(),
        "--direct=1".into(),
        format!("--size={size_bytes}"),
        format!("--runtime={}", job.runtime.as_secs().max(1)),
        "--numjobs=1".into(),
        "--group_reporting".into(),
        "--output-format=json".into(),
    ];
    if job.time_based {
        args.push("--time_based".into());
    }
    if job.fdatasync {
        args.push("--fdatasync=1".into());
    }
    let command = format!("fio {}", args.join(" "));
    let output = Command::new("fio")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run fio")?;
    ensure!(
        output.status.success(),
        "{command} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let figures = parse_write(&output.stdout)
        .with_context(|| format!("no write bandwidth in the output of {command}"))?;
    dir.close().context("cannot delete fio's directory")?;
    Ok(FioRun {
        job,
        version,
        command,
        bytes_per_s: figures.bytes_per_s,
        iops: figures.iops,
    })
}

/// The write figures of fio's JSON output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteFigures {
    /// `jobs[0].write.bw_bytes`.
    pub bytes_per_s: f64,
    /// `jobs[0].write.iops` (0 when absent).
    pub iops: f64,
}

/// The write figures of the first job of fio's JSON output (one job with
/// `--group_reporting`). fio may print warnings before the JSON, so parsing starts at the
/// first `{`.
pub fn parse_write(stdout: &[u8]) -> Option<WriteFigures> {
    let text = String::from_utf8_lossy(stdout);
    let json: serde_json::Value = serde_json::from_str(&text[text.find('{')?..]).ok()?;
    let write = json.get("jobs")?.get(0)?.get("write")?;
    Some(WriteFigures {
        bytes_per_s: write.get("bw_bytes")?.as_f64()?,
        iops: write
            .get("iops")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    // Paths instead of `use super::*`: the storage bench compiles this file with cfg(test)
    // but without the test harness, where such an import would be unused.

    /// The figures of fio's JSON, with fio's warnings in front; garbage gives none.
    #[test]
    fn parses_fio_output() {
        let fio = br#"note: both iodepth >= 1 and synchronous I/O engine are selected
{ "fio version" : "fio-3.33", "jobs" : [ { "jobname" : "seqwrite",
  "read" : { "bw_bytes" : 0, "iops" : 0.0 },
  "write" : { "io_bytes" : 1, "bw_bytes" : 2147483648, "iops" : 2048.5 } } ] }"#;
        assert_eq!(
            super::parse_write(fio),
            Some(super::WriteFigures {
                bytes_per_s: 2147483648.0,
                iops: 2048.5
            })
        );
        assert_eq!(super::parse_write(b"error"), None);
        assert_eq!(super::parse_write(br#"{"jobs": []}"#), None);
        assert_eq!(
            super::parse_write(br#"{"jobs": [{"write": {"bw_bytes": 10}}]}"#).map(|f| f.iops),
            Some(0.0)
        );
    }

    /// A real fio run when fio is installed (skipped, and says so, when it is not): a small
    /// file on the real disk under `target/test-data`, written once.
    #[test]
    fn runs_fio_when_installed() {
        if super::version().is_none() {
            eprintln!("fio not installed: skipping the real run");
            return;
        }
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-data/fio");
        let job = super::SeqWrite {
            block_bytes: 1 << 20,
            iodepth: 2,
            fdatasync: false,
            size_bytes: 8 << 20,
            runtime: std::time::Duration::from_secs(5),
            time_based: false,
        };
        let run = super::run(&base, job);
        let run = match run {
            Ok(run) => run,
            Err(error) => panic!("fio failed: {error:#}"),
        };
        assert!(run.bytes_per_s > 1e6, "{run:?}");
        assert!(run.iops > 0.0, "{run:?}");
        assert!(run.command.contains("--direct=1") && run.command.contains("--bs=1048576"));
        assert!(run.version.starts_with("fio"), "{run:?}");
    }
}
