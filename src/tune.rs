//! `spate tune`: checks the host for what Spate wants and, with `--apply`, changes the
//! settings that are safe to change at runtime.
//!
//! Three layers:
//! - **decisions**: pure functions from values read off the host to a [`Check`] (status,
//!   current value, wanted value, why, and the writes `--apply` would make). Unit-tested.
//! - **reading**: [`Host`] reads /proc and /sys under a root directory (`--root`, hidden, "/"
//!   by default) so tests point it at a fake tree. A missing file makes an item
//!   "unavailable", never an error.
//! - **applying**: [`apply`] performs the writes of every check that has some, one by one,
//!   recording each change (old -> new) or failure without stopping. It only writes where a
//!   check is not ok, so running it twice changes nothing the second time.
//!
//! IRQ affinity is never changed automatically: irqbalance and kernel-managed interrupts can
//! fight or refuse it, so `spate tune` prints the commands instead.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use serde::Serialize;

/// Arguments of `spate tune`.
#[derive(clap::Args, Debug)]
pub struct TuneArgs {
    /// Change what can be changed at runtime (needs root) and print each change.
    #[arg(long)]
    pub apply: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Number of shards `spate serve` will run (they take the first N usable cores); for the
    /// IRQ-affinity, governor and memlock checks.
    #[arg(long, conflicts_with = "cpus")]
    pub shards: Option<usize>,
    /// The cores the shards will use, e.g. `1-3,5` (default: every usable core).
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
    /// Read (and with --apply, write) /proc and /sys under this directory instead of / (tests).
    #[arg(long, hide = true, default_value = "/")]
    pub root: PathBuf,
}

/// How an item stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As Spate wants it.
    Ok,
    /// Works, but not as Spate wants it (or Spate cannot run).
    Warn,
    /// The host does not expose it (no such file: a VM without cpufreq, a container, ...).
    Unavailable,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Unavailable => "unavailable",
        }
    }
}

/// A file `--apply` writes: a path relative to the root and the text to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub path: String,
    pub value: String,
}

/// One checked item.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub item: &'static str,
    pub status: Status,
    pub current: String,
    pub wanted: String,
    pub why: String,
    /// What to do by hand (commands or config), when something is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// What `--apply` writes for this item (empty: nothing it may change).
    #[serde(skip)]
    pub writes: Vec<Write>,
}

impl Check {
    fn new(item: &'static str, status: Status, current: impl Into<String>) -> Check {
        Check {
            item,
            status,
            current: current.into(),
            wanted: String::new(),
            why: String::new(),
            fix: None,
            writes: Vec::new(),
        }
    }
    fn wanted(mut self, w: impl Into<String>) -> Check {
        self.wanted = w.into();
        self
    }
    fn why(mut self, w: impl Into<String>) -> Check {
        self.why = w.into();
        self
    }
    fn fix(mut self, f: impl Into<String>) -> Check {
        self.fix = Some(f.into());
        self
    }
    fn write(mut self, path: impl Into<String>, value: impl Into<String>) -> Check {
        self.writes.push(Write {
            path: path.into(),
            value: value.into(),
        });
        self
    }
    fn unavailable(item: &'static str, what: &str) -> Check {
        Check::new(item, Status::Unavailable, what)
    }
}

// ---------------------------------------------------------------------------------------------
// Decisions (pure)
// ---------------------------------------------------------------------------------------------

/// Oldest kernel Spate runs on (io_uring with the opcodes glommio uses).
pub const KERNEL_MIN: (u32, u32) = (5, 8);

/// Parses "6.1.0-18-amd64" into (6, 1).
pub fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn kernel_check(release: Option<&str>) -> Check {
    const ITEM: &str = "kernel";
    let wanted = ">= 5.8 (6.x recommended)";
    let Some(release) = release else {
        return Check::unavailable(ITEM, "no /proc/sys/kernel/osrelease").wanted(wanted);
    };
    let why;
    let status = match parse_kernel(release) {
        None => {
            why = "cannot parse the release";
            Status::Warn
        }
        Some(v) if v < KERNEL_MIN => {
            why = "io_uring before 5.8 lacks what glommio needs: Spate cannot start";
            Status::Warn
        }
        Some((5, _)) => {
            why = "Spate runs, but 6.x has years of io_uring fixes and faster paths (e.g. \
                   fewer punts to worker threads for buffered I/O)";
            Status::Warn
        }
        Some(_) => {
            why = "io_uring is mature on 6.x: Spate's reactor and file I/O run on it";
            Status::Ok
        }
    };
    let c = Check::new(ITEM, status, release).wanted(wanted).why(why);
    if status == Status::Warn {
        c.fix("upgrade the kernel (e.g. Debian 12 backports or Ubuntu 24.04 ship 6.x)")
    } else {
        c
    }
}

/// `io_uring_setup`: None when the probe did not run (a fake root), else what a probe
/// io_uring_setup returned.
pub fn io_uring_check(
    io_uring_setup: Option<Result<(), Errno>>,
    io_uring_disabled: Option<u32>,
    kernel: &str,
    memlock_bytes: u64,
) -> Check {
    const ITEM: &str = "io_uring";
    let wanted = "io_uring_setup works (kernel.io_uring_disabled = 0)";
    let why = "every shard is a glommio executor on three io_uring rings: without io_uring \
               Spate cannot start";
    let disabled = match io_uring_disabled {
        Some(v) => format!(", kernel.io_uring_disabled = {v}"),
        None => String::new(),
    };
    let Some(io_uring_setup) = io_uring_setup else {
        return match io_uring_disabled {
            Some(v) if v > 0 => Check::new(ITEM, Status::Warn, format!("disabled{disabled}"))
                .wanted(wanted)
                .why(why)
                .fix("sysctl -w kernel.io_uring_disabled=0"),
            _ => Check::unavailable(ITEM, &format!("not probed under --root{disabled}"))
                .wanted(wanted)
                .why(why),
        };
    };
    let facts = crate::startup::HostFacts {
        io_uring_setup,
        memlock_bytes,
        cap_ipc_lock: false,
        kernel: kernel.to_string(),
        io_uring_disabled,
    };
    // The diagnosis is Some exactly when the probe failed.
    match (io_uring_setup, crate::startup::diagnose_io_uring(&facts)) {
        (Err(e), Some(diag)) => Check::new(
            ITEM,
            Status::Warn,
            format!("io_uring_setup fails: {}", io::Error::from(e)),
        )
        .wanted(wanted)
        .why(why)
        .fix(diag),
        _ => Check::new(ITEM, Status::Ok, format!("available{disabled}"))
            .wanted(wanted)
            .why(why),
    }
}

/// Locked memory the shards' io_uring rings want: glommio registers io_memory per ring, three
/// rings per executor.
pub fn memlock_needed(shards: usize) -> u64 {
    let io_memory = crate::config::Config::new(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        PathBuf::new(),
        1,
    )
    .io_memory_bytes as u64;
    io_memory * 3 * shards.max(1) as u64
}

pub fn memlock_check(soft: Option<u64>, cap_ipc_lock: bool, shards: usize) -> Check {
    const ITEM: &str = "memlock";
    let needed = memlock_needed(shards);
    let wanted = format!(
        "unlimited (at least {} for {shards} shard{})",
        human(needed),
        if shards == 1 { "" } else { "s" }
    );
    let why = "glommio registers io_uring buffers in locked memory; below 512 KiB Spate cannot \
               start, below the shards' need it runs without registered buffers (slower)";
    let fix = "LimitMEMLOCK=infinity in the unit (tuning/spate.service), `ulimit -l unlimited` in \
               the shell that starts spate, or `--ulimit memlock=-1` for a container";
    let Some(soft) = soft else {
        return Check::unavailable(ITEM, "no /proc/self/limits")
            .wanted(wanted)
            .why(why);
    };
    let mut current = format!("{} (this shell's soft limit)", human(soft));
    let status = if soft < crate::startup::GLOMMIO_MEMLOCK_MIN_BYTES {
        // glommio checks the limit itself, whatever the capabilities.
        Status::Warn
    } else if cap_ipc_lock {
        current.push_str(", CAP_IPC_LOCK held");
        Status::Ok
    } else if soft >= needed {
        Status::Ok
    } else {
        Status::Warn
    };
    let c = Check::new(ITEM, status, current).wanted(wanted).why(why);
    if status == Status::Warn {
        c.fix(fix)
    } else {
        c
    }
}

