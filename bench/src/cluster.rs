//! A local cluster started by the harness (`--cluster N`): N `sluice serve --cores 1`
//! processes on 127.0.0.1, every one a controller voter (the same `--controller-voters` list on
//! all), each pinned with `taskset -c` to one CPU (broker i on CPU i mod the CPUs this process
//! may use), with fresh data directories under one run directory on the real disk. The
//! `failover` scenario kills (kill -9) and restarts single brokers through it; [`crate::broker`]
//! owns it for the run and stops it at the end.
//!
//! All brokers are spawned before any readiness line is awaited: a broker prints `sluice
//! listening on ...` only after it registered with the controller quorum, which needs a
//! majority of the voters running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::broker::{is_tmpfs, spawn, STOP_TIMEOUT};

/// One broker of the cluster.
#[derive(Debug)]
struct Node {
    id: u32,
    /// `127.0.0.1:PORT` of its client listener (fixed, so a restart keeps it).
    listen: String,
    /// The CPU it is pinned to.
    cpu: usize,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// `None` while killed.
    child: Option<Child>,
}

/// A running local cluster.
#[derive(Debug)]
pub struct LocalCluster {
    binary: PathBuf,
    /// The run directory: every broker's data directory and log.
    dir: PathBuf,
    keep_data: bool,
    voters: String,
    session_timeout_ms: u64,
    nodes: Vec<Node>,
}

impl LocalCluster {
    /// Starts `size` brokers of `binary` with fresh data under `base`, and waits until every
    /// one is ready.
    pub fn start(
        binary: &Path,
        base: &Path,
        size: u32,
        keep_data: bool,
        session_timeout_ms: u64,
    ) -> Result<LocalCluster> {
        ensure!(
            binary.is_file(),
            "the sluice binary {} does not exist (build it with `cargo build --release --bin \
             sluice`, or pass --sluice-bin)",
            binary.display()
        );
        ensure!(
            Command::new("taskset")
                .arg("-V")
                .output()
                .is_ok_and(|out| out.status.success()),
            "--cluster pins each broker to a CPU with `taskset` (util-linux), which is missing"
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
            .prefix("cluster-")
            .tempdir_in(base)
            .with_context(|| format!("cannot create a directory in {}", base.display()))?
            .keep();
        let ports = free_ports(2 * size as usize)?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let voters = (0..size as usize)
            .map(|i| format!("{i}@127.0.0.1:{}", ports[size as usize + i]))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..size as usize)
            .map(|i| Node {
                id: i as u32,
                listen: format!("127.0.0.1:{}", ports[i]),
                cpu: i % cpus,
                data_dir: dir.join(format!("b{i}")),
                log_path: dir.join(format!("b{i}.log")),
                child: None,
            })
            .collect();
        let mut cluster = LocalCluster {
            binary: binary.to_path_buf(),
            dir,
            keep_data,
            voters,
            session_timeout_ms,
            nodes,
        };
        let mut starting = Vec::new();
        for node in &cluster.nodes {
            starting.push(spawn(cluster.command(node), &node.log_path)?);
        }
        for (node, start) in cluster.nodes.iter_mut().zip(starting) {
            let (child, _, _) = start
                .wait()
                .with_context(|| format!("broker {} of the cluster did not start", node.id))?;
            node.child = Some(child);
        }
        Ok(cluster)
    }

    /// The `taskset -c CPU sluice serve ...` command of a node.
    fn command(&self, node: &Node) -> Command {
        let mut command = Command::new("taskset");
        command
            .args(["-c", &node.cpu.to_string()])
            .arg(&self.binary)
            .arg("serve")
            .args(["--broker-id", &node.id.to_string()])
            .args(["--controller-voters", &self.voters])
            .args(["--listen", &node.listen])
            .args(["--cores", "1", "--log", "warn"])
            .args([
                "--broker-session-timeout-ms",
                &self.session_timeout_ms.to_string(),
            ])
            .arg("--data-dir")
            .arg(&node.data_dir);
        command
    }

