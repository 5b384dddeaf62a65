//! The io_uring techniques the `uring` model can switch on, one at a time
//! (`serve --model uring --uring FEATURE[,FEATURE]`), and the order in
//! which the lab's `uring-ladder` adds them. Each is a known step from the
//! io_uring literature; whether it pays is this machine's question, which
//! the ladder answers.
//!
//! The set is chosen once at start; `uring.rs` keeps each technique's idea
//! in one small place (the buffer pool, the descriptor table, the send, the
//! wait).

use std::fmt;
use std::str::FromStr;

/// The techniques, by their `--uring` names, with what each does.
pub const FEATURES: [(&str, &str); 6] = [
    (
        "recv-multishot",
        "one receive stays armed per TCP connection (IORING_RECV_MULTISHOT), fed from a buffer ring (IORING_REGISTER_PBUF_RING) instead of buffers provided one SQE at a time; Unix sockets take single receives from the ring",
    ),
    (
        "bundle",
        "a receive may take several ring buffers at once (IORING_RECVSEND_BUNDLE, kernel 6.10); needs recv-multishot",
    ),
    (
        "fixed-files",
        "each connection's socket is registered with the ring, so operations skip the descriptor lookup (IOSQE_FIXED_FILE)",
    ),
    (
        "sqpoll",
        "a kernel thread polls the submission queue (IORING_SETUP_SQPOLL): submitting costs no system call",
    ),
    (
        "send-zc",
        "replies go out with IORING_OP_SEND_ZC: the kernel sends from our memory and says when it is done with it",
    ),
    (
        "batch=N",
        "each io_uring_enter waits for up to N completions (at most 50 us after the first; IORING_FEAT_MIN_TIMEOUT, kernel 6.12)",
    ),
];

/// Which io_uring techniques the `uring` model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringFeatures {
    pub recv_multishot: bool,
    pub bundle: bool,
    pub fixed_files: bool,
    pub sqpoll: bool,
    pub send_zc: bool,
    /// Completions waited for per `io_uring_enter`; 1 is no batching.
    pub batch: u32,
}

/// Most completions one wait may ask for.
pub const MAX_BATCH: u32 = 4096;

impl UringFeatures {
    /// The first io_uring echo servers' way: every technique off.
    pub const NONE: UringFeatures = UringFeatures {
        recv_multishot: false,
        bundle: false,
        fixed_files: false,
        sqpoll: false,
        send_zc: false,
        batch: 1,
    };

    /// What `--model uring` uses when `--uring` is not given: the steps
    /// that won on the ladder measured for the README (2026-11-23, Linux
    /// 6.18, 2 cores); batch, send-zc and sqpoll lost there.
    pub const DEFAULT: UringFeatures = UringFeatures {
        recv_multishot: true,
        bundle: true,
        fixed_files: true,
        ..UringFeatures::NONE
    };

    /// The lab's `uring-ladder`: each step adds one technique to the one
    /// before, named by what it added.
    pub fn ladder() -> Vec<(&'static str, UringFeatures)> {
        let mut steps = vec![("none", UringFeatures::NONE)];
        let mut f = UringFeatures::NONE;
        f.recv_multishot = true;
        steps.push(("+recv-multishot", f));
        f.bundle = true;
        steps.push(("+bundle", f));
        f.fixed_files = true;
        steps.push(("+fixed-files", f));
        f.batch = 16;
        steps.push(("+batch=16", f));
        f.send_zc = true;
        steps.push(("+send-zc", f));
        f.sqpoll = true;
        steps.push(("+sqpoll", f));
        steps
    }
}

impl Default for UringFeatures {
    fn default() -> Self {
        UringFeatures::DEFAULT
    }
}

/// `--uring none`, `--uring default`, `--uring recv-multishot,fixed-files,batch=16`:
/// the set given is the set used (`default` stands for the defaults, so
/// `default,send-zc` adds one).
impl FromStr for UringFeatures {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut f = UringFeatures::NONE;
        for word in s.split(',').map(str::trim) {
            match word.to_ascii_lowercase().as_str() {
                "none" | "" => {}
                "default" => {
                    let batch = f.batch.max(UringFeatures::DEFAULT.batch);
                    f = UringFeatures {
                        recv_multishot: f.recv_multishot || UringFeatures::DEFAULT.recv_multishot,
                        bundle: f.bundle || UringFeatures::DEFAULT.bundle,
                        fixed_files: f.fixed_files || UringFeatures::DEFAULT.fixed_files,
                        sqpoll: f.sqpoll || UringFeatures::DEFAULT.sqpoll,
                        send_zc: f.send_zc || UringFeatures::DEFAULT.send_zc,
                        batch,
                    };
                }
                "recv-multishot" | "multishot" => f.recv_multishot = true,
                "bundle" => f.bundle = true,
                "fixed-files" => f.fixed_files = true,
                "sqpoll" => f.sqpoll = true,
                "send-zc" => f.send_zc = true,
                w if w.starts_with("batch=") => {
                    f.batch = match w["batch=".len()..].parse::<u32>() {
                        Ok(n) if (1..=MAX_BATCH).contains(&n) => n,
                        _ => return Err(format!("'{word}': batch takes 1 to {MAX_BATCH} completions")),
                    }
                }
                _ => {
                    let names: Vec<&str> = FEATURES.iter().map(|(name, _)| *name).collect();
                    return Err(format!(
                        "unknown io_uring feature '{word}' (expected none, default, {})",
                        names.join(", ")
                    ));
                }
            }
        }
        if f.bundle && !f.recv_multishot {
            return Err("bundle needs recv-multishot (bundles are taken from the buffer ring)".into());
        }
        Ok(f)
    }
}

impl fmt::Display for UringFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words = Vec::new();
        for (on, name) in [
            (self.recv_multishot, "recv-multishot"),
            (self.bundle, "bundle"),
            (self.fixed_files, "fixed-files"),
            (self.sqpoll, "sqpoll"),
            (self.send_zc, "send-zc"),
        ] {
            if on {
                words.push(name.to_string());
            }
        }
        if self.batch > 1 {
            words.push(format!("batch={}", self.batch));
        }
        if words.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&words.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (_, f) in UringFeatures::ladder() {
            assert_eq!(f.to_string().parse::<UringFeatures>(), Ok(f));
        }
        assert_eq!("none".parse::<UringFeatures>(), Ok(UringFeatures::NONE));
        assert_eq!("default".parse::<UringFeatures>(), Ok(UringFeatures::DEFAULT));
        let f: UringFeatures = "default,send-zc".parse().unwrap();
        assert!(f.send_zc && f.recv_multishot);
    }

    #[test]
    fn bad_sets_are_refused() {
        assert!("bundle"
            .parse::<UringFeatures>()
            .unwrap_err()
            .contains("needs recv-multishot"));
        assert!("batch=0".parse::<UringFeatures>().is_err());
        assert!("turbo".parse::<UringFeatures>().unwrap_err().contains("'turbo'"));
    }
}
