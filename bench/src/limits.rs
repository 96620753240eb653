//! Hardware references measured in the same run (`--with-limits`), because the machines are
//! shared and noisy and only ratios taken in one run compare:
//!
//! - disk: fio's sequential O_DIRECT write bandwidth (io_uring, 1 MiB blocks, 8 in flight,
//!   time-based over a 1 GiB file) in the broker's data directory, i.e. on the same
//!   filesystem; and, when a point uses `--durability always`, the same with an fdatasync
//!   after every 256 KiB write at queue depth 1;
//! - network: loopback TCP bandwidth of one stream, by iperf3 when installed (Debian's
//!   package: `scripts/bench-curves.sh` installs it), else by a built-in probe (one thread
//!   writes 128 KiB buffers to another over 127.0.0.1).
//!
//! Each measurement blocks the calling thread for `--limits-duration`; they run before the
//! points, never alongside them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use crate::fio::SeqWrite;

/// File fio goes over (again and again, time-based): 1 GiB, larger than any write cache of a
/// virtual disk we have seen, small enough for any data disk.
const FIO_FILE_BYTES: u64 = 1 << 30;

/// The references of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Limits {
    /// Sequential O_DIRECT write bandwidth of the data directory's filesystem.
    pub disk: Option<Bandwidth>,
    /// The same with an fdatasync after every write.
    pub disk_fsync: Option<Bandwidth>,
    /// Loopback TCP bandwidth, one stream.
    pub loopback: Option<Bandwidth>,
    /// What could not be measured, and why.
    pub problems: Vec<String>,
}

/// One measured bandwidth.
#[derive(Debug, Clone, Serialize)]
pub struct Bandwidth {
    /// What measured it (`fio-3.33`, `iperf3 3.12`, `built-in probe`).
    pub tool: String,
    /// The exact command or method.
    pub method: String,
    /// Bytes per second.
    pub bytes_per_s: f64,
}

impl Bandwidth {
    /// MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        self.bytes_per_s / 1e6
    }
}

/// Measures every reference; failures are recorded, never fatal.
pub fn measure(dir: &Path, duration: Duration, with_fsync: bool) -> Limits {
    let mut limits = Limits::default();
    match fio(dir, 1 << 20, 8, false, duration) {
        Ok(bandwidth) => limits.disk = Some(bandwidth),
        Err(error) => limits.problems.push(format!("disk: {error:#}")),
    }
    if with_fsync {
        match fio(dir, 256 << 10, 1, true, duration) {
            Ok(bandwidth) => limits.disk_fsync = Some(bandwidth),
            Err(error) => limits
                .problems
                .push(format!("disk with fdatasync: {error:#}")),
        }
    }
    let loopback = if tool_version("iperf3", "--version").is_some() {
        iperf3(duration).or_else(|error| {
            limits.problems.push(format!(
                "iperf3 failed ({error:#}); used the built-in probe"
            ));
            tcp_probe(duration)
        })
    } else {
        limits.problems.push(
            "iperf3 is not installed (apt-get install iperf3): loopback measured by the \
             built-in probe"
                .into(),
        );
        tcp_probe(duration)
    };
    match loopback {
        Ok(bandwidth) => limits.loopback = Some(bandwidth),
        Err(error) => limits.problems.push(format!("loopback: {error:#}")),
    }
    limits
}

/// The first line of `tool flag`, if the tool runs.
fn tool_version(tool: &str, flag: &str) -> Option<String> {
    let output = Command::new(tool).arg(flag).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().next().map(|line| line.trim().to_owned())
}

/// fio's sequential O_DIRECT io_uring write under `base`, time-based over a 1 GiB file for
/// `duration` (through the shared runner, [`crate::fio`]).
fn fio(
    base: &Path,
    block_bytes: u64,
    iodepth: u32,
    fdatasync: bool,
    duration: Duration,
) -> Result<Bandwidth> {
    let run = crate::fio::run(
        base,
        SeqWrite {
            block_bytes,
            iodepth,
            fdatasync,
            size_bytes: FIO_FILE_BYTES,
            runtime: duration,
            time_based: true,
        },
    )?;
    Ok(Bandwidth {
        tool: run.version,
        method: run.command,
        bytes_per_s: run.bytes_per_s,
    })
}

