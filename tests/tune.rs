//! `spate tune` end to end: on this host (the output's shape only, never the host's state),
//! and on a fake /proc + /sys tree (the statuses, and the files `--apply` writes).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const ITEMS: &[&str] = &[
    "kernel",
    "io_uring",
    "memlock",
    "nofile",
    "cpu_governor",
    "irq_affinity",
    "block_scheduler",
    "thp_enabled",
    "thp_defrag",
    "vm.dirty_background_ratio",
    "vm.dirty_ratio",
    "vm.dirty_expire_centisecs",
    "net.core.somaxconn",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "clocksource",
];

fn spate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spate"))
        .arg("tune")
        .args(args)
        .output()
        .expect("run spate tune")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            text(o),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// item -> (status, the whole item).
fn items(v: &serde_json::Value) -> BTreeMap<String, (String, serde_json::Value)> {
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["item"].as_str().expect("item").to_string(),
                (i["status"].as_str().expect("status").to_string(), i.clone()),
            )
        })
        .collect()
}

#[test]
fn this_host_every_item_has_a_status() {
    let o = spate(&[]);
    assert!(o.status.success(), "{o:?}");
    let out = text(&o);
    for item in ITEMS {
        let line = out
            .lines()
            .find(|l| !l.starts_with(' ') && l.split_whitespace().nth(1) == Some(item))
            .unwrap_or_else(|| panic!("no line for {item}:\n{out}"));
        let status = line.split_whitespace().next().unwrap_or("");
        assert!(
            ["ok", "warn", "unavailable"].contains(&status),
            "{item}: {line}"
        );
    }
    assert!(out.contains("wanted: ") && out.contains("why: "), "{out}");

    let o = spate(&["--json"]);
    assert!(o.status.success(), "{o:?}");
    let v = json(&o);
    let got = items(&v);
    assert_eq!(got.len(), ITEMS.len(), "{v:#}");
    for item in ITEMS {
        let (status, whole) = got
            .get(*item)
            .unwrap_or_else(|| panic!("no {item} in {v:#}"));
        assert!(["ok", "warn", "unavailable"].contains(&status.as_str()));
        for field in ["current", "wanted", "why"] {
            assert!(
                whole[field].as_str().is_some_and(|s| !s.is_empty()),
                "{item}.{field}: {whole}"
            );
        }
    }
    assert!(v.get("changes").is_none(), "no --apply, no changes: {v:#}");
}

#[test]
fn bad_arguments_are_refused() {
    let o = spate(&["--cpus", "3-1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("error: --cpus"));
    let o = spate(&["--shards", "0"]);
    assert_eq!(o.status.code(), Some(1));
}

fn put(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(&p, content).expect("write");
}

fn read(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel))
        .expect("read")
        .trim()
        .to_string()
}

