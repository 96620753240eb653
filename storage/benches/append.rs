//! Storage append benchmark: how fast one core appends record batches to partition logs, under
//! each durability policy, measured against fio on the same filesystem in the same run.
//!
//! ```text
//! cargo bench -p sluice-storage --bench append -- [--batch-sizes 4k,64k] [--policies never] ...
//! cargo test  -p sluice-storage --benches          # smoke run: a few MiB, one point per policy
//! ```
//!
//! One *point* is (policy, batch size, partitions P, appenders A): P logs in P fresh directories,
//! each driven by A tasks of ONE glommio executor (one core) that append the same pre-built batch
//! in a closed loop until the point's byte budget (or time cap) is spent.
//!
//! - `never` / `interval`: an append counts when it returns (logically appended; the write
//!   pipeline's back-pressure keeps it honest). The final `close()` (which syncs) is inside the
//!   wall time.
//! - `always`: every task calls `wait_durable(last_offset)` after each append, before the next
//!   one; with A > 1 tasks on one log their waits share fdatasyncs (group commit).
//!
//! Throughput is batch bytes / wall time; latency is per append (append + wait_durable under
//! `always`), in an HDR histogram. References, unless `--no-fio`: fio O_DIRECT io_uring
//! sequential writes in the same directory, at the write size and queue depth the appender
//! issues (1 MiB, 4 in flight: the primary reference, run again between every two `never` or
//! `interval` points, each compared with the mean of the runs just before and after it, since the
//! shared host drifts by tens of percent within minutes), at each batch size with one write in
//! flight, and at each batch size with one fdatasync per write (the `always` reference).
//!
//! Without `--bench` on its command line (that is, under `cargo test --benches` or
//! `cargo test --all-targets`) it runs a tiny smoke configuration without fio, so it never rots.

use std::cell::Cell;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use storage::{Durability, Log, LogConfig};
use wire::batch::{BatchBuilder, BatchView};
use wire::AlignedVec;

/// The workspace's one fio runner, shared with the broker bench's hardware limits. Included
/// as a module rather than through a dev-dependency on `sluice-bench`, which would point from
/// `storage` up to the top of the crate graph and build the client and tokio into every storage
/// test; the file's own docs say more.
#[path = "../../bench/src/fio.rs"]
mod fio;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// Value size of the records in a benchmark batch: a 4 KiB batch holds ~3 of them, 1 MiB ~1000.
const RECORD_VALUE_BYTES: usize = 1000;

/// Appends between two looks at the clock for the time cap (a clock read costs ~25 ns, an
/// append of a 4 KiB batch ~1 µs).
const CLOCK_CHECK_EVERY: u64 = 64;

/// Largest latency the histograms hold: 100 s in nanoseconds (longer ones are clamped).
const LATENCY_NS_MAX: u64 = 100_000_000_000;

/// The caveat printed with every result.
const CAVEAT: &str =
    "broker-less storage bench: one core appends; 2-core machine shared with other work";

/// Durability policy of a point, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Policy {
    /// `Durability::Never`: no sync until close.
    Never,
    /// `Durability::Interval` with `LogConfig::default()`'s interval and byte threshold.
    Interval,
    /// `Durability::Always`: each append waits for an fdatasync covering it.
    Always,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Never => "never",
            Policy::Interval => "interval",
            Policy::Always => "always",
        }
    }

    fn durability(self) -> Durability {
        match self {
            Policy::Never => Durability::Never,
            Policy::Interval => LogConfig::default().durability,
            Policy::Always => Durability::Always,
        }
    }
}

/// Command-line flags (after cargo's `--bench`, which is removed first).
#[derive(Debug, Parser)]
#[command(
    name = "append",
    about = "Sluice storage append benchmark (see the module docs)."
)]
struct Args {
    /// Directory for the logs and the fio files; must be on a real disk (O_DIRECT), not tmpfs.
    /// Default: <workspace>/target/bench-data; a relative path starts at the workspace root.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Batch sizes to sweep (suffixes k, m, g are powers of 1024).
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "4k,16k,64k,256k,1m")]
    batch_sizes: Vec<u64>,
    /// Durability policies to sweep.
    #[arg(long, value_delimiter = ',', default_value = "never,interval,always")]
    policies: Vec<Policy>,
    /// Numbers of independent logs (partitions) driven at once on the one core.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    partitions: Vec<usize>,
    /// Numbers of concurrent appending tasks per log.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    appenders: Vec<usize>,
    /// For `always`: also run this many appenders into one log (and 1 appender), per batch
    /// size, and report the group-commit ratio. 0 turns it off.
    #[arg(long, default_value_t = 8)]
    group_commit_appenders: usize,
    /// Bytes appended per point under `never` and `interval` (split over all tasks); also the
    /// size of the fio runs without fdatasync.
    #[arg(long, value_parser = parse_size, default_value = "1g")]
    bytes_per_point: u64,
    /// Bytes appended per point under `always` (each append waits for an fdatasync); also the
    /// size of the fio runs with fdatasync.
    #[arg(long, value_parser = parse_size, default_value = "128m")]
    always_bytes_per_point: u64,
    /// Time cap of one point's appends (and of one fio run); a capped point says so.
    #[arg(long, default_value_t = 10.0)]
    seconds_per_point: f64,
    /// Skip the fio reference runs (no ratios then).
    #[arg(long)]
    no_fio: bool,
    /// Also write every figure to this CSV file (a relative path starts at the workspace root).
    #[arg(long)]
    csv: Option<PathBuf>,
}

