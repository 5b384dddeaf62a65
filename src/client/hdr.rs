//! Latency histograms in HdrHistogram's standard forms, so that runs made
//! on several hosts merge exactly and other tools read them.
//!
//! - One histogram as text: the V2 compressed encoding (zlib-deflated V2,
//!   then base64), the `HISTF...` strings that HdrHistogram's Java, C,
//!   Go and Python implementations all decode. `bench --json` carries the
//!   whole run's histogram this way and `merge` adds them up, count by
//!   count: percentiles of the sum, never an average of percentiles.
//! - A time series: the interval log (format 1.3, `.hlog`), one histogram
//!   per second, as HistogramLogProcessor and HdrLogProcessing read it.
//!
//! Latencies are recorded in microseconds.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// The longest encoded histogram `decode` takes. A socklab run's is a few
/// kilobytes; a string past this is not one, and is refused before any
/// work (the decoder would otherwise size buffers from the input).
pub const MAX_ENCODED: usize = 16 << 20;

/// The V2 compressed encoding of `h`, in base64: `HISTF...`.
pub fn encode(h: &Histogram<u64>) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot encode the histogram: {e:?}"))?;
    Ok(base64_encode(&bytes))
}

/// Why an encoded histogram was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("it is empty")]
    Empty,
    #[error("it is more than {0} bytes long, more than any histogram socklab writes")]
    TooLong(usize),
    #[error("it is not base64 (character {0} is '{1}')")]
    NotBase64(usize, char),
    #[error("it is truncated (its base64 length {0} is not a multiple of 4)")]
    BadLength(usize),
    #[error("it is not an HdrHistogram in the V2 encoding (a HISTF... string)")]
    NotHdr,
    #[error("it is truncated or corrupt ({0})")]
    Corrupt(String),
}

/// Decodes a `HISTF...` string (V2, compressed or not) into a histogram.
pub fn decode(text: &str) -> Result<Histogram<u64>, DecodeError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DecodeError::Empty);
    }
    if text.len() > MAX_ENCODED {
        return Err(DecodeError::TooLong(text.len()));
    }
    let bytes = base64_decode(text)?;
    // The cookies of V2 (0x1c849313) and V2 compressed (0x1c849314): the
    // first four bytes say whether this is a histogram at all.
    if bytes.len() < 8 || bytes[..3] != [0x1c, 0x84, 0x93] {
        return Err(DecodeError::NotHdr);
    }
    let v2 = match bytes[3] {
        0x13 => bytes,
        0x14 => inflate(&bytes)?,
        _ => return Err(DecodeError::NotHdr),
    };
    // The V2 header is 40 bytes; its second field is the length of the
    // counts after it. The decoder allocates that length before reading,
    // so a corrupt one is caught here rather than as gigabytes of zeros.
    let corrupt = |why: String| DecodeError::Corrupt(why);
    if v2.len() < 40 || v2[..4] != [0x1c, 0x84, 0x93, 0x13] {
        return Err(corrupt("its header is cut short".to_string()));
    }
    let counts = u32::from_be_bytes([v2[4], v2[5], v2[6], v2[7]]) as usize;
    if counts != v2.len() - 40 {
        return Err(corrupt(format!(
            "its header announces {counts} bytes of counts, {} follow",
            v2.len() - 40
        )));
    }
    Deserializer::new()
        .deserialize(&mut v2.as_slice())
        .map_err(|e| corrupt(format!("{e}")))
}

/// The most a compressed histogram may inflate to; a socklab run's counts
/// are at most a few hundred kilobytes.
const MAX_INFLATED: usize = 16 << 20;

/// The V2 histogram inside a V2 compressed one: cookie, length, zlib.
fn inflate(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    use std::io::Read;
    let length = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let Some(zlib) = bytes.get(8..8 + length) else {
        return Err(DecodeError::Corrupt(format!(
            "it announces {length} compressed bytes, {} follow",
            bytes.len() - 8
        )));
    };
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(zlib)
        .take(MAX_INFLATED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Corrupt(format!("its compressed part does not inflate: {e}")))?;
    if out.len() > MAX_INFLATED {
        return Err(DecodeError::TooLong(out.len()));
    }
    Ok(out)
}

/// The value at percentile `p` (0 to 100] as HdrHistogram's reference
/// (Java) implementation defines it: the highest value equivalent to the
/// first recorded value with at least ceil(p% of the count) values at or
/// below it. The Rust crate's `value_at_percentile` divides p by 100 in
/// floating point first, so p99.9 of 5,000 latencies asks for the 4,996th
/// instead of the 4,995th; one ulp off p, as Java takes it, keeps the rank
/// exact, and socklab's figures those that Java, C and Python read from
/// the same histogram.
pub fn value_at_percentile(h: &Histogram<u64>, p: f64) -> u64 {
    let p = p.next_down().clamp(0.0, 100.0);
    let rank = ((p * h.len() as f64) / 100.0).ceil().max(1.0) as u64;
    let mut seen = 0;
    for v in h.iter_recorded() {
        seen += v.count_at_value();
        if seen >= rank {
            return h.highest_equivalent(v.value_iterated_to());
        }
    }
    h.max()
}

