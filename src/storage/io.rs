//! Thin wrappers over positional file I/O: the seam where all storage syscalls go through.

use std::fs::File;
use std::io::{self, IoSlice};
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Writes every buffer at `pos`, in order, with as few pwritev(2) calls as the kernel allows.
pub fn pwritev_all(file: &File, mut pos: u64, bufs: &[&[u8]]) -> io::Result<()> {
    let mut idx = 0;
    let mut skip = 0usize; // bytes of bufs[idx] already written
    const IOV_MAX: usize = 1024;
    loop {
        while idx < bufs.len() && bufs[idx].len() == skip {
            idx += 1;
            skip = 0;
        }
        if idx == bufs.len() {
            return Ok(());
        }
        let iovecs: Vec<IoSlice<'_>> = bufs[idx..]
            .iter()
            .take(IOV_MAX)
            .enumerate()
            .map(|(i, b)| IoSlice::new(if i == 0 { &b[skip..] } else { b }))
            .collect();
        let mut n = match rustix::io::pwritev(file, &iovecs, pos) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        pos += n as u64;
        while n > 0 && idx < bufs.len() {
            let left = bufs[idx].len() - skip;
            if n >= left {
                n -= left;
                idx += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
}

/// The offsets that name files `<offset, 20 digits><suffix>` in `dir` (snapshots, index
/// files), ascending.
pub fn offsets_named(dir: &Path, suffix: &str) -> io::Result<Vec<i64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(suffix)
            && stem.len() == 20
            && let Ok(offset) = stem.parse::<i64>()
        {
            out.push(offset);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Reads up to `len` bytes at `pos`; fewer only at end of file.
pub fn read_at_most(file: &File, pos: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// Whether every page of `len` bytes at `pos` is in the page cache, by cachestat(2) (Linux
/// 6.5+). None when the kernel cannot tell (older kernels, other architectures).
///
/// This is the one raw syscall left in storage: rustix (1.1) has no cachestat wrapper (it
/// lists it as not implemented) and libc has neither a wrapper nor, on x86_64 and aarch64
/// glibc, the syscall's number, so it goes through `libc::syscall` with the number spelled out.
pub fn fully_cached(file: &File, pos: u64, len: u64) -> Option<bool> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        use std::os::unix::io::AsRawFd;
        /// cachestat(2); the same number on every architecture of the unified syscall table.
        const SYS_CACHESTAT: libc::c_long = 451;
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        if len == 0 {
            return Some(true);
        }
        // cachestat counts pages of the system's size (4 KiB on x86_64, up to 64 KiB on arm64).
        let page = rustix::param::page_size() as u64;
        let first = pos / page;
        let pages = (pos + len).div_ceil(page) - first;
        let range = Range {
            off: first * page,
            len: pages * page,
        };
        let mut stat = Stat::default();
        // SAFETY: both pointers are to live, properly sized repr(C) structs; flags must be 0.
        let rc = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                file.as_raw_fd(),
                &range as *const Range,
                &mut stat as *mut Stat,
                0u32,
            )
        };
        if rc != 0 {
            return None;
        }
        Some(stat.nr_cache >= pages)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (file, pos, len);
        None
    }
}

/// Brings `len` bytes at `pos` into the page cache (blocking: run it off the executor). Asks
/// for read-ahead, then reads the range through a small buffer, so it returns only once the
/// pages are there.
pub fn warm(file: &File, pos: u64, len: u64) -> io::Result<()> {
    // Only advice: a kernel that ignores it still gets the pages read below. A zero `len`
    // would mean "to the end of the file", so none is asked for then.
    if let Some(len) = NonZeroU64::new(len) {
        let _ = rustix::fs::fadvise(file, pos, Some(len), rustix::fs::Advice::WillNeed);
    }
    const STEP: u64 = 256 * 1024;
    let mut buf = vec![0u8; STEP.min(len) as usize];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(STEP) as usize;
        match file.read_at(&mut buf[..n], pos + done) {
            Ok(0) => break,
            Ok(k) => done += k as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cachestat_sees_pages_leave_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 1 << 20]).unwrap();
        let f = File::open(&path).unwrap();
        f.sync_all().unwrap();
        let Some(hot) = fully_cached(&f, 0, 1 << 20) else {
            return; // the kernel has no cachestat: nothing to check
        };
        assert!(hot, "just written");
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        assert_eq!(fully_cached(&f, 4096, 100_000), Some(false), "dropped");
        warm(&f, 4096, 100_000).unwrap();
        assert_eq!(fully_cached(&f, 4096, 100_000), Some(true), "warmed");
        assert_eq!(fully_cached(&f, 0, 0), Some(true));
    }

    #[test]
    fn pwritev_writes_all_buffers_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let big = vec![7u8; 100_000];
        pwritev_all(&f, 3, &[b"ab", b"", &big, b"c"]).unwrap();
        pwritev_all(&f, 0, &[]).unwrap();
        pwritev_all(&f, 0, &[b"", b""]).unwrap();
        let back = read_at_most(&f, 3, 200_000).unwrap();
        assert_eq!(back.len(), 100_003);
        assert_eq!(&back[..2], b"ab");
        assert_eq!(back[100_002], b'c');
    }
}

