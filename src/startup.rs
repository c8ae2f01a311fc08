//! Start-up checks: io_uring availability (with a diagnosis and a fix when it is not), the
//! memlock limit, the data directory lock and the listen address.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use rustix::io::Errno;

/// What the host looks like, for [`diagnose_io_uring`].
#[derive(Clone, Debug)]
pub struct HostFacts {
    /// What a probe `io_uring_setup` returned: its errno when it failed.
    pub io_uring_setup: Result<(), Errno>,
    /// Soft RLIMIT_MEMLOCK in bytes (u64::MAX = unlimited).
    pub memlock_bytes: u64,
    /// Whether the process has CAP_IPC_LOCK (then memlock limits do not apply).
    pub cap_ipc_lock: bool,
    /// `uname -r`.
    pub kernel: String,
    /// Value of /proc/sys/kernel/io_uring_disabled, if the file exists.
    pub io_uring_disabled: Option<u32>,
}

/// Turns a failed io_uring probe into one message that says what is wrong and how to fix it.
/// Returns None when the probe worked.
pub fn diagnose_io_uring(f: &HostFacts) -> Option<String> {
    let fix_memlock = "raise the locked-memory limit: `ulimit -l unlimited` in the shell that starts spate, \
        LimitMEMLOCK=infinity in its systemd unit, or `--ulimit memlock=-1` for a container";
    let msg = match f.io_uring_setup {
        Ok(()) => return None,
        Err(Errno::NOSYS) => format!(
            "io_uring is not available: the kernel ({}) does not provide io_uring_setup. \
             Spate needs Linux 5.8 or newer with CONFIG_IO_URING; upgrade the kernel",
            f.kernel
        ),
        Err(Errno::PERM | Errno::ACCESS) => match f.io_uring_disabled {
            Some(v) if v > 0 => format!(
                "io_uring is disabled on this host (kernel.io_uring_disabled = {v}). \
                 Fix: `sysctl -w kernel.io_uring_disabled=0` (or add the user to kernel.io_uring_group when it is 1)"
            ),
            _ => "io_uring_setup was refused (EPERM): a seccomp profile blocks it, as Docker's and \
                  containerd's default profiles do. Fix: run with a profile that allows io_uring_setup, \
                  io_uring_enter and io_uring_register (e.g. `--security-opt seccomp=unconfined`)"
                .to_string(),
        },
        Err(Errno::NOMEM) => format!(
            "io_uring_setup failed with ENOMEM: the locked-memory limit ({}) is too low for the \
             rings on this kernel ({}). Fix: {fix_memlock}",
            human(f.memlock_bytes),
            f.kernel
        ),
        Err(e) => format!(
            "io_uring_setup failed: {} (kernel {})",
            io::Error::from(e),
            f.kernel
        ),
    };
    Some(msg)
}

/// glommio refuses to build a reactor below this RLIMIT_MEMLOCK, whatever the capabilities.
pub const GLOMMIO_MEMLOCK_MIN_BYTES: u64 = 512 * 1024;

/// The memlock limit is below what glommio needs at all: the broker cannot start.
pub fn memlock_error(f: &HostFacts) -> Option<String> {
    if f.memlock_bytes >= GLOMMIO_MEMLOCK_MIN_BYTES {
        return None;
    }
    Some(format!(
        "the locked-memory limit (RLIMIT_MEMLOCK) is {} but io_uring needs at least {}. \
         Fix: `ulimit -l unlimited` in the shell that starts spate, LimitMEMLOCK=infinity in \
         its systemd unit (see tuning/spate.service), or `--ulimit memlock=-1` for a container",
        human(f.memlock_bytes),
        human(GLOMMIO_MEMLOCK_MIN_BYTES)
    ))
}

/// Warns when the memlock limit cannot hold the registered buffers of every shard. glommio
/// then silently runs without registered buffers; say so, with the fix.
pub fn memlock_warning(f: &HostFacts, needed_bytes: u64) -> Option<String> {
    if f.cap_ipc_lock || f.memlock_bytes >= needed_bytes {
        return None;
    }
    Some(format!(
        "the locked-memory limit is {} but the shards' io_uring buffers need {}; io_uring will run \
         without registered buffers (slower). Fix: `ulimit -l unlimited` in the shell that starts \
         spate, LimitMEMLOCK=infinity in its systemd unit (see tuning/spate.service), or \
         `--ulimit memlock=-1` for a container",
        human(f.memlock_bytes),
        human(needed_bytes)
    ))
}

