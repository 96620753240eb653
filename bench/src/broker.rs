//! The broker under test: by default a `sluice serve` child process that this harness starts
//! on an ephemeral loopback port with a fresh data directory on the real disk, and stops with
//! SIGTERM at the end; with `--broker host:port`, a running broker (its pid, for CPU time, is
//! given or looked up from the port in `/proc`).
//!
//! Finding the binary: `--sluice-bin`, else `sluice` next to the current executable (which is
//! the case for `sluice bench` itself and for `target/*/sluice-bench`), else the workspace's
//! `target/release/sluice` or `target/debug/sluice`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::args::BrokerTarget;
use crate::cluster::LocalCluster;

/// A cluster started by the harness, shared with the `failover` scenario (which kills and
/// restarts its brokers); the lock is taken only for those rare operations, never per message.
pub type SharedCluster = Arc<Mutex<LocalCluster>>;

/// Longest wait for the readiness line of a started broker.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait for a clean exit after SIGTERM before kill -9.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `statfs` magic number of tmpfs, where O_DIRECT fails.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The broker of a run.
#[derive(Debug)]
pub struct Broker {
    /// Address for the client (`host:port`).
    pub address: String,
    /// Process ids, when known (for CPU time; summed over a cluster's brokers).
    pub pids: Vec<u32>,
    /// The cluster this harness started (`--cluster`).
    pub cluster: Option<SharedCluster>,
    /// Shards the broker reported (started broker only).
    pub shards: Option<u32>,
    /// Data directory (started broker only).
    pub data_dir: Option<PathBuf>,
    /// How the broker was obtained, for the report.
    pub description: String,
    child: Option<Child>,
    keep_data: bool,
    remove_dir: Option<PathBuf>,
}