/// iperf3 over loopback, one stream, for `duration`: a one-off server (`-1`) on a free port,
/// started again if the client found it not yet listening.
fn iperf3(duration: Duration) -> Result<Bandwidth> {
    let version = tool_version("iperf3", "--version").unwrap_or_else(|| "iperf3".into());
    let port = TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port()
        .to_string();
    let server_args = ["-s", "-1", "-B", "127.0.0.1", "-p", &port];
    let start_server = || {
        Command::new("iperf3")
            .args(server_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the iperf3 server")
    };
    let seconds = duration.as_secs().max(1).to_string();
    let client_args = ["-c", "127.0.0.1", "-p", &port, "-t", &seconds, "-J"];
    let method = format!(
        "iperf3 {} & iperf3 {}",
        server_args.join(" "),
        client_args.join(" ")
    );
    let mut server = start_server()?;
    let mut result = None;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300)); // let the server listen
        let output = Command::new("iperf3")
            .args(client_args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run the iperf3 client")?;
        result = iperf3_received_bps(&output.stdout);
        if result.is_some() {
            break;
        }
        if server.try_wait()?.is_some() {
            server = start_server()?;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let Some(bits_per_s) = result else {
        bail!("{method} gave no result");
    };
    Ok(Bandwidth {
        tool: version,
        method,
        bytes_per_s: bits_per_s / 8.0,
    })
}

/// `end.sum_received.bits_per_second` of iperf3's JSON output.
pub fn iperf3_received_bps(stdout: &[u8]) -> Option<f64> {
    let json: serde_json::Value = serde_json::from_slice(stdout).ok()?;
    json.get("end")?
        .get("sum_received")?
        .get("bits_per_second")?
        .as_f64()
}

/// Size of each write of the built-in probe.
const PROBE_WRITE_BYTES: usize = 128 * 1024;

/// Loopback TCP bandwidth without iperf3: a writer thread sends 128 KiB buffers to a reader
/// thread for `duration`; bandwidth is what the reader received over its elapsed time.
pub fn tcp_probe(duration: Duration) -> Result<Bandwidth> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let reader = std::thread::Builder::new()
        .name("tcp-probe-read".into())
        .spawn(move || -> std::io::Result<(u64, Duration)> {
            let (mut stream, _) = listener.accept()?;
            let mut buffer = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            let mut start = None;
            loop {
                let n = stream.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                start.get_or_insert_with(Instant::now);
                total += n as u64;
            }
            Ok((total, start.map_or(Duration::ZERO, |s| s.elapsed())))
        })?;
    let mut stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let buffer = vec![0x5au8; PROBE_WRITE_BYTES];
    let start = Instant::now();
    while start.elapsed() < duration {
        stream.write_all(&buffer)?;
    }
    drop(stream);
    let (bytes, elapsed) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the probe's reader panicked"))??;
    ensure!(elapsed > Duration::ZERO, "the probe moved no data");
    Ok(Bandwidth {
        tool: "built-in probe".into(),
        method: format!(
            "one TCP stream over 127.0.0.1, {} KiB writes, {:.1} s",
            PROBE_WRITE_BYTES / 1024,
            duration.as_secs_f64()
        ),
        bytes_per_s: bytes as f64 / elapsed.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The field read from iperf3's JSON (fio's: [`crate::fio`]).
    #[test]
    fn parses_tool_output() {
        let iperf = br#"{"start": {}, "end": {"sum_sent": {"bits_per_second": 4.0e10},
            "sum_received": {"bits_per_second": 3.72e10}}}"#;
        assert_eq!(iperf3_received_bps(iperf), Some(3.72e10));
        assert_eq!(iperf3_received_bps(b"{}"), None);
    }

    /// The built-in probe moves data over loopback.
    #[test]
    fn tcp_probe_measures_something() {
        let bandwidth = tcp_probe(Duration::from_millis(100)).unwrap();
        assert!(bandwidth.bytes_per_s > 1e6, "{bandwidth:?}");
        assert_eq!(bandwidth.tool, "built-in probe");
    }
}
