//! A full disk (ENOSPC) must surface as a clean error and never corrupt the log: durable data
//! stays readable, the log reopens on the still-full filesystem, and appends resume once space
//! is freed. Runs on a small ext4 image loop-mounted under target/. Needs root and loop
//! devices: when not root the tests are skipped with a message, unless
//! `SLUICE_REQUIRE_DISK_FULL` is set (CI sets it), which makes them fail; as root a filesystem
//! that cannot be set up fails them, so a broken CI machine never passes silently.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{batch, run, test_dir, values, view};
use storage::{now_ms, Durability, Log, LogConfig, StorageError};

/// Runs a command; `Err` with its output when it cannot start or fails.
fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A small ext4 filesystem on a loop device, mounted under target/. Dropping it unmounts the
/// filesystem and detaches the loop device before the image directory is removed.
struct SmallFs {
    mnt: PathBuf,
    loop_device: Option<String>,
    mounted: bool,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    /// The filesystem for the test `test`, or `None` when not running as root (the test is
    /// skipped, saying why). As root, a filesystem that cannot be set up fails the test.
    fn for_test(test: &str) -> Option<SmallFs> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if uid != 0 {
            assert!(
                std::env::var_os("SLUICE_REQUIRE_DISK_FULL").is_none(),
                "{test}: not root (uid {uid}), but SLUICE_REQUIRE_DISK_FULL is set: run it as \
                 root (privileged, or with --device /dev/loop-control --cap-add SYS_ADMIN)"
            );
            eprintln!(
                "SKIPPED {test}: not root (uid {uid}): mounting a loop filesystem needs root"
            );
            return None;
        }
        match SmallFs::mount(8 << 20) {
            Ok(fs) => Some(fs),
            Err(reason) => panic!(
                "{test}: running as root, but the loop filesystem cannot be set up \
                 (mkfs.ext4 from e2fsprogs, losetup and a free loop device are needed): {reason}"
            ),
        }
    }

    /// Creates and mounts an ext4 image of `size_bytes`; `Err` says why it could not.
    fn mount(size_bytes: u64) -> Result<SmallFs, String> {
        let dir = test_dir();
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(size_bytes))
            .map_err(|e| e.to_string())?;
        let img_arg = img.to_str().unwrap();
        // 4 KiB blocks like a real disk, no blocks reserved for root (we are root).
        sh("mkfs.ext4", &["-q", "-F", "-b", "4096", "-m", "0", img_arg])?;
        let mut fs = SmallFs {
            mnt,
            loop_device: None,
            mounted: false,
            _dir: dir,
        };
        fs.loop_device = Some(sh("losetup", &["--find", "--show", img_arg])?);
        let device = fs.loop_device.clone().unwrap();
        sh("mount", &[&device, fs.mnt.to_str().unwrap()])?;
        fs.mounted = true;
        Ok(fs)
    }

    fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        if self.mounted {
            let mnt = self.mnt.to_str().unwrap();
            let mut result = sh("umount", &[mnt]);
            for _ in 0..20 {
                if result.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                result = sh("umount", &[mnt]);
            }
            if let Err(error) = result {
                eprintln!("{error}; detaching lazily");
                let _ = sh("umount", &["-l", mnt]);
            }
        }
        if let Some(device) = &self.loop_device {
            if let Err(error) = sh("losetup", &["-d", device]) {
                eprintln!("{error}");
            }
        }
    }
}

/// Writes `len` bytes of non-zero data to `path` and syncs it, so the blocks are really taken.
fn write_filler(path: &Path, len: usize) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(&vec![0xa5; len])?;
    file.sync_all()
}

/// Takes every block still free on the filesystem holding `path`, 4 KiB at a time; returns
/// how many bytes it took.
fn fill_up(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0x5a; 4096];
    let mut taken = 0;
    while file
        .write_all(&block)
        .and_then(|_| file.sync_data())
        .is_ok()
    {
        taken += block.len() as u64;
    }
    taken
}

