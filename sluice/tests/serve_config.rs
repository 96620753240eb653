//! `sluice serve` takes its settings from flags, environment variables and a config file, in
//! that order of precedence, and refuses bad values with a clear message.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Starts `sluice serve` with `args` and `env`, returns the address it reports, then stops it.
fn listening_address(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("serve")
        .args(args)
        .args(["--log", "warn"])
        .stdout(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success(), "SIGTERM must exit 0");
    line.split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .to_string()
}

/// The config file sets values, the environment overrides it, a flag overrides both.
#[test]
fn flags_beat_environment_beat_config_file() {
    let dir = common::data_dir();
    let data = dir.path().join("data");
    let conf = dir.path().join("sluice.conf");
    let (p1, p2, p3) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    std::fs::write(
        &conf,
        format!(
            "# test config\nlisten = \"127.0.0.1:{p1}\"\ndata_dir = \"{}\"\ncores = 1\n",
            data.display()
        ),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    assert_eq!(
        listening_address(&["--config", conf], &[]),
        format!("127.0.0.1:{p1}")
    );
    assert!(
        data.join("topics.meta").exists() || data.is_dir(),
        "the data directory comes from the file"
    );
    let env_listen = format!("127.0.0.1:{p2}");
    assert_eq!(
        listening_address(
            &["--config", conf],
            &[("SLUICE_LISTEN", env_listen.as_str())]
        ),
        env_listen
    );
    let flag_listen = format!("127.0.0.1:{p3}");
    assert_eq!(
        listening_address(
            &["--config", conf, "--listen", flag_listen.as_str()],
            &[("SLUICE_LISTEN", env_listen.as_str())]
        ),
        flag_listen
    );
}

/// Bad settings stop the broker at once with exit code 2 and a message naming the problem.
#[test]
fn bad_settings_are_refused() {
    for (args, expected) in [
        (
            vec!["--default-durability", "sometimes"],
            "unknown durability",
        ),
        (vec!["--max-frame-bytes", "10"], "--max-frame-bytes"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(common::data_dir().path())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// On tmpfs (no O_DIRECT) the broker refuses to start instead of silently buffering.
#[test]
fn tmpfs_data_directory_is_refused() {
    if !std::path::Path::new("/dev/shm").is_dir() {
        eprintln!("no /dev/shm; nothing to check");
        return;
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("O_DIRECT"), "{stderr}");
}

/// A config file is TOML; a key that is not a setting stops the broker with exit code 2 and
/// a message naming the key (a typo never silently falls back to a default).
#[test]
fn unknown_config_keys_are_refused() {
    let dir = common::data_dir();
    let conf = dir.path().join("sluice.toml");
    std::fs::write(&conf, "lisen = \"127.0.0.1:0\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("lisen"), "{stderr}");
}
