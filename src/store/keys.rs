//! Run keys: the identity of one run (pipeline, job, partition start) and its
//! byte encoding, which every run-keyed tree (`runs`, `result_*`) shares.
//!
//! Encoding: `pipeline 0x00 job 0x00 <i64 millis, big-endian, sign bit flipped>`.
//! Flipping the sign bit turns two's complement into offset binary, so byte
//! order equals numeric order across negative (pre-1970) and positive
//! instants. With 0x00 as terminator (smaller than any name byte), sled's
//! lexicographic order is (pipeline, job, time), which is also `RunKey`'s
//! derived `Ord`, and a prefix scan of `pipeline 0x00 job 0x00` yields that
//! job's partitions in time order.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Separates the name fields; names never contain it, which keeps keys
/// unambiguous and makes it sort below every name byte.
const SEP: u8 = 0x00;
/// XOR-ing this into the millis flips the sign bit (offset binary).
const SIGN_BIT: u64 = 1 << 63;
/// Width of the encoded instant.
const TIME_LEN: usize = 8;

/// The identity of one run: one partition of one job of one pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunKey {
    /// Pipeline name; first so that one pipeline's runs are contiguous on disk.
    pub pipeline: String,
    /// Job name within the pipeline; second so a job's runs are contiguous.
    pub job: String,
    /// Inclusive start of the partition; stored at millisecond precision, so
    /// instants with sub-millisecond parts are refused rather than silently
    /// truncated (a truncated key would not round-trip to the caller's key).
    pub partition_start: DateTime<Utc>,
}

impl RunKey {
    /// Builds a key; no validation happens until it is encoded.
    pub fn new(
        pipeline: impl Into<String>,
        job: impl Into<String>,
        partition_start: DateTime<Utc>,
    ) -> Self {
        Self {
            pipeline: pipeline.into(),
            job: job.into(),
            partition_start,
        }
    }

    /// The sled key bytes of this run.
    pub fn encode(&self) -> Result<Vec<u8>, KeyError> {
        let mut out = job_prefix(&self.pipeline, &self.job)?;
        out.extend_from_slice(&encode_instant(self.partition_start)?);
        Ok(out)
    }

    /// Parses key bytes read back from a run-keyed tree.
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        // The instant is fixed-width at the end; it may itself contain 0x00,
        // so the separators are searched for only in the part before it.
        let Some(head_len) = bytes.len().checked_sub(TIME_LEN) else {
            return Err(KeyError::Malformed {
                bytes: escape(bytes),
                why: "shorter than the 8-byte instant",
            });
        };
        let (head, time) = bytes.split_at(head_len);
        let Some(names) = head.strip_suffix(&[SEP]) else {
            return Err(KeyError::Malformed {
                bytes: escape(bytes),
                why: "no separator after the job name",
            });
        };
        let mut parts = names.split(|b| *b == SEP);
        let (Some(pipeline), Some(job), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyError::Malformed {
                bytes: escape(bytes),
                why: "expected exactly two names",
            });
        };
        let name = |raw: &[u8]| -> Result<String, KeyError> {
            if raw.is_empty() {
                return Err(KeyError::Malformed {
                    bytes: escape(bytes),
                    why: "empty name",
                });
            }
            String::from_utf8(raw.to_vec()).map_err(|_| KeyError::Malformed {
                bytes: escape(bytes),
                why: "name is not utf-8",
            })
        };
        let mut millis = [0_u8; TIME_LEN];
        millis.copy_from_slice(time);
        let millis = i64::from_be_bytes((u64::from_be_bytes(millis) ^ SIGN_BIT).to_be_bytes());
        let partition_start =
            DateTime::<Utc>::from_timestamp_millis(millis).ok_or_else(|| KeyError::Malformed {
                bytes: escape(bytes),
                why: "instant out of range",
            })?;
        Ok(Self {
            pipeline: name(pipeline)?,
            job: name(job)?,
            partition_start,
        })
    }
}

