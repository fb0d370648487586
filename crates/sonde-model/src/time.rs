//! Event times: RFC3339 strings or epoch numbers in seconds, milliseconds, microseconds or
//! nanoseconds, all normalised to microseconds since the Unix epoch.
//!
//! The unit of an epoch number is inferred from its magnitude, as most observability tools
//! do: below 1e11 it is seconds (until the year 5138), below 1e14 milliseconds, below 1e17
//! microseconds, else nanoseconds.

use crate::EventError;
use chrono::{DateTime, NaiveDateTime};
use serde_json::Value;

/// Parses a time given as a JSON value (string or number).
pub fn parse_time_value(v: &Value) -> Result<i64, EventError> {
    match v {
        Value::String(s) => parse_time_str(s),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(epoch_int_to_us(i))
            } else if let Some(f) = n.as_f64() {
                epoch_float_to_us(f).ok_or_else(|| EventError::BadTime(n.to_string()))
            } else {
                Err(EventError::BadTime(n.to_string()))
            }
        }
        other => Err(EventError::BadTime(other.to_string())),
    }
}

/// Parses a time given as text: RFC3339 (with or without fractional seconds; a missing zone
/// means UTC) or an epoch number.
pub fn parse_time_str(s: &str) -> Result<i64, EventError> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp_micros());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(ndt) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(ndt.and_utc().timestamp_micros());
        }
    }
    if let Ok(i) = t.parse::<i64>() {
        return Ok(epoch_int_to_us(i));
    }
    if let Ok(f) = t.parse::<f64>()
        && let Some(us) = epoch_float_to_us(f)
    {
        return Ok(us);
    }
    Err(EventError::BadTime(s.chars().take(100).collect()))
}

/// Converts an epoch integer in s/ms/µs/ns (inferred from magnitude) to microseconds.
pub fn epoch_int_to_us(i: i64) -> i64 {
    let a = i.unsigned_abs();
    if a < 100_000_000_000 {
        i.saturating_mul(1_000_000)
    } else if a < 100_000_000_000_000 {
        i.saturating_mul(1_000)
    } else if a < 100_000_000_000_000_000 {
        i
    } else {
        i / 1_000
    }
}

fn epoch_float_to_us(f: f64) -> Option<i64> {
    if !f.is_finite() {
        return None;
    }
    let a = f.abs();
    let us = if a < 1e11 {
        f * 1e6
    } else if a < 1e14 {
        f * 1e3
    } else if a < 1e17 {
        f
    } else {
        f / 1e3
    };
    (us.abs() < 9.2e18).then_some(us.round() as i64)
}

/// Formats microseconds since the epoch as RFC3339 with microsecond precision.
pub fn format_us(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| us.to_string())
}

/// The current time in microseconds since the epoch.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: i64 = 1_700_000_000_123_456; // 2023-11-14T22:13:20.123456Z

    #[test]
    fn all_epoch_units_agree() {
        assert_eq!(epoch_int_to_us(1_700_000_000), 1_700_000_000_000_000);
        assert_eq!(epoch_int_to_us(1_700_000_000_123), 1_700_000_000_123_000);
        assert_eq!(epoch_int_to_us(T), T);
        assert_eq!(epoch_int_to_us(T * 1000 + 789), T);
        assert_eq!(
            parse_time_value(&serde_json::json!(1_700_000_000.5)).unwrap(),
            1_700_000_000_500_000
        );
    }

    #[test]
    fn rfc3339_forms() {
        assert_eq!(parse_time_str("2023-11-14T22:13:20.123456Z").unwrap(), T);
        assert_eq!(parse_time_str("2023-11-14T23:13:20.123456+01:00").unwrap(), T);
        assert_eq!(parse_time_str("2023-11-14T22:13:20.123456").unwrap(), T);
        assert_eq!(parse_time_str("1700000000123456").unwrap(), T);
        assert!(parse_time_str("yesterday").is_err());
    }

    proptest! {
        #[test]
        fn rfc3339_round_trips(us in 0i64..4_000_000_000_000_000) {
            prop_assert_eq!(parse_time_str(&format_us(us)).unwrap(), us);
        }

        #[test]
        fn epoch_ms_and_ns_round_trip(ms in 100_000_000_000i64..4_000_000_000_000) {
            prop_assert_eq!(epoch_int_to_us(ms), ms * 1000);
            prop_assert_eq!(epoch_int_to_us(ms * 1_000_000), ms * 1000);
        }
    }
}