/// Parses `4096`, `4k`, `16K`, `1m`, `1g` (powers of 1024).
fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim().to_ascii_lowercase();
    let (digits, unit) = match text.strip_suffix(['k', 'm', 'g']) {
        Some(digits) => (digits, &text[digits.len()..]),
        None => (text.as_str(), ""),
    };
    let digits = digits.strip_suffix("i").unwrap_or(digits);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 4096, 64k, 1m or 1g"))?;
    let scale = match unit {
        "k" => KIB,
        "m" => MIB,
        "g" => GIB,
        _ => 1,
    };
    let size = value
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if size == 0 {
        return Err("a size must be positive".into());
    }
    Ok(size)
}

/// `4096` -> `4k`, `1048576` -> `1m`: the labels of the table.
fn size_label(bytes: u64) -> String {
    if bytes % GIB == 0 {
        format!("{}g", bytes / GIB)
    } else if bytes % MIB == 0 {
        format!("{}m", bytes / MIB)
    } else if bytes % KIB == 0 {
        format!("{}k", bytes / KIB)
    } else {
        bytes.to_string()
    }
}

/// Everything one run does, from the flags or from the smoke configuration.
#[derive(Debug, Clone)]
struct Plan {
    dir: PathBuf,
    batch_sizes: Vec<u64>,
    policies: Vec<Policy>,
    partitions: Vec<usize>,
    appenders: Vec<usize>,
    group_commit_appenders: usize,
    bytes_per_point: u64,
    always_bytes_per_point: u64,
    time_cap: Duration,
    fio: bool,
    csv: Option<PathBuf>,
    smoke: bool,
}

impl Plan {
    fn from_args(args: Args) -> Result<Plan> {
        ensure!(!args.batch_sizes.is_empty(), "--batch-sizes is empty");
        ensure!(!args.policies.is_empty(), "--policies is empty");
        ensure!(
            args.partitions
                .iter()
                .chain(&args.appenders)
                .all(|&n| (1..=256).contains(&n)),
            "--partitions and --appenders take numbers within [1, 256]"
        );
        ensure!(
            args.group_commit_appenders <= 256,
            "--group-commit-appenders at most 256"
        );
        ensure!(
            args.seconds_per_point.is_finite() && args.seconds_per_point > 0.0,
            "--seconds-per-point must be positive"
        );
        let limit = wire::limits::BATCH_SIZE_MAX as u64;
        if let Some(&size) = args.batch_sizes.iter().find(|&&s| s > limit || s < 2 * KIB) {
            bail!(
                "batch size {size} is outside [2 KiB, {}]",
                size_label(limit)
            );
        }
        Ok(Plan {
            dir: args.dir.map_or_else(default_dir, from_workspace),
            batch_sizes: args.batch_sizes,
            policies: args.policies,
            partitions: args.partitions,
            appenders: args.appenders,
            group_commit_appenders: args.group_commit_appenders,
            bytes_per_point: args.bytes_per_point,
            always_bytes_per_point: args.always_bytes_per_point,
            time_cap: Duration::from_secs_f64(args.seconds_per_point),
            fio: !args.no_fio,
            csv: args.csv.map(from_workspace),
            smoke: false,
        })
    }

    /// A few MiB per policy, one batch size, no fio: seconds even in a debug build.
    fn smoke() -> Plan {
        Plan {
            dir: default_dir(),
            batch_sizes: vec![64 * KIB],
            policies: vec![Policy::Never, Policy::Interval, Policy::Always],
            partitions: vec![1],
            appenders: vec![1],
            group_commit_appenders: 8,
            bytes_per_point: 4 * MIB,
            always_bytes_per_point: MIB,
            time_cap: Duration::from_secs(2),
            fio: false,
            csv: None,
            smoke: true,
        }
    }

    /// The points to run, in order.
    fn points(&self) -> Vec<PointSpec> {
        let mut points = Vec::new();
        for &policy in &self.policies {
            for &batch_bytes in &self.batch_sizes {
                let mut shapes: Vec<(usize, usize)> = Vec::new();
                for &partitions in &self.partitions {
                    for &appenders in &self.appenders {
                        shapes.push((partitions, appenders));
                    }
                }
                if policy == Policy::Always && self.group_commit_appenders > 0 {
                    for shape in [(1, 1), (1, self.group_commit_appenders)] {
                        if !shapes.contains(&shape) {
                            shapes.push(shape);
                        }
                    }
                }
                let bytes = match policy {
                    Policy::Always => self.always_bytes_per_point,
                    Policy::Never | Policy::Interval => self.bytes_per_point,
                };
                for (partitions, appenders) in shapes {
                    points.push(PointSpec {
                        policy,
                        batch_bytes,
                        partitions,
                        appenders,
                        bytes,
                    });
                }
            }
        }
        points
    }
}

/// The workspace root: relative paths on the command line start there, because cargo runs
/// benches from the package directory (`storage/`), not from where it was invoked.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.join(".."), Path::to_path_buf)
}

/// `path` itself when absolute, else taken from the workspace root.
fn from_workspace(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        workspace_root().join(path)
    }
}

/// `<workspace>/target/bench-data`: on the same disk as the build, never tmpfs here.
fn default_dir() -> PathBuf {
    workspace_root().join("target/bench-data")
}