/// Free bytes on the filesystem holding `path`, as `df` reports them (for messages).
fn free_bytes(path: &Path) -> String {
    sh("df", &["-B1", "--output=avail", path.to_str().unwrap()]).map_or_else(
        |e| e,
        |out| out.lines().last().unwrap_or("?").trim().to_string(),
    )
}

/// An acknowledged batch: its base offset and its records' values.
type Acked = (u64, Vec<Vec<u8>>);

/// Asserts that `log` holds exactly the `acked` batches, in order, each validating.
async fn assert_holds(log: &Log, acked: &[Acked]) {
    let mut offset = log.log_start_offset();
    let mut seen = 0;
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20).await.unwrap();
        assert!(!read.batches.is_empty());
        for got in &read.batches {
            let (base, expected) = &acked[seen];
            assert_eq!(got.base_offset, *base);
            assert_eq!(view(&got.bytes).base_offset(), *base);
            assert_eq!(&values(&got.bytes), expected, "batch {base}");
            seen += 1;
        }
        offset = read.next_offset().unwrap();
    }
    assert_eq!(
        seen,
        acked.len(),
        "the log must hold every acknowledged batch and nothing else"
    );
}

/// Records per test batch: each batch is about 16 KiB.
const RECORDS: usize = 4;

/// The next test batch, tagged `tag`.
fn next_batch(tag: u64) -> rkyv::util::AlignedVec<16> {
    batch(tag, RECORDS, 4000, now_ms())
}

/// Small settings so that an 8 MiB filesystem holds several segments.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1 << 20,
        preallocate_bytes: 256 << 10,
        write_chunk_bytes: 64 << 10,
        tail_cache_bytes_max: 256 << 10,
        durability: Durability::Always,
        ..LogConfig::default()
    }
}

/// Appends durable batches to `log` until an append fails, recording each acknowledged one in
/// `acked`. Checks that the failure is `NoSpace` naming the active segment file, raised by
/// `append` itself (never by `wait_durable`: the file is preallocated before any byte is
/// written), that nothing of the refused batch was appended, that everything acknowledged is
/// durable and reads back intact, and that a retry is refused the same way.
async fn append_until_full(log: &Log, acked: &mut Vec<Acked>) {
    let error = loop {
        let bytes = next_batch(acked.len() as u64);
        let info = match log.append(view(&bytes)).await {
            Ok(info) => info,
            Err(error) => break error,
        };
        if let Err(error) = log.wait_durable(info.last_offset).await {
            panic!("wait_durable failed ({error:?}); the preallocation should have failed first");
        }
        acked.push((info.base_offset, values(&bytes)));
        assert!(acked.len() < 10_000, "the filesystem never filled up");
    };
    assert!(
        acked.len() > 50,
        "only {} batches fit before {error}",
        acked.len()
    );
    assert!(
        log.segment_count() > 1,
        "the log must have rolled before the disk filled"
    );
    let bases: Vec<u64> = std::fs::read_dir(log.dir())
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    let active = log
        .dir()
        .join(format!("{:020}.log", bases.iter().max().unwrap()));
    match &error {
        StorageError::NoSpace { path } => assert_eq!(path, &active, "{error}"),
        other => panic!("expected NoSpace for {}, got {other:?}", active.display()),
    }
    let end = acked.last().unwrap().0 + RECORDS as u64;
    assert_eq!(
        log.log_end_offset(),
        end,
        "the refused batch must not be appended"
    );
    assert_eq!(log.durable_offset(), end);
    assert_holds(log, acked).await;
    let retry = log.append(view(&next_batch(0))).await;
    assert!(
        matches!(&retry, Err(StorageError::NoSpace { path }) if *path == active),
        "{retry:?}"
    );
    assert_eq!(log.log_end_offset(), end);
    assert_holds(log, acked).await;
}