impl fmt::Display for RunKey {
    /// `shop/orders_hourly@2024-01-01T00:00:00Z`: the form used in logs and
    /// error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}@{}",
            self.pipeline,
            self.job,
            self.partition_start
                .to_rfc3339_opts(SecondsFormat::AutoSi, true)
        )
    }
}

/// Why a name or key could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Names are the fields of the key; an empty one would make a pipeline
    /// prefix scan match every pipeline's keys in a confusing way.
    #[error("{field} name is empty")]
    EmptyName {
        /// `pipeline` or `job`.
        field: &'static str,
    },
    /// 0x00 is the separator; allowing it would make two keys collide.
    #[error("{field} name {name:?} contains a nul byte")]
    NulInName {
        /// `pipeline` or `job`.
        field: &'static str,
        /// The offending name, for the message.
        name: String,
    },
    /// Keys hold milliseconds; a finer instant would not round-trip.
    #[error("partition start {instant} has sub-millisecond precision")]
    SubMillisecond {
        /// The offending instant, RFC 3339.
        instant: String,
    },
    /// Bytes read from disk are not a key this module wrote.
    #[error("malformed run key {bytes}: {why}")]
    Malformed {
        /// The raw key, ASCII-escaped so it can be printed.
        bytes: String,
        /// What was wrong with it.
        why: &'static str,
    },
}

/// `pipeline 0x00 job 0x00`: the prefix shared by every run of one job.
pub(crate) fn job_prefix(pipeline: &str, job: &str) -> Result<Vec<u8>, KeyError> {
    let mut out = pipeline_prefix(pipeline)?;
    check_name("job", job)?;
    out.extend_from_slice(job.as_bytes());
    out.push(SEP);
    Ok(out)
}

/// `pipeline 0x00`: the prefix shared by every run of one pipeline. The
/// terminator is what keeps `shop` from matching `shop2`.
pub(crate) fn pipeline_prefix(pipeline: &str) -> Result<Vec<u8>, KeyError> {
    check_name("pipeline", pipeline)?;
    let mut out = Vec::with_capacity(pipeline.len() + 1);
    out.extend_from_slice(pipeline.as_bytes());
    out.push(SEP);
    Ok(out)
}

/// The 8 order-preserving bytes of an instant.
pub(crate) fn encode_instant(instant: DateTime<Utc>) -> Result<[u8; TIME_LEN], KeyError> {
    // Leap-second nanos (>= 1e9) would fold into the next second's millis.
    let nanos = instant.timestamp_subsec_nanos();
    if nanos >= 1_000_000_000 || nanos % 1_000_000 != 0 {
        return Err(KeyError::SubMillisecond {
            instant: instant.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        });
    }
    Ok(encode_millis(instant.timestamp_millis()))
}

/// The bytes of the first whole millisecond at or after `instant`. Keys hold
/// whole milliseconds, so using this for both ends of a range keeps
/// `[from, to)` exact even for bounds like `Utc::now()`.
pub(crate) fn encode_bound(instant: DateTime<Utc>) -> [u8; TIME_LEN] {
    // timestamp_millis floors (also before 1970), so round up by one.
    let floor = instant.timestamp_millis();
    let ceil = if instant.timestamp_subsec_nanos() % 1_000_000 == 0 {
        floor
    } else {
        floor.saturating_add(1)
    };
    encode_millis(ceil)
}

fn encode_millis(millis: i64) -> [u8; TIME_LEN] {
    (u64::from_be_bytes(millis.to_be_bytes()) ^ SIGN_BIT).to_be_bytes()
}