/// Fault injection, the seam tests use to make writes and syncs fail as a full or broken
/// disk would. Inert unless `SPATE_TEST_FAULTS` is set when the broker starts (it then logs a
/// warning); never set it in production.
///
/// `SPATE_TEST_FAULTS` is a `;`-separated list of `OP:ERRNO:PATH_PART:COUNT` rules. OP names
/// one kind of write, so a test can fail each write of an append or a roll in turn:
///
/// - `write`: the record batches of an append, into the segment's `.log` (and the offsets
///   log's writes, see `group::offsets`);
/// - `index`: the offset index entries of an append, into the `.index` file;
/// - `timeindex`: the time index entries of an append, into the `.timeindex` file;
/// - `create`: creating a segment's three files, at a roll or for a new partition's first
///   segment (matched against the new `.log` path);
/// - `seal`: the time index entry written when the old segment is sealed at a roll (matched
///   against its `.timeindex` path);
/// - `undo`: cutting a segment's log file back after one of the writes above failed (matched
///   against the `.log` path), which takes the partition offline;
/// - `sync`: fdatasync of segment files;
/// - `stall`: a slow disk rather than a broken one: an fdatasync of segment files first waits
///   ERRNO milliseconds (a number in that field), then succeeds.
///
/// - `clean-written`, `clean-commit`, `clean-committed`, `clean-swapping`, `clean-swapped`,
///   `clean-deleted`: the stages of a log clean's swap (see `storage::cleaner`): its staged
///   files and manifest are durable; before the commit rename; after it; after the first
///   group's files moved; after every rename; after the old files were removed (matched
///   against the partition directory). With ERRNO `ABORT` the process aborts there, as a
///   kill -9 would stop it, so crash tests can stop a broker at each stage.
///
/// ERRNO is `ENOSPC`, `EIO`, `EDQUOT`, `EMFILE` or `ABORT` (milliseconds for `stall`), PATH_PART is matched against the file's
/// path (e.g. `orders-0/`), and COUNT is how many operations fail before the rule stops
/// firing (-1: forever), which models space coming back.
pub mod faults {
    use rustix::io::Errno;
    use std::io;
    use std::path::Path;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Op {
        Write,
        Index,
        TimeIndex,
        Create,
        Seal,
        Undo,
        Sync,
        /// A delay before an fdatasync (matched by `Op::Sync` checks).
        Stall,
        /// The stages of a log clean's swap (see `storage::cleaner`).
        CleanWritten,
        CleanCommit,
        CleanCommitted,
        CleanSwapping,
        CleanSwapped,
        CleanDeleted,
    }

    #[derive(Debug)]
    enum Action {
        Fail(Errno),
        Delay(std::time::Duration),
        /// Ends the process at once (a kill -9 stand-in for crash tests).
        Abort,
    }

    #[derive(Debug)]
    pub struct Rule {
        op: Op,
        action: Action,
        path_part: String,
        /// Failures left; negative: unlimited.
        left: AtomicI64,
    }

    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();

    /// Parses a rule list; the error names the bad rule.
    pub fn parse(spec: &str) -> Result<Vec<Rule>, String> {
        spec.split(';')
            .filter(|r| !r.trim().is_empty())
            .map(|r| {
                let parts: Vec<&str> = r.trim().split(':').collect();
                let [op, errno, path_part, count] = parts[..] else {
                    return Err(format!("fault rule '{r}' is not OP:ERRNO:PATH_PART:COUNT"));
                };
                let op = match op {
                    "write" => Op::Write,
                    "index" => Op::Index,
                    "timeindex" => Op::TimeIndex,
                    "create" => Op::Create,
                    "seal" => Op::Seal,
                    "undo" => Op::Undo,
                    "sync" => Op::Sync,
                    "stall" => Op::Stall,
                    "clean-written" => Op::CleanWritten,
                    "clean-commit" => Op::CleanCommit,
                    "clean-committed" => Op::CleanCommitted,
                    "clean-swapping" => Op::CleanSwapping,
                    "clean-swapped" => Op::CleanSwapped,
                    "clean-deleted" => Op::CleanDeleted,
                    _ => {
                        return Err(format!(
                            "fault rule '{r}': OP must be write, index, timeindex, create, \
                             seal, undo, sync, stall or a clean stage (clean-written, \
                             clean-commit, clean-committed, clean-swapping, clean-swapped, \
                             clean-deleted)"
                        ));
                    }
                };
                let action = match (op, errno) {
                    (Op::Stall, ms) => match ms.parse::<u64>() {
                        Ok(ms) => Action::Delay(std::time::Duration::from_millis(ms)),
                        Err(_) => {
                            return Err(format!("fault rule '{r}': stall takes milliseconds"));
                        }
                    },
                    (_, "ABORT") => Action::Abort,
                    (_, "ENOSPC") => Action::Fail(Errno::NOSPC),
                    (_, "EIO") => Action::Fail(Errno::IO),
                    (_, "EDQUOT") => Action::Fail(Errno::DQUOT),
                    (_, "EMFILE") => Action::Fail(Errno::MFILE),
                    _ => {
                        return Err(format!(
                            "fault rule '{r}': ERRNO must be ENOSPC, EIO, EDQUOT, EMFILE or ABORT"
                        ));
                    }
                };
                let left = count
                    .parse::<i64>()
                    .map_err(|_| format!("fault rule '{r}': COUNT is not a number"))?;
                Ok(Rule {
                    op,
                    action,
                    path_part: path_part.to_string(),
                    left: AtomicI64::new(left),
                })
            })
            .collect()
    }

