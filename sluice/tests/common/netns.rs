//! A small network lab for partition tests: one network namespace per broker, each joined by
//! a veth pair to a bridge in the root namespace, and nftables rules inside a broker's
//! namespace that cut it off from chosen peers (this kernel has no netem). The test process
//! stays in the root namespace and reaches every broker over the bridge, also while one is
//! cut off from the others.
//!
//! ```text
//!   root namespace: test, clients ── bridge slb<id> 10.A.B.1/24
//!                                     ├── veth ── netns sluice-<pid>-<n>-0: broker 0 at 10.A.B.2
//!                                     ├── veth ── netns sluice-<pid>-<n>-1: broker 1 at 10.A.B.3
//!                                     └── veth ── netns sluice-<pid>-<n>-2: broker 2 at 10.A.B.4
//!   cut(0, [1, 2]): in broker 0's namespace, drop packets from and to 10.A.B.3 and 10.A.B.4
//! ```
//!
//! Needs root and the `ip` (iproute2) and `nft` (nftables) tools: [`NetLab::unavailable`]
//! says why it cannot run. Everything is removed on drop (also when the test panics), and a
//! lab left behind by a killed test process is removed by the next one.
//! Used by `sluice/tests/cluster.rs` through [`super::cluster::TestCluster`].
#![allow(dead_code, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every namespace a lab creates: `sluice-<pid>-<lab>-<broker>`.
const NAMESPACE_PREFIX: &str = "sluice-";
/// The nftables table a cut installs in a broker's namespace.
const CUT_TABLE: &str = "sluice_cut";

/// Labs created by this process, for unique names.
static LABS: AtomicU32 = AtomicU32::new(0);

/// Runs a command, returning its stdout, or an error with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `ip` with `args`, as a checked step.
fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args).map(|_| ())
}

/// Broker namespaces joined by a bridge; see the module doc.
pub struct NetLab {
    namespaces: Vec<String>,
    /// The root-namespace ends of the veth pairs.
    host_ends: Vec<String>,
    bridge: String,
    /// The second and third octets of the lab's 10.A.B.0/24 subnet.
    subnet: [u8; 2],
}