/// Open files Spate wants: one descriptor per connection, two or three per segment.
pub const NOFILE_WANTED: u64 = 100_000;

pub fn nofile_check(soft: Option<u64>) -> Check {
    const ITEM: &str = "nofile";
    let wanted = format!(">= {NOFILE_WANTED} (the unit sets 1048576)");
    let why = "one descriptor per client connection and two or three per log segment: running \
               out refuses connections and stops partitions from rolling";
    let Some(soft) = soft else {
        return Check::unavailable(ITEM, "no /proc/self/limits")
            .wanted(wanted)
            .why(why);
    };
    let current = if soft == u64::MAX {
        "unlimited (this shell's soft limit)".to_string()
    } else {
        format!("{soft} (this shell's soft limit)")
    };
    if soft >= NOFILE_WANTED {
        Check::new(ITEM, Status::Ok, current)
            .wanted(wanted)
            .why(why)
    } else {
        Check::new(ITEM, Status::Warn, current)
            .wanted(wanted)
            .why(why)
            .fix("LimitNOFILE=1048576 in the unit (tuning/spate.service) or `ulimit -n 1048576`")
    }
}

/// `govs`: (cpu, its scaling_governor, its scaling_available_governors) for each shard core
/// that has cpufreq.
pub fn governor_check(govs: &[(usize, String, Option<String>)]) -> Check {
    const ITEM: &str = "cpu_governor";
    let wanted = "performance on the shard cores";
    let why = "a shard sleeps in io_uring between bursts; power-saving governors clock the core \
               down meanwhile and take milliseconds to ramp up, adding that to the next requests";
    if govs.is_empty() {
        return Check::unavailable(
            ITEM,
            "no cpufreq in /sys: a VM, or the firmware controls the frequency",
        )
        .wanted(wanted)
        .why(why);
    }
    let mut by_gov: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (cpu, g, _) in govs {
        by_gov.entry(g.as_str()).or_default().push(*cpu);
    }
    let current = by_gov
        .iter()
        .map(|(g, cpus)| format!("{g} on {}", cpu_list(cpus)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut c = Check::new(ITEM, Status::Ok, current)
        .wanted(wanted)
        .why(why);
    let off: Vec<_> = govs.iter().filter(|(_, g, _)| g != "performance").collect();
    if !off.is_empty() {
        c.status = Status::Warn;
        c = c.fix("cpupower frequency-set -g performance (or spate tune --apply)");
        for (cpu, _, avail) in off {
            let can = avail
                .as_deref()
                .is_none_or(|a| a.split_whitespace().any(|g| g == "performance"));
            if can {
                c = c.write(
                    format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
                    "performance",
                );
            }
        }
    }
    c
}

/// What a queue interrupt serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrqKind {
    Net(String),
    Block(String),
}

/// A network or disk queue interrupt.
#[derive(Clone, Debug)]
pub struct Irq {
    pub number: u32,
    pub name: String,
    pub kind: IrqKind,
    /// smp_affinity_list: where it may run.
    pub affinity: Vec<usize>,
    /// effective_affinity_list, where the kernel has it: where it does run.
    pub effective: Option<Vec<usize>>,
}

impl Irq {
    fn runs_on(&self) -> &[usize] {
        match &self.effective {
            Some(e) if !e.is_empty() => e,
            _ => &self.affinity,
        }
    }
    fn device(&self) -> &str {
        match &self.kind {
            IrqKind::Net(d) | IrqKind::Block(d) => d,
        }
    }
}

/// Queues of one disk that each belong to one core (NVMe's kernel-managed per-CPU queues):
/// a completion comes back on the core that submitted it, which is what a shard wants.
fn per_core_queues(irqs: &[Irq]) -> BTreeSet<u32> {
    let mut by_dev: BTreeMap<&str, Vec<&Irq>> = BTreeMap::new();
    for i in irqs {
        if let IrqKind::Block(d) = &i.kind {
            by_dev.entry(d).or_default().push(i);
        }
    }
    let mut out = BTreeSet::new();
    for qs in by_dev.values() {
        if qs.len() < 2 {
            continue;
        }
        let mut seen = BTreeSet::new();
        let disjoint = qs
            .iter()
            .all(|q| !q.affinity.is_empty() && q.affinity.iter().all(|c| seen.insert(*c)));
        if disjoint {
            out.extend(qs.iter().map(|q| q.number));
        }
    }
    out
}

pub fn irq_check(irqs: &[Irq], shard_cpus: &[usize], online: &[usize]) -> Check {
    const ITEM: &str = "irq_affinity";
    let shards: BTreeSet<usize> = shard_cpus.iter().copied().collect();
    let spare: Vec<usize> = online
        .iter()
        .copied()
        .filter(|c| !shards.contains(c))
        .collect();
    let why = "a queue interrupt and its softirq work (TCP receive, disk completions) run on \
               the core it lands on and take that time from the core's shard: on cores without \
               shards they cost the shards nothing, otherwise spread them so no shard pays for all";
    let wanted = if spare.is_empty() {
        "spread over the shard cores (every usable core runs a shard; leave cores out with \
         --cpus to give interrupts their own)"
            .to_string()
    } else {
        format!(
            "on the cores without shards ({}); per-core disk queues may stay",
            cpu_list(&spare)
        )
    };
    if irqs.is_empty() {
        return Check::unavailable(
            ITEM,
            "no network or disk queue interrupts in /proc/interrupts",
        )
        .wanted(wanted)
        .why(why);
    }
    let per_core = per_core_queues(irqs);
    let movable: Vec<&Irq> = irqs
        .iter()
        .filter(|i| !per_core.contains(&i.number))
        .collect();
    let describe = |i: &Irq| {
        format!(
            "{} {} ({}) on {}",
            i.number,
            i.name,
            i.device(),
            cpu_list(i.runs_on())
        )
    };
    let mut parts: Vec<String> = movable.iter().map(|i| describe(i)).collect();
    if !per_core.is_empty() {
        parts.push(format!("{} per-core disk queues", per_core.len()));
    }
    let current = format!("irq {}", parts.join("; "));
    let mut c = Check::new(ITEM, Status::Ok, current)
        .wanted(wanted)
        .why(why);
    let commands: Vec<String> = if !spare.is_empty() {
        let offenders: Vec<&&Irq> = movable
            .iter()
            .filter(|i| i.affinity.iter().any(|c| shards.contains(c)))
            .collect();
        if offenders.is_empty() {
            return c;
        }
        let list = cpu_list(&spare);
        offenders
            .iter()
            .map(|i| format!("echo {list} > /proc/irq/{}/smp_affinity_list", i.number))
            .collect()
    } else {
        let used: BTreeSet<usize> = movable
            .iter()
            .flat_map(|i| i.runs_on().iter().copied())
            .collect();
        if movable.len() < 2 || shard_cpus.len() < 2 || used.len() > 1 {
            return c;
        }
        movable
            .iter()
            .enumerate()
            .map(|(k, i)| {
                format!(
                    "echo {} > /proc/irq/{}/smp_affinity_list",
                    shard_cpus[k % shard_cpus.len()],
                    i.number
                )
            })
            .collect()
    };
    c.status = Status::Warn;
    c.fix(format!(
        "not applied automatically (irqbalance may undo it: stop it or set \
         IRQBALANCE_BANNED_CPULIST); run as root: {}",
        commands.join("; ")
    ))
}

/// What kind of disk a block device is, for its scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskKind {
    Nvme,
    Virtual,
    Ssd,
    Hdd,
}