fn check_name(field: &'static str, name: &str) -> Result<(), KeyError> {
    if name.is_empty() {
        return Err(KeyError::EmptyName { field });
    }
    if name.as_bytes().contains(&SEP) {
        return Err(KeyError::NulInName {
            field,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Printable form of raw key bytes for error messages.
pub(crate) fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(millis: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(millis).unwrap()
    }

    #[test]
    fn round_trips_including_pre_1970_and_extremes() {
        let instants = [
            at(0),
            at(-1),
            at(1),
            at(-86_400_000 * 365 * 100),
            Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
            DateTime::<Utc>::MIN_UTC,
            // MAX_UTC has sub-millisecond nanos; truncate to whole millis.
            at(DateTime::<Utc>::MAX_UTC.timestamp_millis()),
        ];
        for t in instants {
            let key = RunKey::new("shop", "orders_hourly", t);
            let bytes = key.encode().unwrap();
            assert_eq!(RunKey::decode(&bytes).unwrap(), key, "{key}");
        }
    }

    #[test]
    fn byte_order_matches_key_order() {
        let names = [
            ("shop", "orders"),
            ("shop", "orders2"),
            ("shop2", "a"),
            ("a-b", "z_z"),
        ];
        let times = [i64::from(i32::MIN) * 1000, -3_600_000, -1, 0, 1, 3_600_000];
        let mut keys = Vec::new();
        for (p, j) in names {
            for t in times {
                keys.push(RunKey::new(p, j, at(t)));
            }
        }
        let mut by_key = keys.clone();
        by_key.sort();
        let mut by_bytes = keys;
        by_bytes.sort_by_key(|k| k.encode().unwrap());
        assert_eq!(by_key, by_bytes);
    }

    #[test]
    fn instant_with_nul_bytes_decodes() {
        // Millis whose offset-binary form is full of 0x00 must not confuse
        // the separator search.
        for millis in [0, 256, -(1 << 40), 1 << 40] {
            let key = RunKey::new("p", "j", at(millis));
            let bytes = key.encode().unwrap();
            assert!(bytes[bytes.len() - 8..].contains(&0), "{bytes:?}");
            assert_eq!(RunKey::decode(&bytes).unwrap(), key);
        }
    }

    #[test]
    fn rejects_bad_names_and_precision() {
        let t = at(0);
        assert_eq!(
            RunKey::new("sh\0op", "j", t).encode(),
            Err(KeyError::NulInName {
                field: "pipeline",
                name: "sh\0op".to_owned()
            })
        );
        assert!(matches!(
            RunKey::new("p", "j\0", t).encode(),
            Err(KeyError::NulInName { field: "job", .. })
        ));
        assert_eq!(
            RunKey::new("", "j", t).encode(),
            Err(KeyError::EmptyName { field: "pipeline" })
        );
        let fine = t + chrono::Duration::nanoseconds(1);
        assert!(matches!(
            RunKey::new("p", "j", fine).encode(),
            Err(KeyError::SubMillisecond { .. })
        ));
    }

    #[test]
    fn decode_rejects_malformed_bytes() {
        let good = RunKey::new("p", "j", at(5)).encode().unwrap();
        let time = &good[good.len() - 8..];
        let with = |head: &[u8]| [head, time].concat();
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            b"short".to_vec(),
            good[..good.len() - 1].to_vec(),
            with(b"p\0j"),                               // no terminator after job
            with(b"pj\0"),                               // one name only
            with(b"p\0j\0x\0"),                          // three names
            with(b"\0j\0"),                              // empty pipeline
            with(b"p\0\0"),                              // empty job
            with(b"p\xff\0j\0"),                         // not utf-8
            [b"p\0j\0".as_slice(), &[0xff; 8]].concat(), // millis out of chrono's range
        ];
        for bytes in cases {
            assert!(
                matches!(RunKey::decode(&bytes), Err(KeyError::Malformed { .. })),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn display_is_path_like() {
        let key = RunKey::new(
            "shop",
            "orders_hourly",
            Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
        );
        assert_eq!(key.to_string(), "shop/orders_hourly@2024-01-01T00:00:00Z");
        let key = RunKey::new("p", "j", at(-1));
        assert_eq!(key.to_string(), "p/j@1969-12-31T23:59:59.999Z");
    }
}