fn human(bytes: u64) -> String {
    if bytes == u64::MAX {
        "unlimited".into()
    } else if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// Reads the facts of this host, probing io_uring with a tiny ring.
pub fn host_facts() -> HostFacts {
    let mut params = rustix::io_uring::io_uring_params::default();
    // SAFETY: the only precondition is an open `wq_fd` when IORING_SETUP_ATTACH_WQ is set;
    // the parameters are all zero, so no flag is set. The ring is closed when dropped.
    let io_uring_setup = unsafe { rustix::io_uring::io_uring_setup(4, &mut params) }.map(drop);
    // None is RLIM_INFINITY.
    let memlock_bytes = rustix::process::getrlimit(rustix::process::Resource::Memlock)
        .current
        .unwrap_or(u64::MAX);
    let cap_ipc_lock = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 14) != 0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let io_uring_disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    HostFacts {
        io_uring_setup,
        memlock_bytes,
        cap_ipc_lock,
        kernel,
        io_uring_disabled,
    }
}

/// glommio's executor failed to build: explain with what the host says.
pub fn explain_executor_error(err: &str) -> String {
    let facts = host_facts();
    match diagnose_io_uring(&facts) {
        Some(why) => format!("cannot start a shard: {why} (glommio: {err})"),
        None => format!(
            "cannot start a shard: {err}. If this mentions memory, raise the locked-memory limit \
             (`ulimit -l unlimited`, LimitMEMLOCK=infinity) or lower the io_uring memory"
        ),
    }
}

/// The soft open-file limit (RLIMIT_NOFILE); u64::MAX when unlimited.
pub fn open_files_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Descriptors a broker needs beyond its segments' (io_uring rings and eventfds, the metadata
/// log, listeners, a few connections): what a start without data uses, with room to spare.
const OPEN_FILES_BASE: u64 = 64;

/// Files each segment keeps open: its log, offset index and time index.
const FILES_PER_SEGMENT: u64 = 3;

/// Checks the open-file limit against the segments on disk before any is opened: raises the
/// soft limit to the hard one (the soft default, often 1024, is far below what a broker with
/// many partitions needs), and fails with what is needed when even that is too low, rather
/// than failing later on the first partition that does not fit. Each partition's active
/// segment keeps its files open; sealed ones share `sealed_fds_max` (all shards' caches).
/// Returns the soft limit now.
pub fn ensure_open_files(data_dir: &Path, sealed_fds_max: u64) -> Result<u64, String> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let (partitions, segments) = count_segments(data_dir)
        .map_err(|e| format!("cannot count the segments in {}: {e}", data_dir.display()))?;
    let active = FILES_PER_SEGMENT * partitions;
    let sealed = (FILES_PER_SEGMENT * (segments - partitions)).min(sealed_fds_max);
    let needed = OPEN_FILES_BASE + active + sealed;
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    // An unlimited hard limit still cannot be the soft one (the kernel caps it at
    // fs.nr_open, 1048576 by default).
    let hard = limit.maximum.unwrap_or(u64::MAX).min(1 << 20);
    let mut now = soft;
    if soft < hard {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: limit.maximum,
            },
        ) {
            Ok(()) => {
                tracing::info!(
                    from = soft,
                    to = hard,
                    "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
                );
                now = hard;
            }
            Err(e) => tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit"),
        }
    }
    if now < needed {
        return Err(format!(
            "the data dir holds {segments} segments in {partitions} partitions, whose active \
             segments keep {active} files open and sealed ones up to {sealed} \
             (--segment-fds-max per shard), so the broker needs about {needed} open files, but \
             its open-file limit (RLIMIT_NOFILE) is {now} (hard limit {}): raise it (ulimit -n \
             {needed}, or LimitNOFILE={needed} in a systemd unit)",
            limit
                .maximum
                .map_or("unlimited".to_string(), |m| m.to_string()),
        ));
    }
    Ok(now)
}

/// (directories with segments, segment files (`*.log`)) in the data dir.
fn count_segments(data_dir: &Path) -> io::Result<(u64, u64)> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let (mut partitions, mut segments) = (0, 0);
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let mut n = 0;
        for f in std::fs::read_dir(entry.path())? {
            if f?.file_name().to_str().is_some_and(|n| n.ends_with(".log")) {
                n += 1;
            }
        }
        partitions += u64::from(n > 0);
        segments += n;
    }
    Ok((partitions, segments))
}