/// A block device with a queue scheduler.
#[derive(Clone, Debug)]
pub struct BlockDev {
    pub name: String,
    pub kind: DiskKind,
    /// The raw queue/scheduler file, e.g. "none [mq-deadline] kyber bfq".
    pub schedulers: String,
}

pub fn disk_kind(name: &str, virtio: bool, rotational: Option<bool>) -> DiskKind {
    if name.starts_with("nvme") {
        DiskKind::Nvme
    } else if virtio || name.starts_with("vd") || name.starts_with("xvd") {
        DiskKind::Virtual
    } else if rotational == Some(true) {
        DiskKind::Hdd
    } else {
        DiskKind::Ssd
    }
}

/// (acceptable schedulers, the one --apply writes) for a kind of disk.
fn scheduler_policy(kind: DiskKind) -> (&'static [&'static str], &'static str) {
    match kind {
        DiskKind::Nvme => (&["none"], "none"),
        // Measured on virtio-blk: mq-deadline at least as fast as none (tuning/README.md).
        DiskKind::Virtual | DiskKind::Ssd => (&["none", "mq-deadline"], "mq-deadline"),
        DiskKind::Hdd => (&["mq-deadline"], "mq-deadline"),
    }
}

pub fn scheduler_check(devs: &[BlockDev]) -> Check {
    const ITEM: &str = "block_scheduler";
    let why = "segment appends and fdatasync are sequential per partition and the device (or \
               the hypervisor) queues deeply itself; bfq and kyber add CPU and latency per \
               request, NVMe at 100k+ IOPS is fastest with none, spinning disks need mq-deadline";
    let wanted_for = |k| {
        let (ok, _) = scheduler_policy(k);
        ok.join(" or ")
    };
    if devs.is_empty() {
        return Check::unavailable(ITEM, "no disks with a queue scheduler in /sys/block")
            .wanted("none for NVMe; none or mq-deadline for virtio and SSD; mq-deadline for HDD")
            .why(why);
    }
    let mut current = Vec::new();
    let mut wanted = Vec::new();
    let mut c = Check::new(ITEM, Status::Ok, "");
    for d in devs {
        let sel = selected(&d.schedulers).unwrap_or_else(|| d.schedulers.trim().to_string());
        current.push(format!("{} {}", d.name, sel));
        wanted.push(format!("{} {}", d.name, wanted_for(d.kind)));
        let (ok, target) = scheduler_policy(d.kind);
        if !ok.contains(&sel.as_str()) {
            c.status = Status::Warn;
            if d.schedulers.split_whitespace().any(|s| s == target) {
                c = c.write(format!("sys/block/{}/queue/scheduler", d.name), target);
            }
        }
    }
    c.current = current.join(", ");
    c.wanted = wanted.join(", ");
    c.why = why.into();
    if c.status == Status::Warn {
        c = c.fix("spate tune --apply, or a udev rule setting ATTR{queue/scheduler}");
    }
    c
}

/// The bracketed choice of a sysfs selector file: "always [madvise] never" -> "madvise".
pub fn selected(raw: &str) -> Option<String> {
    let start = raw.find('[')?;
    let end = raw[start..].find(']')? + start;
    Some(raw[start + 1..end].to_string())
}

pub fn thp_enabled_check(raw: Option<&str>) -> Check {
    const ITEM: &str = "thp_enabled";
    let wanted = "madvise (or never)";
    let why = "Spate never asks for huge pages; with always, page faults compact memory and \
               khugepaged collapses pages in the background: latency spikes and bloat for no \
               gain, while madvise still serves programs that ask";
    selector_check(
        ITEM,
        raw,
        &["madvise", "never"],
        "madvise",
        wanted,
        why,
        "enabled",
    )
}

pub fn thp_defrag_check(raw: Option<&str>) -> Check {
    const ITEM: &str = "thp_defrag";
    let wanted = "madvise (or defer+madvise, defer, never)";
    let why = "with always, a fault that finds no huge page stalls in direct compaction: \
               milliseconds on a shard's thread";
    selector_check(
        ITEM,
        raw,
        &["madvise", "defer+madvise", "defer", "never"],
        "madvise",
        wanted,
        why,
        "defrag",
    )
}

fn selector_check(
    item: &'static str,
    raw: Option<&str>,
    ok: &[&str],
    target: &str,
    wanted: &str,
    why: &str,
    file: &str,
) -> Check {
    let Some(raw) = raw else {
        return Check::unavailable(item, "no /sys/kernel/mm/transparent_hugepage")
            .wanted(wanted)
            .why(why);
    };
    // A file holding one word (what a fake tree has after a write) is that choice.
    let single = (raw.split_whitespace().count() == 1).then(|| raw.trim().to_string());
    let Some(sel) = selected(raw).or(single) else {
        return Check::new(item, Status::Warn, raw.trim())
            .wanted(wanted)
            .why(why);
    };
    let c = Check::new(item, Status::Ok, sel.clone())
        .wanted(wanted)
        .why(why);
    if ok.contains(&sel.as_str()) {
        return c;
    }
    let mut c = c.fix(format!(
        "echo {target} > /sys/kernel/mm/transparent_hugepage/{file} (or spate tune --apply)"
    ));
    c.status = Status::Warn;
    if raw
        .split_whitespace()
        .any(|s| s.trim_matches(['[', ']']) == target)
    {
        c = c.write(format!("sys/kernel/mm/transparent_hugepage/{file}"), target);
    }
    c
}

/// Bounds on the vm.dirty_* settings, in percent of memory and centiseconds.
pub const DIRTY_BACKGROUND_MAX: u64 = 5;
pub const DIRTY_RATIO_MIN: u64 = 10;
pub const DIRTY_RATIO_MAX: u64 = 40;
pub const DIRTY_RATIO_SET: u64 = 20;
pub const DIRTY_EXPIRE_MAX: u64 = 3000;

/// A ratio sysctl that its `_bytes` twin can override: the effective percent of memory.
fn effective_percent(
    ratio: Option<u64>,
    bytes: Option<u64>,
    mem: Option<u64>,
) -> Option<(u64, String)> {
    match (bytes, mem) {
        (Some(b), Some(m)) if b > 0 && m > 0 => {
            let pct = (b * 100).div_ceil(m);
            Some((
                pct,
                format!("{} via the _bytes setting (~{pct}% of memory)", human(b)),
            ))
        }
        (Some(b), None) if b > 0 => Some((0, format!("{} via the _bytes setting", human(b)))),
        _ => ratio.map(|r| (r, format!("{r}%"))),
    }
}

pub fn dirty_background_check(ratio: Option<u64>, bytes: Option<u64>, mem: Option<u64>) -> Check {
    const ITEM: &str = "vm.dirty_background_ratio";
    let wanted = format!("<= {DIRTY_BACKGROUND_MAX}% of memory");
    let why = "a shard appends with pwritev on its own thread, and the kernel throttles writers \
               once dirty pages pass halfway between this and vm.dirty_ratio: starting writeback \
               early keeps it steady and the shards unthrottled";
    let Some((pct, current)) = effective_percent(ratio, bytes, mem) else {
        return Check::unavailable(ITEM, "no /proc/sys/vm/dirty_background_ratio")
            .wanted(wanted)
            .why(why);
    };
    let c = Check::new(ITEM, Status::Ok, current)
        .wanted(wanted)
        .why(why);
    if pct <= DIRTY_BACKGROUND_MAX {
        return c;
    }
    let mut c = c
        .fix(format!(
            "sysctl -w vm.dirty_background_ratio={DIRTY_BACKGROUND_MAX}"
        ))
        .write(
            "proc/sys/vm/dirty_background_ratio",
            DIRTY_BACKGROUND_MAX.to_string(),
        );
    c.status = Status::Warn;
    c
}