/// Standard base64 with padding, as HdrHistogram writes it (the base64
/// crate hdrhistogram's own serialization already builds).
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Strict standard base64: padded, no whitespace inside.
fn base64_decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    use base64::{DecodeError as Bad, Engine};
    if !text.len().is_multiple_of(4) {
        return Err(DecodeError::BadLength(text.len()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| match e {
            Bad::InvalidByte(at, _) | Bad::InvalidLastSymbol(at, _) => {
                DecodeError::NotBase64(at, text[at..].chars().next().unwrap_or('?'))
            }
            Bad::InvalidLength(n) => DecodeError::BadLength(n),
            Bad::InvalidPadding => DecodeError::NotBase64(text.find('=').unwrap_or(0), '='),
        })
}

/// Where one engine thread records its latencies: the run's histogram and,
/// for `--hdr-log`, one histogram per second of the run; in an open loop,
/// its sends' lag too.
pub struct Recorder {
    pub total: Histogram<u64>,
    intervals: Option<Intervals>,
    /// Open loop: how late each send left, in microseconds, after it could
    /// have (`bench::pace`); `None` for a closed loop, which has no schedule.
    pub send_lag: Option<Histogram<u64>>,
    /// Open loop: sends that were due while their connection still carried
    /// the previous request, and waited for it.
    pub queued: u64,
}

/// The seconds of a run, as histograms: the second being filled, and the
/// seconds gone by, already encoded (a few hundred bytes each rather than
/// a histogram's counts array, so a long run does not grow memory by
/// tens of kilobytes a second).
struct Intervals {
    second: u64,
    current: Histogram<u64>,
    done: Vec<(u64, Vec<u8>)>,
}

/// The encoded seconds of one thread: (second of the run, V2 bytes).
pub type EncodedSeconds = Vec<(u64, Vec<u8>)>;

impl Recorder {
    /// A recorder; `per_second` keeps the interval histograms too, and
    /// `open_loop` the send lag.
    pub fn new(per_second: bool, open_loop: bool) -> Recorder {
        Recorder {
            total: run_histogram(),
            intervals: per_second.then(|| Intervals {
                second: 0,
                current: interval_histogram(),
                done: Vec::new(),
            }),
            send_lag: open_loop.then(run_histogram),
            queued: 0,
        }
    }

    /// One open-loop send: its lag in microseconds, and whether it waited
    /// for its connection.
    pub fn record_send(&mut self, (lag_micros, queued): (u64, bool)) {
        if let Some(h) = &mut self.send_lag {
            // 0 is a lag like any other (on time to the microsecond); the
            // histogram holds it below its lowest discernible value.
            let _ = h.record(lag_micros.min(h.high()));
        }
        self.queued += u64::from(queued);
    }

    /// One latency, of a reply that came in `at` after the run began.
    pub fn record(&mut self, micros: u64, at: Duration) {
        let micros = micros.clamp(1, self.total.high());
        let _ = self.total.record(micros);
        if let Some(iv) = &mut self.intervals {
            let second = at.as_secs();
            if second > iv.second {
                iv.finish_second();
                iv.second = second;
            }
            let _ = iv.current.record(micros);
        }
    }

    /// The seconds recorded, for [`write_log`].
    pub fn into_seconds(self) -> EncodedSeconds {
        match self.intervals {
            Some(mut iv) => {
                iv.finish_second();
                iv.done
            }
            None => Vec::new(),
        }
    }
}

impl Intervals {
    fn finish_second(&mut self) {
        if self.current.is_empty() {
            return;
        }
        let mut bytes = Vec::new();
        // Serializing into memory fails only on a histogram that cannot be
        // one; the total still has every latency, so only the log lacks it.
        if V2DeflateSerializer::new()
            .serialize(&self.current, &mut bytes)
            .is_ok()
        {
            self.done.push((self.second, bytes));
        }
        self.current.reset();
    }
}

/// The histogram of a whole run: 1 µs to 1 hour at 3 significant digits.
pub fn run_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// A second's histogram: resizes to what it holds, so a quiet second is small.
fn interval_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is valid")
}