/// One point of the sweep.
#[derive(Debug, Clone, Copy)]
struct PointSpec {
    policy: Policy,
    /// Target batch size (the built batch is at most this long).
    batch_bytes: u64,
    partitions: usize,
    appenders: usize,
    /// Byte budget of the point, shared by all its tasks.
    bytes: u64,
}

impl PointSpec {
    fn describe(&self) -> String {
        format!(
            "{} {} P={} A={}",
            self.policy.name(),
            size_label(self.batch_bytes),
            self.partitions,
            self.appenders
        )
    }
}

/// A batch built once per batch size and appended again and again (the log stamps offsets into
/// its own copy, so the same bytes serve every append).
struct PreparedBatch {
    bytes: AlignedVec<16>,
    records: u64,
}

impl PreparedBatch {
    /// Builds a batch of records with [`RECORD_VALUE_BYTES`]-byte values, and one shorter last
    /// record so the batch comes as close to `target` bytes as 16-byte padding allows.
    fn build(target: u64) -> Result<PreparedBatch> {
        let target = usize::try_from(target)?;
        let empty = BatchBuilder::new().estimated_size();
        let mut probe = BatchBuilder::new();
        push_record(&mut probe, 0, RECORD_VALUE_BYTES);
        let per_record = probe.estimated_size().saturating_sub(empty).max(1);
        // The estimate is an upper bound: `full` records always fit when the target allows one.
        let full = (target.saturating_sub(empty) / per_record).max(1);
        let mut best = build_batch(full, None)?;
        if best.len() < target {
            // Fill the gap with one more record, shrinking its value until the batch fits.
            let mut value_bytes = target - best.len();
            for _ in 0..16 {
                let candidate = build_batch(full, Some(value_bytes))?;
                if candidate.len() <= target {
                    best = candidate;
                    break;
                }
                let over = candidate.len() - target;
                if over >= value_bytes {
                    break;
                }
                value_bytes -= over;
            }
        }
        let view = BatchView::validate(&best, wire::limits::BATCH_SIZE_MAX)?;
        let records = u64::from(view.record_count());
        Ok(PreparedBatch {
            bytes: best,
            records,
        })
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// Pushes record number `i` with a `value_bytes`-byte value of arbitrary (non-zero) bytes.
fn push_record(builder: &mut BatchBuilder, i: usize, value_bytes: usize) {
    let value: Vec<u8> = (0..value_bytes)
        .map(|j| (j.wrapping_mul(31) ^ i) as u8 | 1)
        .collect();
    let key = format!("key-{i:08}");
    builder.push(storage::now_ms(), Some(key.as_bytes()), &value, &[], None);
}

/// A batch of `full` records of [`RECORD_VALUE_BYTES`] plus, if asked, one of `last` bytes.
fn build_batch(full: usize, last: Option<usize>) -> Result<AlignedVec<16>> {
    let mut builder = BatchBuilder::new();
    for i in 0..full {
        push_record(&mut builder, i, RECORD_VALUE_BYTES);
    }
    if let Some(value_bytes) = last {
        push_record(&mut builder, full, value_bytes);
    }
    Ok(builder.build()?)
}

/// Appends left in a point, shared by its tasks, and its time cap.
struct Budget {
    appends_left: Cell<u64>,
    claims: Cell<u64>,
    deadline: Instant,
    capped: Cell<bool>,
}

impl Budget {
    /// Takes one append from the budget; false once it is spent or the time cap passed.
    fn claim(&self) -> bool {
        let left = self.appends_left.get();
        if left == 0 {
            return false;
        }
        let claims = self.claims.get() + 1;
        self.claims.set(claims);
        if claims % CLOCK_CHECK_EVERY == 0 && Instant::now() >= self.deadline {
            self.capped.set(true);
            self.appends_left.set(0);
            return false;
        }
        self.appends_left.set(left - 1);
        true
    }
}

/// A latency histogram in nanoseconds, 3 significant digits.
fn new_histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)?)
}

/// What one appending task did.
struct TaskOutcome {
    log: usize,
    appends: u64,
    latency_ns: Histogram<u64>,
}

/// Appends `batch` to `log` as fast as the log takes it, until the budget is spent.
async fn drive(
    log_index: usize,
    log: Rc<Log>,
    batch: Rc<PreparedBatch>,
    budget: Rc<Budget>,
    wait_durable: bool,
) -> Result<TaskOutcome> {
    let view = BatchView::validate(&batch.bytes, wire::limits::BATCH_SIZE_MAX)?;
    let mut latency_ns = new_histogram()?;
    let mut appends = 0u64;
    while budget.claim() {
        let started = Instant::now();
        let info = log.append(view).await?;
        if wait_durable {
            log.wait_durable(info.last_offset).await?;
        }
        latency_ns
            .saturating_record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        appends += 1;
    }
    Ok(TaskOutcome {
        log: log_index,
        appends,
        latency_ns,
    })
}

/// The figures of one point.
struct PointResult {
    spec: PointSpec,
    batch_len: u64,
    records_per_batch: u64,
    appends: u64,
    bytes: u64,
    wall: Duration,
    /// Time of the final `close()` of every log (inside `wall`).
    close: Duration,
    latency_ns: Histogram<u64>,
    capped: bool,
    /// Mean of the fio(1m,qd4) runs just before and just after this point (`never` and
    /// `interval` only), so that the host's drift over the sweep cancels out of the ratio.
    paired_reference_mib_per_s: Option<f64>,
}

