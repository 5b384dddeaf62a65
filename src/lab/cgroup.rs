//! A cgroup v2 group of its own for a server under measurement: its
//! `cpu.stat` counts the CPU of every process and thread that ever ran in
//! it, to the microsecond, children included, exited or not, with nothing
//! sampled. The lab falls back to /proc of the server's tree (and says so)
//! where there is no cgroup v2 hierarchy or it may not make a group there.
//!
//! Written by hand: it is a mkdir, a write of "0" to `cgroup.procs` by the
//! server itself before it runs, a read of `cpu.stat`, and an rmdir; no
//! crate of the ones this project uses does it.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A group made for one server, removed on drop.
#[derive(Debug)]
pub struct CpuGroup {
    dir: PathBuf,
    /// `<dir>/cgroup.procs`, ready for a process between fork and exec,
    /// where nothing may allocate.
    procs: CString,
}

impl CpuGroup {
    /// A new group under the cgroup v2 mount (found in /proc/self/mountinfo,
    /// not assumed), or why not.
    pub fn create() -> anyhow::Result<CpuGroup> {
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let root = mount().context("no cgroup v2 hierarchy is mounted")?;
        let dir = root.join(format!(
            "socklab-{}-{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).with_context(|| format!("cannot make the cgroup {}", dir.display()))?;
        let group = CpuGroup {
            procs: CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes())
                .context("a cgroup path holds a NUL byte")?,
            dir,
        };
        group.usage().context("the new cgroup has no cpu.stat")?;
        Ok(group)
    }

    /// The CPU every process of the group has used so far.
    pub fn usage(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        let usec = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())?;
        Some(Duration::from_micros(usec))
    }

    /// A hook for `CommandExt::pre_exec` that moves the child into the
    /// group before it runs anything, so every process and thread it makes
    /// is counted. Async-signal-safe: an open, a write and a close of a
    /// path made before the fork.
    pub fn entering(&self) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
        let procs = self.procs.clone();
        move || {
            // SAFETY: `procs` is a valid C string; the buffer written is a
            // static one-byte string; nothing here allocates.
            unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        }
    }
}

impl Drop for CpuGroup {
    /// The group goes once its last process has: the kernel may take a
    /// moment after the server's exit to let go of it.
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted.
fn mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        // Fields: id parent major:minor root mountpoint options ... - fstype ...
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mountpoint = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| Path::new(mountpoint).to_path_buf())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_counts_its_own_processes_or_says_why_not() {
        let group = match CpuGroup::create() {
            Ok(g) => g,
            // A machine without cgroup v2, or where we may not make a group:
            // the lab falls back to /proc, so there is nothing to count here.
            Err(e) => return eprintln!("no cgroup here: {e:#}"),
        };
        let before = group.usage().unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"]);
        // SAFETY: the hook only makes async-signal-safe calls.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, group.entering());
        }
        assert!(cmd.status().unwrap().success());
        assert!(
            group.usage().unwrap() > before,
            "the child's CPU is counted after it exited"
        );
    }
}