    /// Installs the rules from `SPATE_TEST_FAULTS`, once, at start-up. Returns how many.
    pub fn install_from_env() -> Result<usize, String> {
        let Ok(spec) = std::env::var("SPATE_TEST_FAULTS") else {
            return Ok(0);
        };
        let rules = parse(&spec)?;
        let n = rules.len();
        let _ = RULES.set(rules);
        Ok(n)
    }

    #[cfg(test)]
    thread_local! {
        /// Rules of the unit test running on this thread: tests run in parallel threads of one
        /// process, so each keeps its own instead of sharing the process-wide ones.
        static TEST_RULES: std::cell::RefCell<Vec<Rule>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Installs rules for the calling thread only (unit tests); replaces any it had.
    #[cfg(test)]
    pub fn set_for_this_thread(spec: &str) {
        let rules = parse(spec).unwrap_or_else(|e| panic!("bad test fault spec: {e}"));
        TEST_RULES.with(|t| *t.borrow_mut() = rules);
    }

    /// Fails the operation if a rule says so.
    pub fn check(op: Op, path: &Path) -> io::Result<()> {
        #[cfg(test)]
        TEST_RULES.with(|t| fire(&t.borrow(), op, path))?;
        match RULES.get() {
            Some(rules) => fire(rules, op, path),
            None => Ok(()),
        }
    }

    fn fire(rules: &[Rule], op: Op, path: &Path) -> io::Result<()> {
        if rules.is_empty() {
            return Ok(());
        }
        let path = path.to_string_lossy();
        for r in rules {
            let stall = r.op == Op::Stall && op == Op::Sync;
            if (r.op != op && !stall) || !path.contains(&r.path_part) {
                continue;
            }
            let fired = r
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                    0 => None,
                    n if n < 0 => Some(n),
                    n => Some(n - 1),
                })
                .is_ok();
            if fired {
                match r.action {
                    Action::Fail(errno) => return Err(errno.into()),
                    // Only ever on the blocking pool, where fdatasync itself waits.
                    Action::Delay(d) => std::thread::sleep(d),
                    Action::Abort => {
                        eprintln!("fault rule: aborting at {op:?} on {path}");
                        std::process::abort();
                    }
                }
            }
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rules_parse_and_count_down() {
            let rules = parse("write:ENOSPC:t-0/:2; sync:EIO:x:-1").unwrap();
            assert!(parse("stall:250:t-0/:1").is_ok());
            assert!(parse("stall:ENOSPC:t-0/:1").is_err());
            assert_eq!(rules.len(), 2);
            let all =
                "index:ENOSPC:a:1;timeindex:EIO:a:1;create:EMFILE:a:1;seal:EDQUOT:a:1;undo:EIO:a:1";
            let ops: Vec<Op> = parse(all).unwrap().iter().map(|r| r.op).collect();
            assert_eq!(
                ops,
                [Op::Index, Op::TimeIndex, Op::Create, Op::Seal, Op::Undo]
            );
            set_for_this_thread("index:ENOSPC:t-0/:2");
            let p = Path::new("/d/t-0/0.index");
            assert!(check(Op::Write, p).is_ok(), "another op");
            assert!(
                check(Op::Index, Path::new("/d/t-1/0.index")).is_ok(),
                "another path"
            );
            assert_eq!(
                check(Op::Index, p).unwrap_err().raw_os_error(),
                Some(Errno::NOSPC.raw_os_error())
            );
            assert!(check(Op::Index, p).is_err());
            assert!(check(Op::Index, p).is_ok(), "counted down");
            set_for_this_thread("");
            assert!(parse("write:ENOSPC:t").is_err());
            assert!(parse("read:EIO:t:1").is_err());
            assert!(parse("write:EPERM:t:1").is_err());
        }
    }
}