impl PointResult {
    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.wall.as_secs_f64()
    }

    fn appends_per_s(&self) -> f64 {
        self.appends as f64 / self.wall.as_secs_f64()
    }

    fn records_per_s(&self) -> f64 {
        (self.appends * self.records_per_batch) as f64 / self.wall.as_secs_f64()
    }

    /// Latency at `quantile`, in microseconds.
    fn latency_us(&self, quantile: f64) -> f64 {
        self.latency_ns.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn latency_max_us(&self) -> f64 {
        self.latency_ns.max() as f64 / 1000.0
    }
}

/// Runs one point in a fresh directory under `base`, deleted afterwards; its appends stop
/// after `time_cap` even if bytes of the budget are left.
async fn run_point(
    spec: PointSpec,
    batch: Rc<PreparedBatch>,
    base: &Path,
    time_cap: Duration,
) -> Result<PointResult> {
    let dir = tempfile::Builder::new()
        .prefix("point-")
        .tempdir_in(base)
        .with_context(|| format!("cannot create a directory under {}", base.display()))?;
    let config = LogConfig {
        durability: spec.policy.durability(),
        ..LogConfig::default()
    };
    let mut logs = Vec::with_capacity(spec.partitions);
    for partition in 0..spec.partitions {
        let path = dir.path().join(format!("p{partition}"));
        let log = Log::open(&path, config.clone())
            .await
            .with_context(|| format!("cannot open a log in {}", path.display()))?;
        logs.push(Rc::new(log));
    }
    let appends_total = (spec.bytes / batch.len()).max((spec.partitions * spec.appenders) as u64);
    let started = Instant::now();
    let budget = Rc::new(Budget {
        appends_left: Cell::new(appends_total),
        claims: Cell::new(0),
        deadline: started + time_cap,
        capped: Cell::new(false),
    });
    let wait_durable = spec.policy == Policy::Always;
    let mut tasks = Vec::with_capacity(spec.partitions * spec.appenders);
    for (index, log) in logs.iter().enumerate() {
        for _ in 0..spec.appenders {
            let task = drive(
                index,
                log.clone(),
                batch.clone(),
                budget.clone(),
                wait_durable,
            );
            tasks.push(glommio::spawn_local(task));
        }
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await?);
    }
    let closing = Instant::now();

    // Check what the logs hold before closing them, then close them all at once.
    let mut per_log = vec![0u64; logs.len()];
    for outcome in &outcomes {
        per_log[outcome.log] += outcome.appends;
    }
    let mut closes = Vec::with_capacity(logs.len());
    for (log, appends) in logs.into_iter().zip(&per_log) {
        let expected = appends * batch.records;
        ensure!(
            log.log_end_offset() == expected,
            "{} ends at offset {} after {appends} appends of {} records",
            log.dir().display(),
            log.log_end_offset(),
            batch.records
        );
        if wait_durable {
            ensure!(
                log.durable_offset() == expected,
                "{}: durable offset {} after waiting for {expected}",
                log.dir().display(),
                log.durable_offset()
            );
        }
        let log = Rc::try_unwrap(log)
            .map_err(|_| anyhow!("a log is still shared after its tasks ended"))?;
        closes.push(glommio::spawn_local(async move { log.close().await }));
    }
    for close in closes {
        close.await?;
    }
    let finished = Instant::now();
    dir.close().context("cannot delete the point's directory")?;

    let mut latency_ns = new_histogram()?;
    let mut appends = 0;
    for outcome in &outcomes {
        latency_ns.add(&outcome.latency_ns)?;
        appends += outcome.appends;
    }
    Ok(PointResult {
        spec,
        batch_len: batch.len(),
        records_per_batch: batch.records,
        appends,
        bytes: appends * batch.len(),
        wall: finished - started,
        close: finished - closing,
        latency_ns,
        capped: budget.capped.get(),
        paired_reference_mib_per_s: None,
    })
}

/// Runs every point of the plan on one glommio executor on this thread. With `fio`, every
/// `never` and `interval` point sits between two fio(1m,qd4) runs (shared with the neighbouring
/// points), appended to `references.primary`.
fn run_sweep(
    plan: &Plan,
    points: &[PointSpec],
    references: &mut References,
    fio: bool,
) -> Result<Vec<PointResult>> {
    let executor = glommio::LocalExecutorBuilder::default()
        .name("bench-append")
        .make()
        .map_err(|e| anyhow!("cannot start a glommio executor (is io_uring available, `ulimit -l` high enough?): {e}"))?;
    let base = plan.dir.clone();
    executor.run(async move {
        let mut batches: Vec<(u64, Rc<PreparedBatch>)> = Vec::new();
        for &size in &plan.batch_sizes {
            let batch = PreparedBatch::build(size)
                .with_context(|| format!("cannot build a {size}-byte batch"))?;
            batches.push((size, Rc::new(batch)));
        }
        let mut results = Vec::with_capacity(points.len());
        // The last fio(1m,qd4) figure, when nothing ran since: the next point's "before".
        let mut previous_fio: Option<f64> = None;
        for (i, spec) in points.iter().enumerate() {
            // fio blocks this thread, which is fine: no log is open between points.
            let paired = fio && spec.policy != Policy::Always;
            let before = match (paired, previous_fio.take()) {
                (false, _) => None,
                (true, Some(mib)) => Some(mib),
                (true, None) => Some(run_primary(plan, references)?),
            };
            let batch = batches
                .iter()
                .find(|(size, _)| *size == spec.batch_bytes)
                .map(|(_, batch)| batch.clone())
                .ok_or_else(|| anyhow!("no batch of {} bytes", spec.batch_bytes))?;
            let mut result = run_point(*spec, batch, &base, plan.time_cap)
                .await
                .with_context(|| format!("point {}", spec.describe()))?;
            if let Some(before) = before {
                let after = run_primary(plan, references)?;
                result.paired_reference_mib_per_s = Some((before + after) / 2.0);
                previous_fio = Some(after);
            }
            eprintln!(
                "[{}/{}] {}: {:.0} MiB/s, {:.0} appends/s, p99 {:.0} us{}",
                i + 1,
                points.len(),
                spec.describe(),
                result.mib_per_s(),
                result.appends_per_s(),
                result.latency_us(0.99),
                if result.capped { " (time cap)" } else { "" }
            );
            results.push(result);
        }
        Ok(results)
    })
}

