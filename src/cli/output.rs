//! Output for people (aligned tables) and scripts (`--json`), and the progress line.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::error::{Error, Result};

/// An aligned table: upper-case headers, columns two spaces apart.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate().take(n) {
                if i + 1 == n {
                    l.push_str(c);
                } else {
                    l.push_str(c);
                    l.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&mut out, &self.headers);
        for r in &self.rows {
            line(&mut out, r);
        }
        out
    }

    pub fn print(&self) -> Result<()> {
        write_stdout(&self.render())
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a message.
pub fn write_stdout(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(Error::other(format!("writing to stdout: {e}"))),
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| Error::other(format!("encoding JSON: {e}")))?;
    write_stdout(&(s + "\n"))
}

/// A list of node ids, "0,1,2".
pub fn nodes(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// A progress line on stderr for long runs: drawn only when stderr is a terminal and only
/// once more than [`Progress::THRESHOLD`] messages went by, at most ten times a second.
pub struct Progress {
    verb: &'static str,
    total: Option<u64>,
    count: u64,
    bytes: u64,
    started: Instant,
    last_draw: Option<Instant>,
    enabled: bool,
}

impl Progress {
    pub const THRESHOLD: u64 = 1000;

    pub fn new(verb: &'static str, total: Option<u64>) -> Progress {
        Progress {
            verb,
            total,
            count: 0,
            bytes: 0,
            started: Instant::now(),
            last_draw: None,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    pub fn add(&mut self, messages: u64, bytes: u64) {
        self.count += messages;
        self.bytes += bytes;
        if !self.enabled || self.count <= Self::THRESHOLD {
            return;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(now);
        self.draw();
    }

    fn draw(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.count as f64 / secs;
        let mb = self.bytes as f64 / 1e6;
        let line = match self.total {
            Some(total) if total > 0 => {
                let frac = (self.count as f64 / total as f64).min(1.0);
                let width = 30;
                let filled = (frac * width as f64) as usize;
                format!(
                    "{} [{}{}] {}/{} messages ({:.0}%), {mb:.1} MB, {rate:.0} msg/s",
                    self.verb,
                    "#".repeat(filled),
                    "-".repeat(width - filled),
                    self.count,
                    total,
                    frac * 100.0
                )
            }
            _ => format!(
                "{} {} messages, {mb:.1} MB, {rate:.0} msg/s",
                self.verb, self.count
            ),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }

    /// Clears the line (if one was drawn).
    pub fn finish(&mut self) {
        if self.last_draw.take().is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["NAME", "PARTITIONS"]);
        t.row(vec!["orders".into(), "3".into()]);
        t.row(vec!["a".into(), "12".into()]);
        assert_eq!(t.render(), "NAME    PARTITIONS\norders  3\na       12\n");
    }
}