pub fn dirty_ratio_check(ratio: Option<u64>, bytes: Option<u64>, mem: Option<u64>) -> Check {
    const ITEM: &str = "vm.dirty_ratio";
    let wanted = format!("{DIRTY_RATIO_MIN}-{DIRTY_RATIO_MAX}% of memory");
    let why = "the hard limit of dirty pages: too low throttles the shards' appends early, too \
               high lets gigabytes pile up that a writeback storm or an fdatasync must then push \
               out while the shards wait";
    let Some((pct, current)) = effective_percent(ratio, bytes, mem) else {
        return Check::unavailable(ITEM, "no /proc/sys/vm/dirty_ratio")
            .wanted(wanted)
            .why(why);
    };
    let c = Check::new(ITEM, Status::Ok, current)
        .wanted(wanted)
        .why(why);
    if (DIRTY_RATIO_MIN..=DIRTY_RATIO_MAX).contains(&pct) {
        return c;
    }
    let mut c = c
        .fix(format!("sysctl -w vm.dirty_ratio={DIRTY_RATIO_SET}"))
        .write("proc/sys/vm/dirty_ratio", DIRTY_RATIO_SET.to_string());
    c.status = Status::Warn;
    c
}

pub fn dirty_expire_check(centisecs: Option<u64>) -> Check {
    const ITEM: &str = "vm.dirty_expire_centisecs";
    let wanted = format!("<= {DIRTY_EXPIRE_MAX} (30 s)");
    let why = "how old dirty data gets before writeback takes it: longer lets more pile up for \
               topics that flush in the background (flush.ms/flush.messages) and writes it out \
               in bigger bursts";
    let Some(v) = centisecs else {
        return Check::unavailable(ITEM, "no /proc/sys/vm/dirty_expire_centisecs")
            .wanted(wanted)
            .why(why);
    };
    let c = Check::new(ITEM, Status::Ok, v.to_string())
        .wanted(wanted)
        .why(why);
    if v <= DIRTY_EXPIRE_MAX {
        return c;
    }
    let mut c = c
        .fix(format!(
            "sysctl -w vm.dirty_expire_centisecs={DIRTY_EXPIRE_MAX}"
        ))
        .write(
            "proc/sys/vm/dirty_expire_centisecs",
            DIRTY_EXPIRE_MAX.to_string(),
        );
    c.status = Status::Warn;
    c
}

/// glommio listens with this backlog on every shard's socket; somaxconn caps it.
pub const LISTEN_BACKLOG: u64 = 1024;
pub const SOMAXCONN_SET: u64 = 4096;

pub fn somaxconn_check(v: Option<u64>) -> Check {
    const ITEM: &str = "net.core.somaxconn";
    let wanted = format!(">= {LISTEN_BACKLOG}");
    let why = "each shard listens with a backlog of 1024 and the kernel caps it at somaxconn: \
               a lower cap drops connection bursts (a client fleet restarting) into SYN retries";
    let Some(v) = v else {
        return Check::unavailable(ITEM, "no /proc/sys/net/core/somaxconn")
            .wanted(wanted)
            .why(why);
    };
    let c = Check::new(ITEM, Status::Ok, v.to_string())
        .wanted(wanted)
        .why(why);
    if v >= LISTEN_BACKLOG {
        return c;
    }
    let mut c = c
        .fix(format!("sysctl -w net.core.somaxconn={SOMAXCONN_SET}"))
        .write("proc/sys/net/core/somaxconn", SOMAXCONN_SET.to_string());
    c.status = Status::Warn;
    c
}

/// Largest socket buffer Spate wants the kernel to allow (16 MiB).
pub const SOCKET_BUFFER_MAX: u64 = 16 << 20;

/// net.core.rmem_max / wmem_max: the ceiling of SO_RCVBUF/SO_SNDBUF.
pub fn core_buffer_check(item: &'static str, v: Option<u64>) -> Check {
    let wanted = format!(">= {}", human(SOCKET_BUFFER_MAX));
    let why = "the ceiling for a socket buffer set explicitly (SO_RCVBUF/SO_SNDBUF, e.g. a \
               client's socket.send.buffer.bytes): a low one silently caps such a connection's \
               throughput on long links";
    let file = item.replace('.', "/");
    let Some(v) = v else {
        return Check::unavailable(item, &format!("no /proc/sys/{file}"))
            .wanted(wanted)
            .why(why);
    };
    let c = Check::new(item, Status::Ok, human(v))
        .wanted(wanted)
        .why(why);
    if v >= SOCKET_BUFFER_MAX {
        return c;
    }
    let mut c = c
        .fix(format!("sysctl -w {item}={SOCKET_BUFFER_MAX}"))
        .write(format!("proc/sys/{file}"), SOCKET_BUFFER_MAX.to_string());
    c.status = Status::Warn;
    c
}

/// net.ipv4.tcp_rmem / tcp_wmem ("min default max"): autotuning grows buffers up to max.
pub fn tcp_buffer_check(item: &'static str, raw: Option<&str>) -> Check {
    let wanted = format!("max >= {}", human(SOCKET_BUFFER_MAX));
    let why = "Spate leaves socket buffers to autotuning, which grows them up to this max: \
               a fetch or produce stream moves at most max/RTT per connection (4 MiB over 10 ms \
               is 400 MiB/s)";
    let file = item.replace('.', "/");
    let Some(raw) = raw else {
        return Check::unavailable(item, &format!("no /proc/sys/{file}"))
            .wanted(wanted)
            .why(why);
    };
    let vals: Vec<u64> = raw
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let current = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let c = Check::new(item, Status::Ok, current)
        .wanted(wanted)
        .why(why);
    let [min, def, max] = vals[..] else {
        let mut c = c;
        c.status = Status::Warn;
        return c;
    };
    if max >= SOCKET_BUFFER_MAX {
        return c;
    }
    let new = format!("{min} {def} {SOCKET_BUFFER_MAX}");
    let mut c = c
        .fix(format!("sysctl -w {item}='{new}'"))
        .write(format!("proc/sys/{file}"), new);
    c.status = Status::Warn;
    c
}

/// Clock sources that cost a system call (or worse) to read.
const SLOW_CLOCKS: &[&str] = &[
    "hpet",
    "acpi_pm",
    "xen",
    "jiffies",
    "refined-jiffies",
    "pit",
];