/// One fio reference run: what the shared runner measured, in MiB/s.
#[derive(Debug, Clone)]
struct FioResult {
    block_bytes: u64,
    iodepth: u32,
    fdatasync: bool,
    mib_per_s: f64,
    iops: f64,
    command: String,
    /// fio's version line.
    version: String,
}

impl FioResult {
    fn label(&self) -> String {
        fio_label(self.block_bytes, self.iodepth, self.fdatasync)
    }
}

fn fio_label(block_bytes: u64, iodepth: u32, fdatasync: bool) -> String {
    let sync = if fdatasync { ",fdatasync" } else { "" };
    format!("fio({},qd{iodepth}{sync})", size_label(block_bytes))
}

/// Runs fio's sequential O_DIRECT io_uring write of `size` bytes (once, `cap` at most) in a
/// fresh directory under `base`, through the workspace's one fio runner ([`fio`]).
fn run_fio(
    base: &Path,
    block_bytes: u64,
    iodepth: u32,
    fdatasync: bool,
    size: u64,
    cap: Duration,
) -> Result<FioResult> {
    let job = fio::SeqWrite {
        block_bytes,
        iodepth,
        fdatasync,
        size_bytes: size,
        runtime: cap,
        time_based: false,
    };
    let run = fio::run(base, job)?;
    Ok(FioResult {
        block_bytes: run.job.block_bytes,
        iodepth: run.job.iodepth,
        fdatasync: run.job.fdatasync,
        mib_per_s: run.bytes_per_s / MIB as f64,
        iops: run.iops,
        command: run.command,
        version: run.version,
    })
}

/// The fio references of a run.
#[derive(Default)]
struct References {
    /// `bs=1m iodepth=4`, the shape of the appender's writes: before the sweep, after it.
    primary: Vec<FioResult>,
    /// `bs=<batch> iodepth=1`, with and without `fdatasync=1`.
    per_batch: Vec<FioResult>,
}

impl References {
    /// Mean of the primary runs, the figure ratios are taken against.
    fn primary_mib_per_s(&self) -> Option<f64> {
        (!self.primary.is_empty()).then(|| {
            self.primary.iter().map(|r| r.mib_per_s).sum::<f64>() / self.primary.len() as f64
        })
    }

    fn find(&self, block_bytes: u64, fdatasync: bool) -> Option<&FioResult> {
        self.per_batch
            .iter()
            .find(|r| r.block_bytes == block_bytes && r.fdatasync == fdatasync)
    }

    /// The reference a point is compared with: fio(1m,qd4) for `never` and `interval` (the
    /// runs just before and after the point, else the mean of all), fio(<batch>,qd1,fdatasync)
    /// for `always` (one fdatasync per append).
    fn for_point(&self, point: &PointResult) -> Option<(String, f64)> {
        let spec = &point.spec;
        match spec.policy {
            Policy::Never | Policy::Interval => point
                .paired_reference_mib_per_s
                .or_else(|| self.primary_mib_per_s())
                .map(|mib| (fio_label(MIB, WRITES_IN_FLIGHT, false), mib)),
            Policy::Always => self
                .find(spec.batch_bytes, true)
                .map(|r| (r.label(), r.mib_per_s)),
        }
    }
}

/// The appender's queue depth in `LogConfig::default()` (checked against it at start).
const WRITES_IN_FLIGHT: u32 = 4;

/// Runs fio(1m,qd4) over `bytes_per_point`, records it, returns its MiB/s.
fn run_primary(plan: &Plan, references: &mut References) -> Result<f64> {
    eprintln!(
        "fio: {} at 1m qd{WRITES_IN_FLIGHT}",
        size_label(plan.bytes_per_point)
    );
    let run = run_fio(
        &plan.dir,
        MIB,
        WRITES_IN_FLIGHT,
        false,
        plan.bytes_per_point,
        plan.time_cap,
    )?;
    let mib = run.mib_per_s;
    references.primary.push(run);
    Ok(mib)
}

