//! `time`: replies the local time, `2023-12-30 21:45:06.088524`, then closes
//! (seed 001's Python TCP and UDP servers, whose format is Python's
//! `str(datetime.datetime.now())`).

use std::time::SystemTime;

use super::{Now, Protocol, Replies};

pub struct Time;

impl Protocol for Time {
    fn message(&mut self, _msg: &[u8], now: Now, out: &mut Replies) {
        out.send_fmt(format_args!("{}", format_local(now.wall())));
        out.close();
    }

    fn reads_wall_clock(&self) -> bool {
        true
    }
}

/// Python's `str(datetime.now())`: local time, microseconds always shown.
pub fn format_local(wall: SystemTime) -> impl std::fmt::Display {
    chrono::DateTime::<chrono::Local>::from(wall).format("%Y-%m-%d %H:%M:%S%.6f")
}

#[cfg(test)]
mod tests {
    use crate::service::tests::Harness;
    use crate::service::ServiceKind;

    #[test]
    fn replies_a_timestamp_then_closes() {
        let mut h = Harness::of(ServiceKind::Time);
        let reply = h.send(b"hello world");
        // 2023-12-30 21:45:06.088524
        assert_eq!(reply.len(), 26, "{reply}");
        let shape: String = reply
            .chars()
            .map(|c| if c.is_ascii_digit() { 'd' } else { c })
            .collect();
        assert_eq!(shape, "dddd-dd-dd dd:dd:dd.dddddd");
        assert!(h.session.is_finished());
    }
}