pub fn clocksource_check(current: Option<&str>, available: Option<&str>) -> Check {
    const ITEM: &str = "clocksource";
    let wanted = "tsc (or another clock read in user space: kvm-clock, arch_sys_counter)";
    let why = "Spate reads the clock for every request, batch timestamp and timeout: tsc and \
               kvm-clock are read in user space (~40-60 ns here), hpet/acpi_pm/xen need a \
               system call or an I/O port (microseconds)";
    let Some(cur) = current else {
        return Check::unavailable(ITEM, "no /sys/devices/system/clocksource")
            .wanted(wanted)
            .why(why);
    };
    let avail = available.unwrap_or("").trim();
    let c = Check::new(ITEM, Status::Ok, format!("{cur} (available: {avail})"))
        .wanted(wanted)
        .why(why);
    if !SLOW_CLOCKS.contains(&cur) {
        return c;
    }
    let mut c = c;
    c.status = Status::Warn;
    if avail.split_whitespace().any(|s| s == "tsc") {
        c.fix("echo tsc > /sys/devices/system/clocksource/clocksource0/current_clocksource (or clocksource=tsc on the kernel command line)")
            .write(
                "sys/devices/system/clocksource/clocksource0/current_clocksource",
                "tsc",
            )
    } else {
        c.fix("no fast clock available: check the hypervisor's TSC settings")
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn human(bytes: u64) -> String {
    if bytes == u64::MAX {
        "unlimited".into()
    } else if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// Parses a CPU list like "0-3,6,8-9".
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = BTreeSet::new();
    for part in s.trim().split(',').filter(|p| !p.trim().is_empty()) {
        let part = part.trim();
        let bad = || format!("'{s}' is not a CPU list like 0-3,6");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(part.parse().map_err(|_| bad())?);
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Formats CPUs as a list with ranges: [0,1,2,5] -> "0-2,5".
pub fn cpu_list(cpus: &[usize]) -> String {
    let set: BTreeSet<usize> = cpus.iter().copied().collect();
    let mut out: Vec<String> = Vec::new();
    let mut it = set.into_iter().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// Parses the soft limit of a /proc/self/limits row ("Max locked memory  65536  65536  bytes").
pub fn parse_limit(limits: &str, row: &str) -> Option<u64> {
    let rest = limits.lines().find_map(|l| l.strip_prefix(row))?;
    match rest.split_whitespace().next()? {
        "unlimited" => Some(u64::MAX),
        v => v.parse().ok(),
    }
}

/// One line of /proc/interrupts: (irq number, name).
pub fn parse_interrupt_line(line: &str, ncpus: usize) -> Option<(u32, String)> {
    let (num, rest) = line.trim_start().split_once(':')?;
    let number: u32 = num.trim().parse().ok()?;
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    let after_counts = tokens
        .iter()
        .take(ncpus)
        .take_while(|t| t.parse::<u64>().is_ok())
        .count();
    let rest = &tokens[after_counts..];
    // chip, hwirq-type, then the name(s); older kernels print "PCI-MSI-edge name".
    let trigger = rest.iter().position(|t| {
        let t = t.to_ascii_lowercase();
        t.ends_with("edge") || t.ends_with("level") || t.ends_with("fasteoi")
    });
    let name = match trigger {
        Some(p) if p + 1 < rest.len() => rest[p + 1..].join(" "),
        _ => rest.last()?.to_string(),
    };
    Some((number, name))
}

// ---------------------------------------------------------------------------------------------
// Reading the host
// ---------------------------------------------------------------------------------------------

/// /proc and /sys under a root directory.
pub struct Host {
    root: PathBuf,
}

impl Host {
    pub fn new(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    fn is_real(&self) -> bool {
        self.root == Path::new("/")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel))
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn read_u64(&self, rel: &str) -> Option<u64> {
        self.read(rel)?.parse().ok()
    }

    fn list(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(rel))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn online_cpus(&self) -> Vec<usize> {
        if let Some(cpus) = self
            .read("sys/devices/system/cpu/online")
            .and_then(|s| parse_cpu_list(&s).ok())
            .filter(|c| !c.is_empty())
        {
            return cpus;
        }
        if self.is_real() {
            crate::startup::usable_cpus()
        } else {
            vec![0]
        }
    }

    /// The cores this process may run on (Cpus_allowed_list), within the online ones.
    fn usable_cpus(&self) -> Vec<usize> {
        let online = self.online_cpus();
        let allowed = self
            .read("proc/self/status")
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                    .and_then(|v| parse_cpu_list(v).ok())
            })
            .unwrap_or_else(|| online.clone());
        let usable: Vec<usize> = allowed.into_iter().filter(|c| online.contains(c)).collect();
        if usable.is_empty() { online } else { usable }
    }

    fn limit(&self, row: &str) -> Option<u64> {
        self.read("proc/self/limits")
            .and_then(|l| parse_limit(&l, row))
    }

    fn cap_ipc_lock(&self) -> bool {
        self.read("proc/self/status")
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .is_some_and(|caps| caps & (1 << 14) != 0)
    }

    /// The device behind a /sys/class/net or /sys/block entry: (its virtio or controller
    /// node name, the IRQs of its PCI function).
    fn device_of(&self, entry: &str) -> Option<(String, BTreeSet<u32>)> {
        let dev = std::fs::canonicalize(self.path(&format!("{entry}/device"))).ok()?;
        let node = dev.file_name()?.to_string_lossy().into_owned();
        let mut msi = BTreeSet::new();
        let mut p = Some(dev.as_path());
        while let Some(d) = p {
            if d.join("msi_irqs").is_dir() {
                if let Ok(rd) = std::fs::read_dir(d.join("msi_irqs")) {
                    msi.extend(
                        rd.filter_map(|e| e.ok())
                            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok()),
                    );
                }
                break;
            }
            if d == self.root {
                break;
            }
            p = d.parent();
        }
        Some((node, msi))
    }

    fn queue_irqs(&self) -> Vec<Irq> {
        let Some(table) = self.read("proc/interrupts") else {
            return Vec::new();
        };
        let mut lines = table.lines();
        let ncpus = lines
            .next()
            .map(|h| h.split_whitespace().count())
            .unwrap_or(0);
        // (kind, node name, interface or disk name, PCI function IRQs)
        let mut devices: Vec<(IrqKind, String, BTreeSet<u32>)> = Vec::new();
        for iface in self.list("sys/class/net") {
            if let Some((node, msi)) = self.device_of(&format!("sys/class/net/{iface}")) {
                devices.push((IrqKind::Net(iface), node, msi));
            }
        }
        for disk in self.list("sys/block") {
            if let Some((node, msi)) = self.device_of(&format!("sys/block/{disk}")) {
                devices.push((IrqKind::Block(disk), node, msi));
            }
        }
        let mut out = Vec::new();
        for line in lines {
            let Some((number, name)) = parse_interrupt_line(line, ncpus) else {
                continue;
            };
            if is_control_irq(&name) {
                continue;
            }
            let found = devices.iter().find(|(kind, node, msi)| {
                let label = match kind {
                    IrqKind::Net(i) | IrqKind::Block(i) => i,
                };
                msi.contains(&number)
                    || (node.starts_with("virtio") && name.starts_with(&format!("{node}-")))
                    || (node.starts_with("nvme") && name.starts_with(&format!("{node}q")))
                    || (label.len() >= 3
                        && matches!(kind, IrqKind::Net(_))
                        && name.split([' ', ',', '-', '@', ':']).any(|t| t == label))
            });
            let Some((kind, _, _)) = found else { continue };
            let affinity = self
                .read(&format!("proc/irq/{number}/smp_affinity_list"))
                .and_then(|s| parse_cpu_list(&s).ok())
                .unwrap_or_default();
            let effective = self
                .read(&format!("proc/irq/{number}/effective_affinity_list"))
                .and_then(|s| parse_cpu_list(&s).ok());
            out.push(Irq {
                number,
                name,
                kind: kind.clone(),
                affinity,
                effective,
            });
        }
        out
    }

    fn block_devs(&self) -> Vec<BlockDev> {
        let mut out = Vec::new();
        for name in self.list("sys/block") {
            let base = format!("sys/block/{name}");
            if !self.path(&format!("{base}/device")).exists() {
                continue; // loop, zram, dm-*, md*: no hardware queue of their own
            }
            let Some(schedulers) = self.read(&format!("{base}/queue/scheduler")) else {
                continue;
            };
            if schedulers.is_empty() {
                continue;
            }
            let virtio = self
                .device_of(&base)
                .is_some_and(|(node, _)| node.starts_with("virtio"));
            let rotational = self
                .read_u64(&format!("{base}/queue/rotational"))
                .map(|r| r == 1);
            out.push(BlockDev {
                kind: disk_kind(&name, virtio, rotational),
                name,
                schedulers,
            });
        }
        out
    }

    fn governors(&self, cpus: &[usize]) -> Vec<(usize, String, Option<String>)> {
        cpus.iter()
            .filter_map(|&c| {
                let base = format!("sys/devices/system/cpu/cpu{c}/cpufreq");
                let g = self.read(&format!("{base}/scaling_governor"))?;
                Some((
                    c,
                    g,
                    self.read(&format!("{base}/scaling_available_governors")),
                ))
            })
            .collect()
    }

    fn mem_total(&self) -> Option<u64> {
        self.read("proc/meminfo")?.lines().find_map(|l| {
            let kb: u64 = l
                .strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(kb * 1024)
        })
    }
}

/// Control interrupts of a device (configuration changes, admin queues): rare, not queues.
fn is_control_irq(name: &str) -> bool {
    name.ends_with("-config")
        || name.contains("async")
        || name.contains("mgmnt")
        || name.ends_with("q0") && name.starts_with("nvme")
}

/// The cores the shards will use.
pub fn shard_cpus(usable: &[usize], shards: Option<usize>, cpus: Option<&[usize]>) -> Vec<usize> {
    if let Some(c) = cpus {
        return c.to_vec();
    }
    let n = shards.unwrap_or(usable.len()).max(1);
    let mut out: Vec<usize> = (0..n).map(|i| usable[i % usable.len()]).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Everything `spate tune` checks, in the order it prints them.
pub fn collect(host: &Host, shard_cpus: &[usize], shards: usize) -> Vec<Check> {
    let release = host.read("proc/sys/kernel/osrelease");
    let io_uring_disabled = host
        .read("proc/sys/kernel/io_uring_disabled")
        .and_then(|s| s.parse().ok());
    let memlock = host.limit("Max locked memory");
    let io_uring_setup = host
        .is_real()
        .then(|| crate::startup::host_facts().io_uring_setup);
    let mem = host.mem_total();
    vec![
        kernel_check(release.as_deref()),
        io_uring_check(
            io_uring_setup,
            io_uring_disabled,
            release.as_deref().unwrap_or("unknown"),
            memlock.unwrap_or(0),
        ),
        memlock_check(memlock, host.cap_ipc_lock(), shards),
        nofile_check(host.limit("Max open files")),
        governor_check(&host.governors(shard_cpus)),
        irq_check(&host.queue_irqs(), shard_cpus, &host.online_cpus()),
        scheduler_check(&host.block_devs()),
        thp_enabled_check(
            host.read("sys/kernel/mm/transparent_hugepage/enabled")
                .as_deref(),
        ),
        thp_defrag_check(
            host.read("sys/kernel/mm/transparent_hugepage/defrag")
                .as_deref(),
        ),
        dirty_background_check(
            host.read_u64("proc/sys/vm/dirty_background_ratio"),
            host.read_u64("proc/sys/vm/dirty_background_bytes"),
            mem,
        ),
        dirty_ratio_check(
            host.read_u64("proc/sys/vm/dirty_ratio"),
            host.read_u64("proc/sys/vm/dirty_bytes"),
            mem,
        ),
        dirty_expire_check(host.read_u64("proc/sys/vm/dirty_expire_centisecs")),
        somaxconn_check(host.read_u64("proc/sys/net/core/somaxconn")),
        core_buffer_check(
            "net.core.rmem_max",
            host.read_u64("proc/sys/net/core/rmem_max"),
        ),
        core_buffer_check(
            "net.core.wmem_max",
            host.read_u64("proc/sys/net/core/wmem_max"),
        ),
        tcp_buffer_check(
            "net.ipv4.tcp_rmem",
            host.read("proc/sys/net/ipv4/tcp_rmem").as_deref(),
        ),
        tcp_buffer_check(
            "net.ipv4.tcp_wmem",
            host.read("proc/sys/net/ipv4/tcp_wmem").as_deref(),
        ),
        clocksource_check(
            host.read("sys/devices/system/clocksource/clocksource0/current_clocksource")
                .as_deref(),
            host.read("sys/devices/system/clocksource/clocksource0/available_clocksource")
                .as_deref(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Applying
// ---------------------------------------------------------------------------------------------

/// One write `--apply` made or tried.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub item: &'static str,
    /// Absolute path on the host (under --root).
    pub path: String,
    pub old: String,
    pub new: String,
    /// None when it worked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a file reads for "old -> new": the selected choice of a selector, whitespace folded.
fn shown(raw: &str) -> String {
    selected(raw).unwrap_or_else(|| raw.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn explain(e: &io::Error) -> String {
    match Errno::from_io_error(e) {
        Some(Errno::ACCESS | Errno::PERM) => format!("{e}: run as root"),
        Some(Errno::ROFS) => format!("{e}: /proc/sys or /sys is mounted read-only (a container?)"),
        Some(Errno::INVAL) => format!("{e}: the kernel refused the value"),
        Some(Errno::BUSY) => format!("{e}: the device is busy"),
        _ => e.to_string(),
    }
}

/// Performs the writes of every check; never stops at a failure.
pub fn apply(host: &Host, checks: &[Check]) -> Vec<Change> {
    let mut out = Vec::new();
    for c in checks {
        for w in &c.writes {
            let path = host.path(&w.path);
            let old = std::fs::read_to_string(&path).unwrap_or_default();
            if shown(&old) == w.value {
                continue;
            }
            let result = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
                .and_then(|mut f| io::Write::write_all(&mut f, w.value.as_bytes()));
            out.push(Change {
                item: c.item,
                path: path.display().to_string(),
                old: shown(&old),
                new: w.value.clone(),
                error: result.err().map(|e| explain(&e)),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Report<'a> {
    root: String,
    shard_cpus: String,
    items: &'a [Check],
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<&'a [Change]>,
}

/// The text report.
pub fn render(checks: &[Check], shard_cpus: &[usize], changes: Option<&[Change]>) -> String {
    let mut s = String::new();
    if let Some(changes) = changes {
        if changes.is_empty() {
            s.push_str("apply: nothing to change\n");
        }
        for ch in changes {
            match &ch.error {
                None => s.push_str(&format!("changed {}: {} -> {}\n", ch.path, ch.old, ch.new)),
                Some(e) => s.push_str(&format!(
                    "FAILED  {}: {} -> {}: {e}\n",
                    ch.path, ch.old, ch.new
                )),
            }
        }
        s.push('\n');
    }
    let count = |st| checks.iter().filter(|c| c.status == st).count();
    s.push_str(&format!(
        "spate tune: {} ok, {} warn, {} unavailable (shard cores {})\n\n",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Unavailable),
        cpu_list(shard_cpus)
    ));
    for c in checks {
        s.push_str(&format!(
            "{:<12}{:<28}{}\n",
            c.status.as_str(),
            c.item,
            c.current
        ));
        s.push_str(&format!("{:12}wanted: {}\n", "", c.wanted));
        s.push_str(&format!("{:12}why: {}\n", "", c.why));
        if let Some(f) = c.fix.as_ref().filter(|_| c.status != Status::Ok) {
            let apply = if c.writes.is_empty() {
                ""
            } else {
                " [--apply changes this]"
            };
            s.push_str(&format!("{:12}fix: {f}{apply}\n", ""));
        }
    }
    s
}

/// Writes to stdout; a reader that went away (`spate tune | head`) is not an error.
fn emit(s: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut out = io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(format!("stdout: {e}")),
        _ => Ok(()),
    }
}

/// Runs `spate tune`.
pub fn run(args: TuneArgs) -> Result<(), String> {
    let host = Host::new(&args.root);
    let cpus = match &args.cpus {
        Some(list) => {
            let cpus = parse_cpu_list(list).map_err(|e| format!("--cpus: {e}"))?;
            if cpus.is_empty() {
                return Err("--cpus: empty list".into());
            }
            Some(cpus)
        }
        None => None,
    };
    if args.shards == Some(0) {
        return Err("--shards must be at least 1".into());
    }
    let usable = host.usable_cpus();
    let shard_cpus = shard_cpus(&usable, args.shards, cpus.as_deref());
    let shards = args
        .shards
        .unwrap_or(cpus.as_ref().map_or(usable.len(), |c| c.len()));
    let mut checks = collect(&host, &shard_cpus, shards);
    let changes = if args.apply {
        let changes = apply(&host, &checks);
        checks = collect(&host, &shard_cpus, shards);
        Some(changes)
    } else {
        None
    };
    if args.json {
        let report = Report {
            root: args.root.display().to_string(),
            shard_cpus: cpu_list(&shard_cpus),
            items: &checks,
            changes: changes.as_deref(),
        };
        let s = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        emit(&format!("{s}\n"))?;
    } else {
        emit(&render(&checks, &shard_cpus, changes.as_deref()))?;
    }
    let failed = changes
        .as_ref()
        .map_or(0, |c| c.iter().filter(|c| c.error.is_some()).count());
    if failed > 0 {
        let total = changes.as_ref().map_or(0, |c| c.len());
        return Err(format!("{failed} of {total} changes failed (see above)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse_kernel("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(kernel_check(Some("6.1.0-18-amd64")).status, Status::Ok);
        let c = kernel_check(Some("5.15.0"));
        assert_eq!(c.status, Status::Warn);
        assert!(c.why.contains("6.x"));
        let c = kernel_check(Some("5.4.0"));
        assert_eq!(c.status, Status::Warn);
        assert!(c.why.contains("cannot start"), "{}", c.why);
        assert_eq!(kernel_check(None).status, Status::Unavailable);
        assert_eq!(kernel_check(Some("weird")).status, Status::Warn);
    }

    #[test]
    fn io_uring_states() {
        assert_eq!(
            io_uring_check(Some(Ok(())), Some(0), "6.1", 8 << 20).status,
            Status::Ok
        );
        let c = io_uring_check(Some(Err(Errno::PERM)), Some(2), "6.1", 8 << 20);
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.unwrap().contains("io_uring_disabled"));
        assert_eq!(
            io_uring_check(None, Some(0), "6.1", 0).status,
            Status::Unavailable
        );
        assert_eq!(io_uring_check(None, Some(1), "6.1", 0).status, Status::Warn);
    }

    #[test]
    fn apply_errors_say_what_to_do() {
        let os = |e: Errno| explain(&io::Error::from(e));
        assert!(os(Errno::ACCESS).ends_with(": run as root"));
        assert!(os(Errno::PERM).ends_with(": run as root"));
        assert!(os(Errno::ROFS).contains("read-only"));
        assert!(os(Errno::INVAL).contains("refused the value"));
        assert!(os(Errno::BUSY).contains("busy"));
        // An error without an errno, or one with no advice, is shown as it is.
        let plain = io::Error::other("no such knob");
        assert_eq!(explain(&plain), "no such knob");
        let e = io::Error::from(Errno::NOENT);
        assert_eq!(explain(&e), e.to_string());
    }

    #[test]
    fn memlock_and_nofile() {
        let need = memlock_needed(2);
        assert_eq!(need, 12 << 20);
        assert_eq!(memlock_check(Some(u64::MAX), false, 2).status, Status::Ok);
        assert_eq!(memlock_check(Some(need), false, 2).status, Status::Ok);
        let c = memlock_check(Some(8 << 20), false, 2);
        assert_eq!(c.status, Status::Warn);
        assert!(c.current.starts_with("8 MiB"), "{}", c.current);
        assert!(c.fix.unwrap().contains("LimitMEMLOCK"));
        assert!(c.writes.is_empty(), "limits are never applied");
        assert_eq!(memlock_check(Some(1 << 20), true, 2).status, Status::Ok);
        // glommio's own floor applies whatever the capabilities.
        assert_eq!(memlock_check(Some(64 << 10), true, 2).status, Status::Warn);
        assert_eq!(memlock_check(None, false, 2).status, Status::Unavailable);
        assert_eq!(nofile_check(Some(1024)).status, Status::Warn);
        assert_eq!(nofile_check(Some(1 << 20)).status, Status::Ok);
        assert_eq!(nofile_check(None).status, Status::Unavailable);
    }

    #[test]
    fn governors() {
        assert_eq!(governor_check(&[]).status, Status::Unavailable);
        let perf = |c| (c, "performance".to_string(), None);
        assert_eq!(governor_check(&[perf(0), perf(1)]).status, Status::Ok);
        let c = governor_check(&[
            perf(0),
            (1, "powersave".into(), Some("performance powersave".into())),
            (2, "schedutil".into(), Some("schedutil".into())),
        ]);
        assert_eq!(c.status, Status::Warn);
        assert_eq!(
            c.current,
            "performance on 0, powersave on 1, schedutil on 2"
        );
        // cpu2 cannot run performance: only cpu1 is written.
        assert_eq!(
            c.writes,
            vec![Write {
                path: "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor".into(),
                value: "performance".into()
            }]
        );
    }

    fn irq(number: u32, name: &str, kind: IrqKind, aff: &[usize], eff: Option<&[usize]>) -> Irq {
        Irq {
            number,
            name: name.into(),
            kind,
            affinity: aff.to_vec(),
            effective: eff.map(|e| e.to_vec()),
        }
    }

    #[test]
    fn irq_affinity_with_spare_cores() {
        let net = IrqKind::Net("eth0".into());
        let irqs = vec![
            irq(38, "virtio2-input.0", net.clone(), &[0], None),
            irq(39, "virtio2-output.0", net.clone(), &[1, 2, 3], Some(&[2])),
        ];
        // Shards on 1-3, core 0 spare: irq 39 may run on shard cores.
        let c = irq_check(&irqs, &[1, 2, 3], &[0, 1, 2, 3]);
        assert_eq!(c.status, Status::Warn);
        assert!(c.wanted.contains("(0)"), "{}", c.wanted);
        let fix = c.fix.unwrap();
        assert!(
            fix.contains("echo 0 > /proc/irq/39/smp_affinity_list"),
            "{fix}"
        );
        assert!(!fix.contains("/proc/irq/38/"), "{fix}");
        assert!(c.writes.is_empty(), "IRQ affinity is never applied");
        // Both on the spare core: ok.
        let irqs = vec![
            irq(38, "virtio2-input.0", net.clone(), &[0], None),
            irq(39, "virtio2-output.0", net, &[0], None),
        ];
        assert_eq!(
            irq_check(&irqs, &[1, 2, 3], &[0, 1, 2, 3]).status,
            Status::Ok
        );
    }

    #[test]
    fn irq_affinity_without_spare_cores() {
        let net = IrqKind::Net("eth0".into());
        let blk = IrqKind::Block("vda".into());
        let spread = vec![
            irq(36, "virtio1-req.0", blk.clone(), &[0, 1], Some(&[1])),
            irq(38, "virtio2-input.0", net.clone(), &[0, 1], Some(&[1])),
            irq(39, "virtio2-output.0", net.clone(), &[0, 1], Some(&[0])),
        ];
        let c = irq_check(&spread, &[0, 1], &[0, 1]);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.current.contains("36 virtio1-req.0 (vda) on 1"),
            "{}",
            c.current
        );
        let piled = vec![
            irq(38, "eth0-rx-0", net.clone(), &[0], None),
            irq(39, "eth0-tx-0", net, &[0], None),
        ];
        let c = irq_check(&piled, &[0, 1], &[0, 1]);
        assert_eq!(c.status, Status::Warn);
        let fix = c.fix.unwrap();
        assert!(
            fix.contains("echo 1 > /proc/irq/39/smp_affinity_list"),
            "{fix}"
        );
        assert_eq!(irq_check(&[], &[0], &[0]).status, Status::Unavailable);
    }

    #[test]
    fn nvme_per_core_queues_are_fine() {
        let blk = IrqKind::Block("nvme0n1".into());
        let irqs: Vec<Irq> = (0..4)
            .map(|q| {
                irq(
                    50 + q as u32,
                    &format!("nvme0q{}", q + 1),
                    blk.clone(),
                    &[q],
                    None,
                )
            })
            .collect();
        // Even with a spare core, per-core queues stay where they are.
        let c = irq_check(&irqs, &[1, 2, 3], &[0, 1, 2, 3]);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.current.contains("4 per-core disk queues"),
            "{}",
            c.current
        );
    }

    #[test]
    fn schedulers() {
        assert_eq!(disk_kind("nvme0n1", false, Some(false)), DiskKind::Nvme);
        assert_eq!(disk_kind("vda", true, Some(true)), DiskKind::Virtual);
        assert_eq!(disk_kind("sda", false, Some(true)), DiskKind::Hdd);
        assert_eq!(disk_kind("sdb", false, Some(false)), DiskKind::Ssd);
        let dev = |name: &str, kind, s: &str| BlockDev {
            name: name.into(),
            kind,
            schedulers: s.into(),
        };
        let c = scheduler_check(&[
            dev("vda", DiskKind::Virtual, "none [mq-deadline] kyber bfq"),
            dev("sda", DiskKind::Hdd, "[mq-deadline] none"),
        ]);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert_eq!(c.current, "vda mq-deadline, sda mq-deadline");
        let c = scheduler_check(&[
            dev("nvme0n1", DiskKind::Nvme, "none [mq-deadline] kyber"),
            dev("sdb", DiskKind::Ssd, "none mq-deadline [bfq]"),
            dev("sdc", DiskKind::Hdd, "[none]"),
        ]);
        assert_eq!(c.status, Status::Warn);
        assert_eq!(
            c.writes,
            vec![
                Write {
                    path: "sys/block/nvme0n1/queue/scheduler".into(),
                    value: "none".into()
                },
                Write {
                    path: "sys/block/sdb/queue/scheduler".into(),
                    value: "mq-deadline".into()
                },
            ],
            "sdc has no mq-deadline to switch to"
        );
        assert_eq!(scheduler_check(&[]).status, Status::Unavailable);
    }

    #[test]
    fn thp() {
        assert_eq!(
            selected("always [madvise] never").as_deref(),
            Some("madvise")
        );
        assert_eq!(
            thp_enabled_check(Some("always [madvise] never")).status,
            Status::Ok
        );
        assert_eq!(
            thp_enabled_check(Some("always madvise [never]")).status,
            Status::Ok
        );
        let c = thp_enabled_check(Some("[always] madvise never"));
        assert_eq!(c.status, Status::Warn);
        assert_eq!(
            c.writes[0].path,
            "sys/kernel/mm/transparent_hugepage/enabled"
        );
        assert_eq!(c.writes[0].value, "madvise");
        assert_eq!(thp_enabled_check(None).status, Status::Unavailable);
        assert_eq!(thp_enabled_check(Some("madvise\n")).status, Status::Ok);
        let c = thp_defrag_check(Some("[always] defer defer+madvise madvise never"));
        assert_eq!(c.status, Status::Warn);
        assert_eq!(
            c.writes[0].path,
            "sys/kernel/mm/transparent_hugepage/defrag"
        );
        assert_eq!(
            thp_defrag_check(Some("always defer [defer+madvise] madvise never")).status,
            Status::Ok
        );
    }

    #[test]
    fn dirty_settings() {
        assert_eq!(
            dirty_background_check(Some(5), Some(0), None).status,
            Status::Ok
        );
        let c = dirty_background_check(Some(10), Some(0), Some(24 << 30));
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.current, "10%");
        assert_eq!(c.writes[0].value, "5");
        // bytes override the ratio: 512 MiB of 16 GiB is ~4%.
        let c = dirty_background_check(Some(0), Some(512 << 20), Some(16 << 30));
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.current.contains("512 MiB"), "{}", c.current);
        assert_eq!(
            dirty_background_check(None, None, None).status,
            Status::Unavailable
        );
        assert_eq!(
            dirty_ratio_check(Some(20), Some(0), None).status,
            Status::Ok
        );
        let c = dirty_ratio_check(Some(80), Some(0), None);
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.writes[0].value, "20");
        assert_eq!(
            dirty_ratio_check(Some(5), Some(0), None).status,
            Status::Warn
        );
        assert_eq!(dirty_expire_check(Some(3000)).status, Status::Ok);
        let c = dirty_expire_check(Some(6000));
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.writes[0].value, "3000");
    }

    #[test]
    fn network() {
        assert_eq!(somaxconn_check(Some(4096)).status, Status::Ok);
        let c = somaxconn_check(Some(128));
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.writes[0].path, "proc/sys/net/core/somaxconn");
        assert_eq!(c.writes[0].value, "4096");
        let c = core_buffer_check("net.core.wmem_max", Some(212992));
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.writes[0].path, "proc/sys/net/core/wmem_max");
        assert_eq!(c.writes[0].value, "16777216");
        assert_eq!(
            core_buffer_check("net.core.rmem_max", Some(32 << 20)).status,
            Status::Ok
        );
        let c = tcp_buffer_check("net.ipv4.tcp_wmem", Some("4096\t16384\t4194304"));
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.current, "4096 16384 4194304");
        assert_eq!(c.writes[0].path, "proc/sys/net/ipv4/tcp_wmem");
        assert_eq!(c.writes[0].value, "4096 16384 16777216");
        assert_eq!(
            tcp_buffer_check("net.ipv4.tcp_rmem", Some("4096 131072 33554432")).status,
            Status::Ok
        );
        assert_eq!(
            tcp_buffer_check("net.ipv4.tcp_rmem", None).status,
            Status::Unavailable
        );
    }

    #[test]
    fn clocksources() {
        assert_eq!(
            clocksource_check(Some("tsc"), Some("tsc kvm-clock")).status,
            Status::Ok
        );
        assert_eq!(
            clocksource_check(Some("kvm-clock"), Some("kvm-clock tsc")).status,
            Status::Ok
        );
        let c = clocksource_check(Some("hpet"), Some("tsc hpet acpi_pm"));
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.writes[0].value, "tsc");
        let c = clocksource_check(Some("xen"), Some("xen"));
        assert_eq!(c.status, Status::Warn);
        assert!(c.writes.is_empty());
        assert_eq!(clocksource_check(None, None).status, Status::Unavailable);
    }

    #[test]
    fn parsers() {
        assert_eq!(
            parse_cpu_list("0-2,5, 7-8").unwrap(),
            vec![0, 1, 2, 5, 7, 8]
        );
        assert_eq!(parse_cpu_list("").unwrap(), Vec::<usize>::new());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        assert_eq!(cpu_list(&[5, 0, 1, 2, 7, 8]), "0-2,5,7-8");
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                20000                files\n\
                      Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(parse_limit(limits, "Max open files"), Some(20000));
        assert_eq!(parse_limit(limits, "Max locked memory"), Some(u64::MAX));
        assert_eq!(
            parse_interrupt_line(
                " 38:          0       8986 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0",
                2
            ),
            Some((38, "virtio2-input.0".into()))
        );
        assert_eq!(
            parse_interrupt_line(" 130:  1  2  3  4  IR-PCI-MSI 524289-edge  nvme0q1", 4),
            Some((130, "nvme0q1".into()))
        );
        assert_eq!(
            parse_interrupt_line(" 40:  7  PCI-MSI-edge  eth0-TxRx-0", 1),
            Some((40, "eth0-TxRx-0".into()))
        );
        assert_eq!(
            parse_interrupt_line("NMI:  0  0  Non-maskable interrupts", 2),
            None
        );
        assert_eq!(shard_cpus(&[0, 1, 2, 3], Some(2), None), vec![0, 1]);
        assert_eq!(shard_cpus(&[0, 1], None, None), vec![0, 1]);
        assert_eq!(shard_cpus(&[0, 1], Some(4), None), vec![0, 1]);
        assert_eq!(shard_cpus(&[0, 1, 2], None, Some(&[2])), vec![2]);
    }
}