/// Writes the interval log of a run that began at `started_at` and lasted
/// `elapsed`: one histogram per second from every thread's seconds, a
/// second without a reply as an empty histogram (a stall shows as a gap
/// in the counts, not as a missing line).
pub fn write_log(
    path: &Path,
    started_at: SystemTime,
    elapsed: Duration,
    target: &str,
    threads: Vec<EncodedSeconds>,
) -> anyhow::Result<()> {
    let seconds = elapsed.as_secs() + u64::from(elapsed.subsec_nanos() > 0);
    let mut by_second: Vec<Histogram<u64>> = (0..seconds.max(1)).map(|_| interval_histogram()).collect();
    for (second, bytes) in threads.into_iter().flatten() {
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("cannot read back an interval histogram: {e}"))?;
        let index = (second as usize).min(by_second.len() - 1);
        by_second[index].add(&h)?;
    }
    // The header as HdrHistogram's Java writer lays it out; the library's
    // builder writes the histogram lines (and a comment naming the divisor
    // that scales Interval_Max from microseconds to milliseconds).
    let since_epoch = started_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mut text = format!(
        "#[socklab {} bench {target}: latencies in microseconds, one histogram per second]\n\
         #[Histogram log format version 1.3]\n\
         #[StartTime: {since_epoch:.3} (seconds since epoch)]\n\
         #[BaseTime: {since_epoch:.3} (seconds since epoch)]\n\
         \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut text, &mut serializer)?;
    for (i, h) in by_second.iter().enumerate() {
        let begin = Duration::from_secs(i as u64);
        let length = elapsed.saturating_sub(begin).min(Duration::from_secs(1));
        log.write_histogram(h, begin, length, None)
            .map_err(|e| anyhow::anyhow!("cannot write the interval log: {e}"))?;
    }
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(&text))
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length() {
        for len in 0..40u8 {
            let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37).wrapping_add(200)).collect();
            let text = base64_encode(&bytes);
            assert_eq!(text.len() % 4, 0);
            assert_eq!(base64_decode(&text), Ok(bytes));
        }
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        assert_eq!(base64_encode(b"M"), "TQ==");
        assert_eq!(base64_decode("TWE="), Ok(b"Ma".to_vec()));
        assert_eq!(base64_decode("TW=E"), Err(DecodeError::NotBase64(2, '=')));
        assert_eq!(base64_decode("TWE"), Err(DecodeError::BadLength(3)));
    }

    #[test]
    fn a_histogram_survives_its_encoding() {
        let mut h = run_histogram();
        for v in [1, 5, 17, 250, 1_000, 99_999, 3_000_000] {
            h.record_n(v, v % 7 + 1).unwrap();
        }
        let text = encode(&h).unwrap();
        assert!(text.starts_with("HISTF"), "{text}");
        let back = decode(&text).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.value_at_percentile(99.0), h.value_at_percentile(99.0));
    }

    #[test]
    fn truncated_or_foreign_strings_are_refused() {
        let mut h = run_histogram();
        h.record(42).unwrap();
        let text = encode(&h).unwrap();
        // Cut at a multiple of 4: valid base64, a short zlib stream.
        let cut = &text[..text.len() / 8 * 4];
        assert!(
            matches!(decode(cut), Err(DecodeError::Corrupt(_))),
            "{:?}",
            decode(cut)
        );
        assert_eq!(
            decode(&text[..text.len() - 1]),
            Err(DecodeError::BadLength(text.len() - 1))
        );
        assert_eq!(decode("aGVsbG8gd29ybGQ="), Err(DecodeError::NotHdr));
        assert_eq!(decode(""), Err(DecodeError::Empty));
        assert!(matches!(decode("HIST FAA"), Err(DecodeError::NotBase64(4, ' '))));
        // A header announcing 4 GiB of counts: refused, not allocated.
        let mut bomb = vec![0x1c, 0x84, 0x93, 0x13, 0xff, 0xff, 0xff, 0xff];
        bomb.extend_from_slice(&[0; 32]);
        let refused = decode(&base64_encode(&bomb));
        assert!(
            matches!(&refused, Err(DecodeError::Corrupt(why)) if why.contains("4294967295 bytes of counts")),
            "{refused:?}"
        );
    }

    #[test]
    fn percentile_ranks_are_exact() {
        let mut h = run_histogram();
        for v in 1..=5000 {
            h.record(v).unwrap();
        }
        // Rank 4995 of 5000 is p99.9: 4995 (to the histogram's precision).
        assert_eq!(value_at_percentile(&h, 99.9), h.highest_equivalent(4995));
        assert_eq!(value_at_percentile(&h, 50.0), h.highest_equivalent(2500));
        assert_eq!(value_at_percentile(&h, 100.0), h.max());
        assert_eq!(value_at_percentile(&h, 0.0001), 1);
    }

    #[test]
    fn seconds_are_kept_apart() {
        let mut r = Recorder::new(true, false);
        r.record(10, Duration::from_millis(100));
        r.record(20, Duration::from_millis(900));
        r.record(30, Duration::from_millis(2500));
        assert_eq!(r.total.len(), 3);
        let seconds = r.into_seconds();
        assert_eq!(seconds.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 2]);
    }
}
