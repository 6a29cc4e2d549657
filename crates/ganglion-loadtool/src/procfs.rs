//! Memory and CPU time of a process, read from Linux's /proc. Elsewhere every reading is `None`
//! and the report says "n/a".

/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, which the kernel fixes at 100 per second
/// for user space on every architecture we run on.
const TICKS_PER_SECOND: f64 = 100.0;

/// Whose numbers to read: a server by PID, or this load tool.
#[derive(Debug, Clone, Copy)]
pub enum Process {
    Pid(u32),
    This,
}

impl Process {
    fn dir(self) -> String {
        match self {
            Process::Pid(pid) => format!("/proc/{pid}"),
            Process::This => "/proc/self".to_owned(),
        }
    }

    /// Resident set size now (`VmRSS`), in bytes.
    pub fn rss_bytes(self) -> Option<u64> {
        status_kib(&std::fs::read_to_string(format!("{}/status", self.dir())).ok()?, "VmRSS:")
            .map(|kib| kib * 1024)
    }

    /// Peak resident set size over the process's life (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(self) -> Option<u64> {
        status_kib(&std::fs::read_to_string(format!("{}/status", self.dir())).ok()?, "VmHWM:")
            .map(|kib| kib * 1024)
    }

    /// The command name (`/proc/<pid>/comm`), e.g. `ganglion` or `python3`.
    pub fn command_name(self) -> Option<String> {
        let name = std::fs::read_to_string(format!("{}/comm", self.dir())).ok()?;
        Some(name.trim_end().to_owned()).filter(|name| !name.is_empty())
    }

    /// User plus system CPU time so far, in seconds.
    pub fn cpu_seconds(self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("{}/stat", self.dir())).ok()?;
        stat_cpu_ticks(&stat).map(|ticks| ticks as f64 / TICKS_PER_SECOND)
    }
}

/// User plus system CPU time so far of `root` and its direct children (a PostgreSQL
/// postmaster and its backends), in seconds. A child that exited in between is not counted.
pub fn tree_cpu_seconds(root: u32) -> Option<f64> {
    let mut ticks = stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{root}/stat")).ok()?)?;
    for (_, stat) in children(root) {
        ticks += stat_cpu_ticks(&stat).unwrap_or(0);
    }
    Some(ticks as f64 / TICKS_PER_SECOND)
}

/// The first direct child of `parent` whose command name is `name` (as in `/proc/<pid>/comm`),
/// e.g. the nginx master a testkit thread of this process started. Only reads `/proc`.
#[cfg_attr(not(feature = "spawn"), allow(dead_code))]
pub fn child_named(parent: u32, name: &str) -> Option<u32> {
    children(parent).into_iter().find(|(_, stat)| stat_name(stat) == Some(name)).map(|(pid, _)| pid)
}

/// The direct children of `parent`, with their `/proc/<pid>/stat`. A child that exits in between
/// is left out.
fn children(parent: u32) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        if pid == parent {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat_parent(&stat) == Some(parent) {
            found.push((pid, stat));
        }
    }
    found
}

/// The value of a `Key:   123 kB` line of `/proc/<pid>/status`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// `utime + stime` from `/proc/<pid>/stat`. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`: `utime` and `stime` are fields 14
/// and 15, the 12th and 13th after it.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The command name (field 2, between the first `(` and the last `)`).
fn stat_name(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// The parent PID (field 4) from `/proc/<pid>/stat`.
fn stat_parent(stat: &str) -> Option<u32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests;