impl NetLab {
    /// Why a lab cannot be set up here (not root, `ip` or `nft` missing), or `None`.
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            return Some("network namespaces need root".into());
        }
        for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
            if let Err(e) = run(tool, &["-V"]) {
                return Some(format!("`{tool}` ({package}) is not usable: {e}"));
            }
        }
        None
    }

    /// A lab with one namespace per broker. Fails (after removing what it made) if a step
    /// fails.
    pub fn create(brokers: usize) -> Result<NetLab, String> {
        remove_stale_labs();
        let pid = std::process::id();
        let lab = LABS.fetch_add(1, Ordering::Relaxed);
        // Unique per process and lab; interface names stay within 15 bytes.
        let tag = format!("{:x}{lab}", pid % 0x10_0000);
        let subnet = [
            100 + ((pid >> 8) % 100) as u8,
            (pid as u8).wrapping_add(lab as u8),
        ];
        let mut net = NetLab {
            namespaces: Vec::new(),
            host_ends: Vec::new(),
            bridge: format!("slb{tag}"),
            subnet,
        };
        net.build(brokers, &tag, pid, lab)?;
        Ok(net)
    }

    fn build(&mut self, brokers: usize, tag: &str, pid: u32, lab: u32) -> Result<(), String> {
        let gateway = format!("{}/24", self.host_ip());
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &gateway, "dev", &self.bridge])?;
        ip(&["link", "set", &self.bridge, "up"])?;
        for broker in 0..brokers {
            let namespace = format!("{NAMESPACE_PREFIX}{pid}-{lab}-{broker}");
            ip(&["netns", "add", &namespace])?;
            self.namespaces.push(namespace.clone());
            let (host_end, inner_end) = (format!("slh{tag}{broker}"), format!("sln{tag}{broker}"));
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &inner_end,
            ])?;
            self.host_ends.push(host_end.clone());
            ip(&["link", "set", &inner_end, "netns", &namespace])?;
            ip(&["link", "set", &host_end, "master", &self.bridge, "up"])?;
            let address = format!("{}/24", self.broker_ip(broker));
            ip(&["-n", &namespace, "addr", "add", &address, "dev", &inner_end])?;
            ip(&["-n", &namespace, "link", "set", &inner_end, "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The root namespace's address on the bridge (where the test's clients come from).
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet[0], self.subnet[1], 1)
    }

    /// Broker `i`'s address.
    pub fn broker_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet[0], self.subnet[1], 2 + i as u8)
    }

    /// The command prefix that runs a program in broker `i`'s namespace.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.namespaces[i].clone(),
        ]
    }

    /// Cuts broker `i` off from `peers`: its namespace drops every packet from or to their
    /// addresses (the root namespace, where clients run, still reaches it). Replaces an
    /// earlier cut of `i`.
    pub fn cut(&self, i: usize, peers: &[usize]) -> Result<(), String> {
        self.heal(i)?;
        let addresses = peers
            .iter()
            .map(|&p| self.broker_ip(p).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let rules = format!(
            "table inet {CUT_TABLE} {{\n\
             \tchain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {addresses} }} drop; }}\n\
             \tchain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {addresses} }} drop; }}\n\
             }}\n"
        );
        let mut args = self.exec_prefix(i);
        args.extend(["nft".into(), "-f".into(), "-".into()]);
        let mut child = Command::new(&args[0])
            .args(&args[1..])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .map_err(|e| format!("nft stdin: {e}"))?;
        let output = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "nft -f failed: {}\n{rules}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// Whether a TCP connection to `addr` opens within 2 s from broker `from`'s namespace
    /// (`None`: from the root namespace, where the test runs). Checks a cut does what it
    /// should (uses bash's /dev/tcp and coreutils' timeout).
    pub fn can_connect(&self, from: Option<usize>, addr: std::net::SocketAddr) -> bool {
        let script = format!(
            "timeout 2 bash -c '</dev/tcp/{}/{}'",
            addr.ip(),
            addr.port()
        );
        let mut command = match from {
            Some(i) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &self.namespaces[i], "bash", "-c", &script]);
                command
            }
            None => {
                let mut command = Command::new("bash");
                command.args(["-c", &script]);
                command
            }
        };
        command.status().is_ok_and(|status| status.success())
    }

    /// Removes the cut of broker `i`, if any.
    pub fn heal(&self, i: usize) -> Result<(), String> {
        let namespace = &self.namespaces[i];
        let tables = run("ip", &["netns", "exec", namespace, "nft", "list", "tables"])?;
        if tables.contains(CUT_TABLE) {
            run(
                "ip",
                &[
                    "netns", "exec", namespace, "nft", "delete", "table", "inet", CUT_TABLE,
                ],
            )?;
        }
        Ok(())
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // A namespace's devices go with it only once nothing holds it any more, which may be
        // later: the veth pairs are deleted explicitly (deleting one end deletes both).
        for host_end in &self.host_ends {
            if let Err(e) = ip(&["link", "del", host_end]) {
                eprintln!("netlab cleanup: {e}");
            }
        }
        for namespace in &self.namespaces {
            if let Err(e) = ip(&["netns", "del", namespace]) {
                eprintln!("netlab cleanup: {e}");
            }
        }
        if let Err(e) = ip(&["link", "del", &self.bridge]) {
            eprintln!("netlab cleanup: {e}");
        }
    }
}

/// Removes namespaces and bridges of labs whose test process is gone (killed before its
/// drop could run).
fn remove_stale_labs() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NAMESPACE_PREFIX) else {
            continue;
        };
        let mut parts = rest.split('-').map(|p| p.parse::<u32>().ok());
        let (Some(Some(pid)), Some(Some(lab))) = (parts.next(), parts.next()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
            let tag = format!("{:x}{lab}", pid % 0x10_0000);
            let _ = ip(&["link", "del", &format!("slb{tag}")]);
            if let Some(broker) = rest.rsplit('-').next() {
                let _ = ip(&["link", "del", &format!("slh{tag}{broker}")]);
            }
        }
    }
}