impl Broker {
    /// Starts a broker or attaches to the given one.
    pub fn open(target: &BrokerTarget) -> Result<Broker> {
        match target {
            BrokerTarget::External { address, pid } => {
                let pids: Vec<u32> = match pid {
                    Some(pid) => vec![*pid],
                    None => address.split(',').filter_map(pid_listening_on).collect(),
                };
                let known = pids.len() == address.split(',').count();
                Ok(Broker {
                    address: address.clone(),
                    pids: if known { pids.clone() } else { Vec::new() },
                    cluster: None,
                    shards: None,
                    data_dir: None,
                    description: format!(
                        "external broker(s) at {address} (pids {})",
                        if known {
                            pids.iter()
                                .map(u32::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        } else {
                            "not all found: no broker CPU figures".into()
                        }
                    ),
                    child: None,
                    keep_data: true,
                    remove_dir: None,
                })
            }
            BrokerTarget::Own {
                binary,
                cores,
                spin_us,
                data_dir,
                keep_data,
            } => {
                let binary = match binary {
                    Some(binary) => binary.clone(),
                    None => find_sluice_binary()?,
                };
                let base = data_dir.clone().unwrap_or_else(default_data_base);
                Broker::start(&binary, &base, *cores, *spin_us, *keep_data)
            }
            BrokerTarget::Cluster {
                binary,
                size,
                data_dir,
                keep_data,
                session_timeout_ms,
            } => {
                let binary = match binary {
                    Some(binary) => binary.clone(),
                    None => find_sluice_binary()?,
                };
                let base = data_dir.clone().unwrap_or_else(default_data_base);
                let cluster =
                    LocalCluster::start(&binary, &base, *size, *keep_data, *session_timeout_ms)?;
                Ok(Broker {
                    address: cluster.bootstrap(),
                    pids: cluster.pids(),
                    description: cluster.description(),
                    shards: Some(*size),
                    data_dir: Some(base),
                    cluster: Some(Arc::new(Mutex::new(cluster))),
                    child: None,
                    keep_data: *keep_data,
                    remove_dir: None,
                })
            }
        }
    }

    /// Starts `binary serve --cores cores --spin-before-park-us spin_us` with a fresh data
    /// directory under `base`.
    fn start(
        binary: &Path,
        base: &Path,
        cores: usize,
        spin_us: u64,
        keep_data: bool,
    ) -> Result<Broker> {
        ensure!(
            binary.is_file(),
            "the sluice binary {} does not exist (build it with `cargo build --release --bin \
             sluice`, or pass --sluice-bin)",
            binary.display()
        );
        std::fs::create_dir_all(base)
            .with_context(|| format!("cannot create {}", base.display()))?;
        if is_tmpfs(base) {
            bail!(
                "{} is on tmpfs, which has no O_DIRECT: give --data-dir on a real disk",
                base.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(base)
            .with_context(|| format!("cannot create a directory in {}", base.display()))?
            .keep();
        let log_path = dir.join("broker.log");
        let data = dir.join("data");
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--log", "warn"])
            .args(["--cores", &cores.to_string()])
            .args(["--spin-before-park-us", &spin_us.to_string()]);
        let (child, address, shards) = spawn_ready(command, &log_path)?;
        let pid = child.id();
        Ok(Broker {
            description: format!(
                "{} serve --cores {cores} --spin-before-park-us {spin_us} ({shards} shards), \
                 data in {}",
                binary.display(),
                data.display()
            ),
            address,
            pids: vec![pid],
            cluster: None,
            shards: Some(shards),
            data_dir: Some(data),
            child: Some(child),
            keep_data,
            remove_dir: Some(dir),
        })
    }

    /// The pids to sample for broker CPU now (a cluster's brokers change pid when the
    /// `failover` scenario restarts them).
    pub fn current_pids(&self) -> Vec<u32> {
        match &self.cluster {
            Some(cluster) => cluster.lock().map_or_else(|_| Vec::new(), |c| c.pids()),
            None => self.pids.clone(),
        }
    }

    /// Fails when a started broker has exited (an external one is assumed alive).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(cluster) = &self.cluster {
            let mut cluster = cluster
                .lock()
                .map_err(|_| anyhow::anyhow!("the cluster lock is poisoned"))?;
            return cluster.check_alive();
        }
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "the broker exited ({status}); its log is in {}",
                    self.remove_dir.as_ref().map_or_else(
                        || "?".into(),
                        |d| d.join("broker.log").display().to_string()
                    )
                );
            }
        }
        Ok(())
    }

    /// Stops a started broker (SIGTERM, then kill -9 after [`STOP_TIMEOUT`]) and removes its
    /// data unless kept. Does nothing for an external broker.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(cluster) = self.cluster.take() {
            let mut cluster = cluster
                .lock()
                .map_err(|_| anyhow::anyhow!("the cluster lock is poisoned"))?;
            return cluster.stop();
        }
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        // SAFETY: a signal to our own child process; no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(dir) = self.remove_dir.take() {
            if !self.keep_data {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("cannot remove {}", dir.display()))?;
            }
        }
        match status {
            Some(status) if status.success() => Ok(()),
            Some(status) => bail!("the broker exited with {status} after SIGTERM"),
            None => bail!("the broker did not stop within {STOP_TIMEOUT:?} of SIGTERM"),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(dir) = self.remove_dir.take() {
                if !self.keep_data {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
    }
}

/// Spawns a `sluice serve` command with its standard error appended to `log_path` and waits
/// (up to [`START_TIMEOUT`]) for its readiness line: [`spawn`], then [`Starting::wait`].
pub fn spawn_ready(command: Command, log_path: &Path) -> Result<(Child, String, u32)> {
    spawn(command, log_path)?.wait()
}

/// A broker process started and not yet known to be ready.
#[derive(Debug)]
pub struct Starting {
    child: Child,
    ready: std::sync::mpsc::Receiver<String>,
    log_path: PathBuf,
}

/// Spawns a `sluice serve` command with its standard error appended to `log_path`; its
/// standard output is read on a thread, which hands over the first line and then keeps
/// draining, so the broker never blocks on a full pipe. Several can be spawned before any is
/// waited for (a cluster's brokers are ready only once a majority of voters runs).
pub fn spawn(mut command: Command, log_path: &Path) -> Result<Starting> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot start {:?}", command.get_program()))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("broker-stdout".into())
        .spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = ready_tx.send(line);
            let mut sink = String::new();
            while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        })
        .context("cannot spawn a thread")?;
    Ok(Starting {
        child,
        ready,
        log_path: log_path.to_path_buf(),
    })
}