/// Runs the fio references before the sweep.
fn run_references_before(plan: &Plan) -> Result<References> {
    let mut references = References::default();
    let cap = plan.time_cap;
    run_primary(plan, &mut references)?;
    let unsynced = plan.policies.iter().any(|&p| p != Policy::Always);
    for &size in &plan.batch_sizes {
        if unsynced {
            eprintln!(
                "fio: {} at {} qd1",
                size_label(plan.bytes_per_point),
                size_label(size)
            );
            references.per_batch.push(run_fio(
                &plan.dir,
                size,
                1,
                false,
                plan.bytes_per_point,
                cap,
            )?);
        }
        if plan.policies.contains(&Policy::Always) {
            eprintln!(
                "fio: {} at {} qd1 fdatasync",
                size_label(plan.always_bytes_per_point),
                size_label(size)
            );
            references.per_batch.push(run_fio(
                &plan.dir,
                size,
                1,
                true,
                plan.always_bytes_per_point,
                cap,
            )?);
        }
    }
    Ok(references)
}

/// Facts about the machine printed above the results.
struct Environment {
    command: String,
    cargo_command: String,
    git: String,
    cpu: String,
    cores: usize,
    kernel: String,
    filesystem: String,
}

impl Environment {
    fn collect(raw_args: &[String], user_args: &[String], dir: &Path) -> Result<Environment> {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = command_output("uname", &["-r"]).unwrap_or_else(|| "unknown".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let workspace = workspace.to_string_lossy();
        let git = match command_output("git", &["-C", &workspace, "rev-parse", "--short", "HEAD"]) {
            Some(revision) => {
                let dirty = command_output(
                    "git",
                    &[
                        "-C",
                        &workspace,
                        "status",
                        "--porcelain",
                        "--untracked-files=no",
                    ],
                )
                .is_some_and(|s| !s.is_empty());
                if dirty {
                    format!("{revision} (uncommitted changes)")
                } else {
                    revision
                }
            }
            None => "unknown (no git)".into(),
        };
        let (fstype, device, mount) = filesystem_of(dir)?;
        Ok(Environment {
            command: shell_join(raw_args),
            cargo_command: format!(
                "cargo bench -p sluice-storage --bench append -- {}",
                shell_join(user_args)
            )
            .trim_end()
            .to_string(),
            git,
            cpu,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            kernel,
            filesystem: format!("{fstype} on {device} (mounted at {mount})"),
        })
    }
}

/// Trimmed stdout of a command that succeeded.
fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Quotes arguments that a shell would split or expand.
fn shell_join(args: &[String]) -> String {
    let quote = |arg: &String| {
        if !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=./,:@%+".contains(c))
        {
            arg.clone()
        } else {
            format!("'{}'", arg.replace('\'', r"'\''"))
        }
    };
    args.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// (type, device, mount point) of the filesystem holding `dir`, from /proc/self/mounts.
fn filesystem_of(dir: &Path) -> Result<(String, String, String)> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    let mut best: Option<(usize, (String, String, String))> = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [device, mount, fstype, ..] = fields[..] else {
            continue;
        };
        let mount = mount.replace("\\040", " ");
        if dir.starts_with(&mount) && best.as_ref().is_none_or(|(len, _)| mount.len() >= *len) {
            best = Some((mount.len(), (fstype.to_string(), device.to_string(), mount)));
        }
    }
    best.map(|(_, found)| found)
        .ok_or_else(|| anyhow!("no mount holds {}", dir.display()))
}