/// A 4-CPU host on 5.15 with everything set the way Spate does not want it: a virtio NIC
/// whose interrupts may run anywhere, an NVMe disk with per-core queues and mq-deadline, THP
/// always, large dirty ratios, small socket buffers, hpet.
fn fake_host() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    put(r, "proc/sys/kernel/osrelease", "5.15.0-91-generic\n");
    put(r, "proc/sys/kernel/io_uring_disabled", "0\n");
    put(
        r,
        "proc/self/limits",
        "Limit                     Soft Limit           Hard Limit           Units\n\
         Max open files            1024                 4096                 files\n\
         Max locked memory         65536                65536                bytes\n",
    );
    put(
        r,
        "proc/self/status",
        "Name:\tspate\nCapEff:\t0000000000000000\nCpus_allowed_list:\t0-3\n",
    );
    put(r, "proc/meminfo", "MemTotal:       16384000 kB\n");
    put(r, "sys/devices/system/cpu/online", "0-3\n");
    for cpu in 0..4 {
        let base = format!("sys/devices/system/cpu/cpu{cpu}/cpufreq");
        put(r, &format!("{base}/scaling_governor"), "powersave\n");
        put(
            r,
            &format!("{base}/scaling_available_governors"),
            "performance powersave\n",
        );
    }
    put(
        r,
        "proc/interrupts",
        "           CPU0       CPU1       CPU2       CPU3\n\
         \x20 1:          9          0          0          0   IO-APIC   1-edge      i8042\n\
         \x2040:        100          0          0          0  PCI-MSIX-0000:00:03.0   0-edge      virtio2-config\n\
         \x2041:        100        200          0          0  PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n\
         \x2042:        100        200          0          0  PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0\n\
         \x2050:          5          0          0          0  IR-PCI-MSI 524288-edge      nvme0q0\n\
         \x2051:         10          0          0          0  IR-PCI-MSI 524289-edge      nvme0q1\n\
         \x2052:          0         10          0          0  IR-PCI-MSI 524290-edge      nvme0q2\n\
         \x2053:          0          0         10          0  IR-PCI-MSI 524291-edge      nvme0q3\n\
         \x2054:          0          0          0         10  IR-PCI-MSI 524292-edge      nvme0q4\n\
         NMI:          0          0          0          0   Non-maskable interrupts\n",
    );
    let irq = |n: u32, aff: &str, eff: &str| {
        put(r, &format!("proc/irq/{n}/smp_affinity_list"), aff);
        put(r, &format!("proc/irq/{n}/effective_affinity_list"), eff);
    };
    irq(1, "0-3", "0");
    irq(40, "0-3", "0");
    irq(41, "0-3", "1");
    irq(42, "0-3", "2");
    irq(50, "0-3", "0");
    for q in 0..4u32 {
        irq(51 + q, &q.to_string(), &q.to_string());
    }
    // The NIC: /sys/class/net/eth0/device -> a virtio node under its PCI function.
    let nic = "sys/devices/pci0000:00/0000:00:03.0";
    fs::create_dir_all(r.join(nic).join("virtio2")).expect("mkdir");
    for n in [40, 41, 42] {
        put(r, &format!("{nic}/msi_irqs/{n}"), "msix\n");
    }
    fs::create_dir_all(r.join("sys/class/net/eth0")).expect("mkdir");
    std::os::unix::fs::symlink(
        "../../../devices/pci0000:00/0000:00:03.0/virtio2",
        r.join("sys/class/net/eth0/device"),
    )
    .expect("symlink");
    fs::create_dir_all(r.join("sys/class/net/lo")).expect("mkdir");
    // The disk: nvme0n1 -> nvme0 controller; plus a loop device, which has no hardware.
    fs::create_dir_all(r.join("sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0")).expect("mkdir");
    put(
        r,
        "sys/block/nvme0n1/queue/scheduler",
        "none [mq-deadline] kyber bfq\n",
    );
    put(r, "sys/block/nvme0n1/queue/rotational", "0\n");
    std::os::unix::fs::symlink(
        "../../devices/pci0000:00/0000:00:04.0/nvme/nvme0",
        r.join("sys/block/nvme0n1/device"),
    )
    .expect("symlink");
    put(r, "sys/block/loop0/queue/scheduler", "[none] mq-deadline\n");
    put(
        r,
        "sys/kernel/mm/transparent_hugepage/enabled",
        "[always] madvise never\n",
    );
    put(
        r,
        "sys/kernel/mm/transparent_hugepage/defrag",
        "[always] defer defer+madvise madvise never\n",
    );
    put(r, "proc/sys/vm/dirty_ratio", "80\n");
    put(r, "proc/sys/vm/dirty_bytes", "0\n");
    put(r, "proc/sys/vm/dirty_background_ratio", "10\n");
    put(r, "proc/sys/vm/dirty_background_bytes", "0\n");
    put(r, "proc/sys/vm/dirty_expire_centisecs", "3000\n");
    put(r, "proc/sys/net/core/somaxconn", "128\n");
    put(r, "proc/sys/net/core/rmem_max", "212992\n");
    put(r, "proc/sys/net/core/wmem_max", "212992\n");
    put(r, "proc/sys/net/ipv4/tcp_rmem", "4096\t131072\t6291456\n");
    put(r, "proc/sys/net/ipv4/tcp_wmem", "4096\t16384\t4194304\n");
    put(
        r,
        "sys/devices/system/clocksource/clocksource0/current_clocksource",
        "hpet\n",
    );
    put(
        r,
        "sys/devices/system/clocksource/clocksource0/available_clocksource",
        "tsc hpet acpi_pm \n",
    );
    dir
}

