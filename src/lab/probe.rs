//! Measuring a server process from the outside, through /proc: CPU time,
//! resident memory, threads and child processes, summed over its children
//! (fork and prefork serve in children).

use std::time::Duration;

/// One look at a process and its children.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// User + system CPU of the process, its live children, and the
    /// children it has already reaped.
    pub cpu: Duration,
    /// Resident memory of the process and its live children, in KiB.
    pub rss_kb: u64,
    /// Threads of the process and its children.
    pub threads: u64,
    /// Live child processes.
    pub children: u64,
}

/// The clock ticks /proc counts CPU time in.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Fields of /proc/PID/stat after the command name (which may hold spaces).
fn stat_fields(pid: i32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts with the state letter; number the others from field 4 (ppid).
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// `VmRSS` (KiB) and `Threads` from `/proc/PID/status`, read once; 0 for
/// what is missing.
fn rss_and_threads(pid: i32) -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (0, 0);
    };
    let value = |key: &str| {
        status.lines().find_map(|l| {
            let value = l.strip_prefix(key)?.strip_prefix(':')?;
            value.split_whitespace().next()?.parse().ok()
        })
    };
    (value("VmRSS").unwrap_or(0), value("Threads").unwrap_or(0))
}

/// The live children of `parent`: from each of its threads' `children`
/// list (cheap), or by scanning /proc where the kernel has no such list.
pub fn children_of(parent: i32) -> Vec<i32> {
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) {
        let mut found = Vec::new();
        let mut listed = false;
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                listed = true;
                found.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
        if listed {
            return found;
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat_fields(pid).and_then(|f| f.first().copied()) == Some(parent as u64))
        .collect()
}

/// Samples `pid` and its children now. `None` once the process is gone.
pub fn sample(pid: i32) -> Option<Sample> {
    let hz = ticks_per_second();
    let own = stat_fields(pid)?;
    // From ppid (field 4): utime is field 14, stime 15, cutime 16, cstime 17.
    let field = |f: &[u64], n: usize| f.get(n - 4).copied().unwrap_or(0);
    let mut ticks = field(&own, 14) + field(&own, 15) + field(&own, 16) + field(&own, 17);
    let (mut rss_kb, mut threads) = rss_and_threads(pid);
    let children = children_of(pid);
    for &child in &children {
        if let Some(f) = stat_fields(child) {
            ticks += field(&f, 14) + field(&f, 15);
        }
        let (rss, n) = rss_and_threads(child);
        rss_kb += rss;
        threads += n;
    }
    Some(Sample {
        cpu: Duration::from_secs_f64(ticks as f64 / hz),
        rss_kb,
        threads,
        children: children.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id() as i32).expect("this process exists");
        assert!(s.rss_kb > 0);
        assert!(s.threads >= 1);
        assert_eq!(sample(i32::MAX), None);
    }
}