    /// The bootstrap list: every broker's address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|node| node.listen.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The pids of the running brokers (for CPU time; a killed one is left out).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|node| node.child.as_ref().map(Child::id))
            .collect()
    }

    /// The log file of broker `id`.
    pub fn log_path(&self, id: u32) -> Option<&Path> {
        self.node(id).ok().map(|node| node.log_path.as_path())
    }

    /// One line for the report.
    pub fn description(&self) -> String {
        let cpus: Vec<String> = self.nodes.iter().map(|n| n.cpu.to_string()).collect();
        format!(
            "{} local brokers: `taskset -c CPU {} serve --cores 1 --controller-voters {} \
             --broker-session-timeout-ms {}` on CPUs {} (broker 0, 1, ...), data in {}",
            self.nodes.len(),
            self.binary.display(),
            self.voters,
            self.session_timeout_ms,
            cpus.join(","),
            self.dir.display()
        )
    }

    fn node(&self, id: u32) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .with_context(|| format!("no broker {id} in the cluster"))
    }

    fn node_mut(&mut self, id: u32) -> Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|node| node.id == id)
            .with_context(|| format!("no broker {id} in the cluster"))
    }

    /// Kills broker `id` with SIGKILL and reaps it.
    pub fn kill(&mut self, id: u32) -> Result<()> {
        let node = self.node_mut(id)?;
        let mut child = node
            .child
            .take()
            .with_context(|| format!("broker {id} is not running"))?;
        child
            .kill()
            .with_context(|| format!("cannot kill broker {id}"))?;
        child.wait()?;
        Ok(())
    }

    /// Restarts a killed broker `id` on its address and data directory, and waits until it is
    /// ready (registered with the quorum).
    pub fn restart(&mut self, id: u32) -> Result<()> {
        let node = self.node(id)?;
        ensure!(node.child.is_none(), "broker {id} is running");
        let start = spawn(self.command(node), &node.log_path)?;
        let (child, _, _) = start
            .wait()
            .with_context(|| format!("broker {id} did not restart"))?;
        self.node_mut(id)?.child = Some(child);
        Ok(())
    }

    /// Fails when a broker that should run has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                if let Some(status) = child.try_wait()? {
                    node.child = None;
                    bail!(
                        "broker {} exited ({status}); its log is {}",
                        node.id,
                        node.log_path.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// Stops every broker (SIGTERM to all, then kill -9 after [`STOP_TIMEOUT`]) and removes
    /// the data unless kept.
    pub fn stop(&mut self) -> Result<()> {
        let mut children: Vec<(u32, Child)> = self
            .nodes
            .iter_mut()
            .filter_map(|node| Some((node.id, node.child.take()?)))
            .collect();
        for (_, child) in &children {
            let pid = i32::try_from(child.id()).context("pid out of range")?;
            // SAFETY: a signal to our own child process; no memory effects.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut problems = Vec::new();
        for (id, child) in &mut children {
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
            match status {
                Some(status) if status.success() => {}
                Some(status) => problems.push(format!("broker {id} exited with {status}")),
                None => problems.push(format!("broker {id} ignored SIGTERM")),
            }
        }
        if !self.keep_data {
            std::fs::remove_dir_all(&self.dir)
                .with_context(|| format!("cannot remove {}", self.dir.display()))?;
        }
        ensure!(problems.is_empty(), "{}", problems.join("; "));
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let mut killed = false;
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
                killed = true;
            }
        }
        if killed && !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `count` distinct free loopback ports: ephemeral listeners, all held until every port is
/// chosen, then closed (a port could in principle be taken again before a broker binds it;
/// the brokers retry a busy bind for `--bind-retry-ms`, and a start that still fails says so).
fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot find free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Free ports are distinct and bindable right after.
    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(6).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 6);
        for port in ports {
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }
}