#[test]
fn fake_host_statuses() {
    let dir = fake_host();
    let root = dir.path().to_str().expect("utf-8");
    let o = spate(&["--json", "--root", root, "--shards", "3"]);
    assert!(o.status.success(), "{o:?}");
    let v = json(&o);
    assert_eq!(v["shard_cpus"], "0-2");
    let got = items(&v);
    let status = |item: &str| got[item].0.clone();
    for item in ITEMS {
        let want = match *item {
            "io_uring" => "unavailable", // never probed under --root
            "vm.dirty_expire_centisecs" => "ok",
            _ => "warn",
        };
        assert_eq!(status(item), want, "{item}: {}", got[*item].1);
    }
    let irq = &got["irq_affinity"].1;
    let fix = irq["fix"].as_str().expect("fix");
    // Shards on 0-2, core 3 spare: the NIC queues go there; config and NVMe queues stay.
    assert!(
        fix.contains("echo 3 > /proc/irq/41/smp_affinity_list")
            && fix.contains("echo 3 > /proc/irq/42/smp_affinity_list"),
        "{fix}"
    );
    assert!(
        !fix.contains("/irq/40/") && !fix.contains("/irq/5") && !fix.contains("/irq/1/"),
        "{fix}"
    );
    assert!(
        irq["current"]
            .as_str()
            .expect("current")
            .contains("4 per-core disk queues"),
        "{irq}"
    );
    assert_eq!(got["block_scheduler"].1["current"], "nvme0n1 mq-deadline");
    assert_eq!(
        got["memlock"].1["current"],
        "64 KiB (this shell's soft limit)"
    );
    assert_eq!(got["kernel"].1["current"], "5.15.0-91-generic");

    // All shards on every core: nothing spare, and the NIC queues already run on 1 and 2.
    let v = json(&spate(&["--json", "--root", root]));
    assert_eq!(v["shard_cpus"], "0-3");
    assert_eq!(items(&v)["irq_affinity"].0, "ok");
    // Text output names every item too.
    let out = text(&spate(&["--root", root, "--cpus", "1-3"]));
    assert!(out.contains("(shard cores 1-3)"), "{out}");
    assert!(
        out.contains("echo 0 > /proc/irq/41/smp_affinity_list"),
        "{out}"
    );
}