/// Fills an 8 MiB ext4 filesystem (holding a 2 MiB filler file) with durable appends until one
/// is refused for lack of space (see `append_until_full` for what is checked then). The log
/// stays usable: once the filler is deleted, appends on the same open log succeed again, and
/// every batch survives a close and reopen, after which appends continue.
#[test]
fn enospc_is_a_clean_error_and_appends_resume_once_space_is_freed() {
    let Some(fs) =
        SmallFs::for_test("enospc_is_a_clean_error_and_appends_resume_once_space_is_freed")
    else {
        return;
    };
    let filler = fs.path().join("filler");
    write_filler(&filler, 2 << 20).unwrap();
    let dir = fs.path().join("log");
    let mut acked: Vec<Acked> = Vec::new();
    run(async {
        let log = Log::open(&dir, config()).await.unwrap();
        append_until_full(&log, &mut acked).await;
        std::fs::remove_file(&filler).unwrap();
        for i in 0..20u64 {
            let bytes = next_batch(100_000 + i);
            let info = log.append(view(&bytes)).await.unwrap();
            assert_eq!(info.base_offset, acked.last().unwrap().0 + RECORDS as u64);
            log.wait_durable(info.last_offset).await.unwrap();
            acked.push((info.base_offset, values(&bytes)));
        }
        assert_holds(&log, &acked).await;
        log.close().await.unwrap();
        let log = Log::open(&dir, config()).await.unwrap();
        assert_holds(&log, &acked).await;
        let bytes = next_batch(200_000);
        let info = log.append(view(&bytes)).await.unwrap();
        log.wait_durable(info.last_offset).await.unwrap();
        acked.push((info.base_offset, values(&bytes)));
        log.close().await.unwrap();
    });
    drop(fs);
}

/// A log whose disk filled up must open again — a broker that restarts on a full disk must
/// still serve its data — first right after its close (which may have released the unused
/// preallocation of its active segment, so the disk may no longer be quite full), then once
/// even the last free block is taken (surely full); every durable batch is there. Freeing
/// space then lets appends resume.
#[test]
fn the_log_reopens_on_a_full_filesystem() {
    let Some(fs) = SmallFs::for_test("the_log_reopens_on_a_full_filesystem") else {
        return;
    };
    let filler = fs.path().join("filler");
    write_filler(&filler, 2 << 20).unwrap();
    let dir = fs.path().join("log");
    let mut acked: Vec<Acked> = Vec::new();
    run(async {
        let log = Log::open(&dir, config()).await.unwrap();
        append_until_full(&log, &mut acked).await;
        log.close().await.unwrap();
    });
    let topup = fs.path().join("topup");
    for (step, tag) in [("after close", 400_000), ("last block taken", 500_000)] {
        let taken = if tag == 400_000 { 0 } else { fill_up(&topup) };
        let free = free_bytes(fs.path());
        run(async {
            let opened = Log::open(&dir, config()).await;
            let log = opened.unwrap_or_else(|e| {
                panic!("open on a full filesystem ({step}: {free} bytes free, {taken} bytes topped up) failed: {e:?}")
            });
            assert_holds(&log, &acked).await;
            // Opening may have released the unused preallocation of the active segment, so an
            // append may fit; either it is acknowledged durable or refused with nothing appended.
            let end = log.log_end_offset();
            let bytes = next_batch(tag);
            match log.append(view(&bytes)).await {
                Ok(info) => {
                    log.wait_durable(info.last_offset).await.unwrap();
                    acked.push((info.base_offset, values(&bytes)));
                }
                Err(StorageError::NoSpace { .. }) => assert_eq!(log.log_end_offset(), end),
                Err(other) => panic!("{step}: expected NoSpace or success, got {other:?}"),
            }
            assert_holds(&log, &acked).await;
            log.close().await.unwrap();
        });
    }
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&topup).unwrap();
    run(async {
        let log = Log::open(&dir, config()).await.unwrap();
        assert_holds(&log, &acked).await;
        let bytes = next_batch(300_000);
        let info = log.append(view(&bytes)).await.unwrap();
        assert_eq!(info.base_offset, acked.last().unwrap().0 + RECORDS as u64);
        log.wait_durable(info.last_offset).await.unwrap();
        log.close().await.unwrap();
    });
    drop(fs);
}