impl Starting {
    /// Waits (up to [`START_TIMEOUT`]) for the readiness line; returns the child, the address
    /// it listens on and its shard count. The child is killed when it does not become ready.
    pub fn wait(self) -> Result<(Child, String, u32)> {
        let Starting {
            mut child,
            ready,
            log_path,
        } = self;
        let line = match ready.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the broker printed no readiness line within {START_TIMEOUT:?}; see {}",
                    log_path.display()
                );
            }
        };
        let Some((address, shards)) = parse_ready_line(&line) else {
            let _ = child.kill();
            let status = child.wait().ok();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!(
                "the broker did not start ({status:?}): {}{}\n(ulimit -l too low for io_uring? \
                 log: {})",
                line.trim(),
                log.lines().rev().take(5).collect::<Vec<_>>().join("\n"),
                log_path.display()
            );
        };
        Ok((child, address, shards))
    }
}

/// `sluice listening on 127.0.0.1:40123 (2 shards)` → (`127.0.0.1:40123`, 2).
pub fn parse_ready_line(line: &str) -> Option<(String, u32)> {
    let rest = line.trim().strip_prefix("sluice listening on ")?;
    let (address, rest) = rest.split_once(' ')?;
    let shards = rest
        .strip_prefix('(')?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    address.parse::<std::net::SocketAddr>().ok()?;
    Some((address.to_owned(), shards))
}

/// The `sluice` binary: next to the current executable, else in the workspace's target
/// directory (release first).
pub fn find_sluice_binary() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("sluice"));
            // Integration tests and examples live one level down (target/debug/deps).
            if let Some(parent) = dir.parent() {
                candidates.push(parent.join("sluice"));
            }
        }
    }
    let root = workspace_root();
    candidates.push(root.join("target/release/sluice"));
    candidates.push(root.join("target/debug/sluice"));
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no sluice binary found (looked at {}); build it with `cargo build --release \
                 --bin sluice` or pass --sluice-bin",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// The workspace root this crate was built in.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.to_path_buf(), Path::to_path_buf)
}

/// `<workspace>/target/bench-data`: on the build's disk, never tmpfs here.
pub fn default_data_base() -> PathBuf {
    workspace_root().join("target/bench-data")
}

/// True when `path` is on tmpfs.
pub fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `statfs` writes into the zeroed struct we own; the path is a valid C string.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        if libc::statfs(c_path.as_ptr(), &mut stat) != 0 {
            return false;
        }
        #[allow(clippy::unnecessary_cast)]
        let kind = stat.f_type as i64;
        kind == TMPFS_MAGIC
    }
}

/// The pid of the process listening on `address`'s port on this machine, from the socket
/// inode in `/proc/net/tcp{,6}` and the `/proc/<pid>/fd` links (needs permission to read
/// them: same user or root). `None` when not found.
pub fn pid_listening_on(address: &str) -> Option<u32> {
    let port: u16 = address.rsplit(':').next()?.parse().ok()?;
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... inode (field 9); st 0A = LISTEN.
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let own = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes
                    .iter()
                    .any(|inode| target.as_os_str() == inode.as_str())
                {
                    return Some(pid);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The broker's readiness line yields its address and shard count; other lines, or an
    /// address that does not parse, yield nothing.
    #[test]
    fn readiness_line() {
        assert_eq!(
            parse_ready_line("sluice listening on 127.0.0.1:40123 (2 shards)\n"),
            Some(("127.0.0.1:40123".into(), 2))
        );
        assert_eq!(parse_ready_line("error: no"), None);
        assert_eq!(
            parse_ready_line("sluice listening on nowhere (2 shards)"),
            None
        );
    }

    /// A listening socket of this process is found through /proc (this process is skipped,
    /// so a child is not needed: the lookup must at least not find a wrong pid).
    #[test]
    fn own_listener_is_not_mistaken_for_a_broker() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        assert_eq!(pid_listening_on(&address), None);
    }

    /// A precondition of the harness, checked where it runs: the workspace (whose target/
    /// holds the brokers' data, opened with O_DIRECT) is on a real disk, not tmpfs; a machine
    /// laid out otherwise fails here with a clear name rather than with obscure I/O errors in
    /// the benches.
    #[test]
    fn target_dir_is_not_tmpfs() {
        assert!(!is_tmpfs(&workspace_root()));
    }
}