#[test]
fn fake_host_apply_writes_and_is_idempotent() {
    let dir = fake_host();
    let r = dir.path();
    let root = r.to_str().expect("utf-8");
    let o = spate(&["--apply", "--json", "--root", root, "--shards", "3"]);
    assert!(o.status.success(), "{o:?}");
    let v = json(&o);
    let changes = v["changes"].as_array().expect("changes");
    let changed: BTreeMap<String, (String, String)> = changes
        .iter()
        .map(|c| {
            assert!(c.get("error").is_none(), "{c}");
            let path = c["path"].as_str().expect("path");
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .trim_start_matches('/');
            (
                rel.to_string(),
                (
                    c["old"].as_str().expect("old").to_string(),
                    c["new"].as_str().expect("new").to_string(),
                ),
            )
        })
        .collect();
    let expect = [
        (
            "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
            "powersave",
            "performance",
        ),
        (
            "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
            "powersave",
            "performance",
        ),
        (
            "sys/devices/system/cpu/cpu2/cpufreq/scaling_governor",
            "powersave",
            "performance",
        ),
        ("sys/block/nvme0n1/queue/scheduler", "mq-deadline", "none"),
        (
            "sys/kernel/mm/transparent_hugepage/enabled",
            "always",
            "madvise",
        ),
        (
            "sys/kernel/mm/transparent_hugepage/defrag",
            "always",
            "madvise",
        ),
        ("proc/sys/vm/dirty_background_ratio", "10", "5"),
        ("proc/sys/vm/dirty_ratio", "80", "20"),
        ("proc/sys/net/core/somaxconn", "128", "4096"),
        ("proc/sys/net/core/rmem_max", "212992", "16777216"),
        ("proc/sys/net/core/wmem_max", "212992", "16777216"),
        (
            "proc/sys/net/ipv4/tcp_rmem",
            "4096 131072 6291456",
            "4096 131072 16777216",
        ),
        (
            "proc/sys/net/ipv4/tcp_wmem",
            "4096 16384 4194304",
            "4096 16384 16777216",
        ),
        (
            "sys/devices/system/clocksource/clocksource0/current_clocksource",
            "hpet",
            "tsc",
        ),
    ];
    assert_eq!(changed.len(), expect.len(), "{changed:#?}");
    for (rel, old, new) in expect {
        assert_eq!(
            changed.get(rel),
            Some(&(old.to_string(), new.to_string())),
            "{rel}"
        );
        assert_eq!(read(r, rel), new, "{rel}");
    }
    // Untouched: the core without a shard, IRQ affinity, limits, what was already fine.
    assert_eq!(
        read(r, "sys/devices/system/cpu/cpu3/cpufreq/scaling_governor"),
        "powersave"
    );
    assert_eq!(read(r, "proc/irq/41/smp_affinity_list"), "0-3");
    assert_eq!(read(r, "proc/sys/vm/dirty_expire_centisecs"), "3000");
    assert_eq!(
        read(r, "sys/block/loop0/queue/scheduler"),
        "[none] mq-deadline"
    );
    // The report after applying: what it changed is ok now.
    let got = items(&v);
    for item in [
        "cpu_governor",
        "block_scheduler",
        "thp_enabled",
        "thp_defrag",
        "vm.dirty_background_ratio",
        "vm.dirty_ratio",
        "net.core.somaxconn",
        "net.core.rmem_max",
        "net.core.wmem_max",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
        "clocksource",
    ] {
        assert_eq!(got[item].0, "ok", "{item}: {}", got[item].1);
    }
    for item in ["irq_affinity", "memlock", "nofile", "kernel"] {
        assert_eq!(got[item].0, "warn", "{item}");
    }

    // Again: nothing to change.
    let o = spate(&["--apply", "--root", root, "--shards", "3"]);
    assert!(o.status.success(), "{o:?}");
    let out = text(&o);
    assert!(out.starts_with("apply: nothing to change"), "{out}");
    let v = json(&spate(&[
        "--apply", "--json", "--root", root, "--shards", "3",
    ]));
    assert_eq!(v["changes"].as_array().map(Vec::len), Some(0), "{v:#}");
}

#[test]
fn fake_host_apply_reports_a_failure_and_goes_on() {
    let dir = fake_host();
    let r = dir.path();
    let root = r.to_str().expect("utf-8");
    // A read-only sysctl (mode 0444: refused even to root) stands in for net.core.rmem_max.
    fs::remove_file(r.join("proc/sys/net/core/rmem_max")).expect("rm");
    std::os::unix::fs::symlink(
        "/proc/sys/kernel/ngroups_max",
        r.join("proc/sys/net/core/rmem_max"),
    )
    .expect("symlink");
    let o = spate(&["--apply", "--root", root]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = text(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAILED") && l.contains("rmem_max")),
        "{out}"
    );
    assert!(
        stderr.contains("error: 1 of") && stderr.contains("changes failed"),
        "{stderr}"
    );
    // The rest was still applied, after the failure too.
    assert_eq!(read(r, "proc/sys/net/core/wmem_max"), "16777216");
    assert_eq!(
        read(
            r,
            "sys/devices/system/clocksource/clocksource0/current_clocksource"
        ),
        "tsc"
    );
    assert!(
        out.contains("changed ") && out.contains("somaxconn: 128 -> 4096"),
        "{out}"
    );
}