/// Takes an exclusive lock on the data directory so two brokers never share it.
pub fn lock_data_dir(dir: &Path) -> io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))?;
    // std's lock is flock(2) on Linux: released by the kernel when the process dies, so a
    // kill -9 never leaves the data dir locked.
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "data dir {} is in use by another spate process",
                dir.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Fails when something already listens on `addr`. The shards bind with SO_REUSEPORT, which
/// would otherwise silently share the port with another broker of the same user. The probe is
/// a connection attempt rather than a test bind: a test bind without SO_REUSEPORT is refused
/// by the TIME_WAIT sockets a previous broker leaves behind, which a restart must not be.
pub fn check_listen_free(addr: SocketAddr) -> io::Result<()> {
    let probe = if addr.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if addr.is_ipv6() {
            std::net::Ipv6Addr::LOCALHOST.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    };
    // A broker killed a moment ago can still accept for a few milliseconds: its io_uring is
    // torn down asynchronously and holds the listening socket until then. So only a listener
    // that keeps accepting for the whole grace period counts as another process.
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(LISTEN_PROBE_GRACE_MS);
    loop {
        match std::net::TcpStream::connect_timeout(&probe, std::time::Duration::from_millis(500)) {
            Err(_) => return Ok(()),
            Ok(_) if std::time::Instant::now() >= deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "cannot listen on {addr}: another process already accepts connections there"
                    ),
                ));
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// How long a listener found on the listen address may take to go away (see
/// [`check_listen_free`]).
const LISTEN_PROBE_GRACE_MS: u64 = 2_000;

/// The CPUs this process may run on, in order.
pub fn usable_cpus() -> Vec<usize> {
    use rustix::thread::{CpuSet, sched_getaffinity};
    let cpus: Vec<usize> = match sched_getaffinity(None) {
        Ok(set) => (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
        Err(_) => Vec::new(),
    };
    if cpus.is_empty() { vec![0] } else { cpus }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(io_uring_setup: Result<(), Errno>) -> HostFacts {
        HostFacts {
            io_uring_setup,
            memlock_bytes: 64 << 10,
            cap_ipc_lock: false,
            kernel: "4.4.0".into(),
            io_uring_disabled: None,
        }
    }

    #[test]
    fn diagnoses_each_cause_with_a_fix() {
        assert!(diagnose_io_uring(&facts(Ok(()))).is_none());
        let m = diagnose_io_uring(&facts(Err(Errno::NOMEM))).unwrap();
        assert!(
            m.contains("ulimit -l") && m.contains("LimitMEMLOCK") && m.contains("64 KiB"),
            "{m}"
        );
        let m = diagnose_io_uring(&facts(Err(Errno::NOSYS))).unwrap();
        assert!(m.contains("4.4.0") && m.contains("upgrade"), "{m}");
        let m = diagnose_io_uring(&facts(Err(Errno::PERM))).unwrap();
        assert!(m.contains("seccomp"), "{m}");
        let mut f = facts(Err(Errno::PERM));
        f.io_uring_disabled = Some(2);
        assert!(diagnose_io_uring(&f).unwrap().contains("io_uring_disabled"));
    }

    #[test]
    fn memlock_below_glommio_minimum_is_an_error() {
        let mut f = facts(Ok(()));
        let m = memlock_error(&f).unwrap();
        assert!(
            m.contains("64 KiB") && m.contains("512 KiB") && m.contains("LimitMEMLOCK"),
            "{m}"
        );
        f.memlock_bytes = 8 << 20;
        assert!(memlock_error(&f).is_none());
    }

    #[test]
    fn memlock_warning_only_when_short() {
        let mut f = facts(Ok(()));
        assert!(
            memlock_warning(&f, 1 << 20)
                .unwrap()
                .contains("LimitMEMLOCK")
        );
        assert!(memlock_warning(&f, 1 << 10).is_none());
        f.cap_ipc_lock = true;
        assert!(memlock_warning(&f, 1 << 30).is_none());
    }

    #[test]
    fn this_host_probes() {
        let f = host_facts();
        assert!(!f.kernel.is_empty());
        // The rlimit read through rustix is the soft limit the kernel reports.
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        assert_eq!(
            Some(f.memlock_bytes),
            crate::tune::parse_limit(&limits, "Max locked memory")
        );
    }

    #[test]
    fn usable_cpus_are_this_thread_affinity() {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        assert_eq!(
            usable_cpus(),
            crate::tune::parse_cpu_list(allowed.trim()).unwrap()
        );
    }
}