/// The human table, the ratio lines and the target verdicts.
/// A smoke run prints the table only: its figures are too small to judge targets by.
fn report(results: &[PointResult], references: &References, fio_ran: bool, smoke: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>5} {:>8} {:>3} {:>3} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}  ratio",
        "policy",
        "batch",
        "bytes",
        "P",
        "A",
        "MiB/s",
        "appends/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "close ms"
    );
    for r in results {
        let ratio = match references.for_point(r) {
            Some((label, mib)) => format!("{:.2} x {label}", r.mib_per_s() / mib),
            None => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<8} {:>5} {:>8} {:>3} {:>3} {:>9.0} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8.1}  {ratio}{}",
            r.spec.policy.name(),
            size_label(r.spec.batch_bytes),
            r.batch_len,
            r.spec.partitions,
            r.spec.appenders,
            r.mib_per_s(),
            r.appends_per_s(),
            r.latency_us(0.50),
            r.latency_us(0.99),
            r.latency_us(0.999),
            r.latency_max_us(),
            r.close.as_secs_f64() * 1000.0,
            if r.capped { "  (time cap)" } else { "" }
        );
    }

    if fio_ran {
        let _ = writeln!(out, "\nfio references (same directory, same run):");
        let primary: Vec<f64> = references.primary.iter().map(|r| r.mib_per_s).collect();
        if let Some(mean) = references.primary_mib_per_s() {
            let min = primary.iter().copied().fold(f64::INFINITY, f64::min);
            let max = primary.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(
                out,
                "  {:<24} {mean:>8.0} MiB/s mean of {} runs, min {min:.0}, max {max:.0}",
                fio_label(MIB, WRITES_IN_FLIGHT, false),
                primary.len()
            );
            let runs: Vec<String> = primary.iter().map(|mib| format!("{mib:.0}")).collect();
            let _ = writeln!(out, "  {:<24} in run order: {}", "", runs.join(" "));
            let _ = writeln!(
                out,
                "  (each never/interval point is compared with the mean of the runs just before and after it)"
            );
        }
        for r in &references.per_batch {
            let _ = writeln!(
                out,
                "  {:<24} {:>8.0} MiB/s {:>9.0} IOPS",
                r.label(),
                r.mib_per_s,
                r.iops
            );
        }

        let _ = writeln!(out, "\nratios:");
        for r in results {
            let spec = &r.spec;
            let mut line = format!("  {}: {:.0} MiB/s", spec.describe(), r.mib_per_s());
            if let Some((label, mib)) = references.for_point(r) {
                let _ = write!(line, " = {:.2} x {label}", r.mib_per_s() / mib);
            }
            if spec.policy != Policy::Always {
                if let Some(mean) = references.primary_mib_per_s() {
                    let _ = write!(
                        line,
                        " ({:.2} x the mean of all fio(1m,qd4) runs)",
                        r.mib_per_s() / mean
                    );
                }
                if let Some(qd1) = references.find(spec.batch_bytes, false) {
                    let _ = write!(
                        line,
                        ", {:.2} x {}",
                        r.mib_per_s() / qd1.mib_per_s,
                        qd1.label()
                    );
                }
            }
            let _ = writeln!(out, "{line}");
        }
    }

    if smoke {
        return out;
    }
    let _ = writeln!(
        out,
        "\ngroup commit (durability always, one log, same batch size):"
    );
    let mut any = false;
    for single in results.iter().filter(|r| {
        r.spec.policy == Policy::Always && r.spec.partitions == 1 && r.spec.appenders == 1
    }) {
        for group in results.iter().filter(|r| {
            r.spec.policy == Policy::Always
                && r.spec.partitions == 1
                && r.spec.appenders > 1
                && r.spec.batch_bytes == single.spec.batch_bytes
        }) {
            any = true;
            let ratio = group.mib_per_s() / single.mib_per_s();
            // Group commit saves fdatasyncs, not bandwidth: the most N appenders can gain is
            // the raw write bandwidth over what 1 appender already reaches.
            let ceiling = references
                .primary_mib_per_s()
                .map(|raw| {
                    format!(
                        ", ceiling fio(1m,qd4)/1 appender = {:.2} x",
                        raw / single.mib_per_s()
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  always {}: {} appenders {:.0} MiB/s / 1 appender {:.0} MiB/s = {ratio:.2} x  (target >= 3: {}{ceiling})",
                size_label(single.spec.batch_bytes),
                group.spec.appenders,
                group.mib_per_s(),
                single.mib_per_s(),
                verdict(ratio >= 3.0)
            );
        }
    }
    if !any {
        let _ = writeln!(
            out,
            "  (no pair of always points with 1 and N appenders at P=1)"
        );
    }

    let _ = writeln!(
        out,
        "\ntarget: durability never, batches >= 64 KiB, >= 0.90 x fio(1m,qd4):"
    );
    match references.primary_mib_per_s() {
        Some(_) => {
            let mut met = true;
            let mut checked = false;
            for r in results
                .iter()
                .filter(|r| r.spec.policy == Policy::Never && r.spec.batch_bytes >= 64 * KIB)
            {
                let Some((_, reference)) = references.for_point(r) else {
                    continue;
                };
                checked = true;
                let ratio = r.mib_per_s() / reference;
                met &= ratio >= 0.90;
                let _ = writeln!(
                    out,
                    "  {}: {ratio:.2} ({})",
                    r.spec.describe(),
                    verdict(ratio >= 0.90)
                );
            }
            if checked {
                let _ = writeln!(out, "  overall: {}", verdict(met));
            } else {
                let _ = writeln!(out, "  (no never point with a batch of 64 KiB or more)");
            }
        }
        None => {
            let _ = writeln!(out, "  (no fio reference in this run)");
        }
    }
    out
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// Writes every point and every fio reference as CSV rows. In `kind=fio` rows, `policy` is
/// `direct` or `fdatasync`, `appenders` holds fio's queue depth, `appends_per_s` its IOPS and
/// `reference` the exact fio command.
/// One row of the `--csv` file: the field names are the column names. `sluice` rows are
/// points; `fio` rows are the references (their `appenders` column holds fio's iodepth,
/// `appends_per_s` its IOPS and `reference` its command). Empty cells: not applicable.
#[derive(serde::Serialize)]
struct CsvRow<'a> {
    kind: &'static str,
    policy: &'a str,
    batch: String,
    batch_bytes: u64,
    records_per_batch: Option<u64>,
    partitions: usize,
    appenders: usize,
    appends: Option<u64>,
    bytes: Option<u64>,
    wall_s: Option<f64>,
    close_ms: Option<f64>,
    mib_per_s: f64,
    appends_per_s: f64,
    records_per_s: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    p999_us: Option<f64>,
    max_us: Option<f64>,
    capped: Option<bool>,
    reference: String,
    reference_mib_per_s: Option<f64>,
    ratio: Option<f64>,
}

/// Writes the points and the fio references to `path` through the `csv` crate.
fn write_csv(path: &Path, results: &[PointResult], references: &References) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut writer =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    for r in results {
        let reference = references.for_point(r);
        writer.serialize(CsvRow {
            kind: "sluice",
            policy: r.spec.policy.name(),
            batch: size_label(r.spec.batch_bytes),
            batch_bytes: r.batch_len,
            records_per_batch: Some(r.records_per_batch),
            partitions: r.spec.partitions,
            appenders: r.spec.appenders,
            appends: Some(r.appends),
            bytes: Some(r.bytes),
            wall_s: Some(r.wall.as_secs_f64()),
            close_ms: Some(r.close.as_secs_f64() * 1000.0),
            mib_per_s: r.mib_per_s(),
            appends_per_s: r.appends_per_s(),
            records_per_s: Some(r.records_per_s()),
            p50_us: Some(r.latency_us(0.50)),
            p99_us: Some(r.latency_us(0.99)),
            p999_us: Some(r.latency_us(0.999)),
            max_us: Some(r.latency_max_us()),
            capped: Some(r.capped),
            reference_mib_per_s: reference.as_ref().map(|(_, mib)| *mib),
            ratio: reference.as_ref().map(|(_, mib)| r.mib_per_s() / mib),
            reference: reference.map(|(label, _)| label).unwrap_or_default(),
        })?;
    }
    for r in references.primary.iter().chain(&references.per_batch) {
        writer.serialize(CsvRow {
            kind: "fio",
            policy: if r.fdatasync { "fdatasync" } else { "direct" },
            batch: size_label(r.block_bytes),
            batch_bytes: r.block_bytes,
            records_per_batch: None,
            partitions: 1,
            appenders: usize::try_from(r.iodepth).unwrap_or(usize::MAX),
            appends: None,
            bytes: None,
            wall_s: None,
            close_ms: None,
            mib_per_s: r.mib_per_s,
            appends_per_s: r.iops,
            records_per_s: None,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            max_us: None,
            capped: None,
            reference: r.command.clone(),
            reference_mib_per_s: None,
            ratio: None,
        })?;
    }
    writer
        .flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

fn main() -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();

    let raw_args: Vec<String> = std::env::args().collect();
    // cargo bench passes --bench; cargo test (--benches, --all-targets) does not: smoke run.
    let bench = raw_args.iter().skip(1).any(|a| a == "--bench");
    let user_args: Vec<String> = raw_args
        .iter()
        .skip(1)
        .filter(|a| *a != "--bench")
        .cloned()
        .collect();
    let plan = if bench {
        let program = raw_args.first().cloned().unwrap_or_else(|| "append".into());
        Plan::from_args(Args::parse_from(
            std::iter::once(program).chain(user_args.iter().cloned()),
        ))?
    } else {
        Plan::smoke()
    };
    let defaults = LogConfig::default();
    ensure!(
        defaults.writes_in_flight_max == WRITES_IN_FLIGHT as usize
            && defaults.write_chunk_bytes == MIB as usize,
        "LogConfig::default() changed its write shape ({} x {} bytes): update the fio reference",
        defaults.writes_in_flight_max,
        defaults.write_chunk_bytes
    );

    std::fs::create_dir_all(&plan.dir)
        .with_context(|| format!("cannot create {}", plan.dir.display()))?;
    let environment = Environment::collect(&raw_args, &user_args, &plan.dir)?;
    if environment.filesystem.starts_with("tmpfs ") || environment.filesystem.starts_with("ramfs ")
    {
        bail!(
            "{} is on {}: O_DIRECT needs a real disk; pass --dir on one (the default is <workspace>/target/bench-data)",
            plan.dir.display(),
            environment.filesystem
        );
    }

    println!(
        "# sluice storage append bench{}",
        if plan.smoke {
            " (smoke run: not a measurement)"
        } else {
            ""
        }
    );
    println!("# {CAVEAT}");
    println!("# command:    {}", environment.command);
    if bench {
        println!("# as cargo:   {}", environment.cargo_command);
    }
    println!("# git:        {}", environment.git);
    println!(
        "# cpu:        {} ({} cores available)",
        environment.cpu, environment.cores
    );
    println!("# kernel:     {}", environment.kernel);
    println!(
        "# directory:  {} on {}",
        plan.dir.display(),
        environment.filesystem
    );
    println!(
        "# log config: LogConfig::default() (write chunks {} x {} in flight, segments up to {}), interval = {:?}",
        size_label(defaults.write_chunk_bytes as u64),
        defaults.writes_in_flight_max,
        size_label(defaults.segment_bytes_max),
        defaults.durability
    );
    println!(
        "# per point:  {} (never, interval), {} (always), at most {:.1} s of appends; close() inside the wall time",
        size_label(plan.bytes_per_point),
        size_label(plan.always_bytes_per_point),
        plan.time_cap.as_secs_f64()
    );

    let mut fio_ran = false;
    let mut references = References::default();
    if plan.fio {
        if fio::version().is_some() {
            references = run_references_before(&plan)?;
            fio_ran = true;
        } else {
            println!("# fio not found: install it with `apt-get install -y fio` (scripts/bench-storage.sh does); continuing without ratios");
        }
    }

    let points = plan.points();
    let results = run_sweep(&plan, &points, &mut references, fio_ran)?;

    if fio_ran {
        if results
            .last()
            .is_none_or(|r| r.paired_reference_mib_per_s.is_none())
        {
            run_primary(&plan, &mut references)?;
        }
        let version = references
            .primary
            .first()
            .map_or("fio", |r| r.version.as_str());
        println!("# fio commands ({version}; bs in bytes):");
        for r in references
            .primary
            .iter()
            .take(1)
            .chain(&references.per_batch)
        {
            println!("#   {}", r.command);
        }
    }
    println!();
    print!("{}", report(&results, &references, fio_ran, plan.smoke));

    if let Some(path) = &plan.csv {
        write_csv(path, &results, &references)?;
        println!("\ncsv: {}", path.display());
    }
    Ok(())
}
