//! The envelope rule, once: where an event's time and sample rate come from, and what they
//! default to. Every decoder (tree or one-pass, JSON, msgpack, NDJSON) ends here.
//!
//! - A Honeycomb batch item is `{"data": {…}, "time": …, "samplerate": N}`; an absent, null or
//!   empty `time` is the time of arrival.
//! - An NDJSON line is the data itself; its top-level `timestamp` (else `time`) and
//!   `samplerate` keys are taken out of it; absent or null `timestamp` is the time of arrival.
//! - A sample rate below 1 means unsampled (1).

use serde_json::{Map, Value};
use sonde_model::{Event, EventError, FieldValue, Limits, flatten_event, time};

/// Parses a sample rate given as a JSON number or numeric string (Honeycomb clients send
/// integers; a value below 1 means unsampled).
pub fn parse_sample_rate(v: &Value) -> Result<i64, EventError> {
    match v {
        Value::Null => Ok(1),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(i.max(1)),
            (None, Some(f)) if f.is_finite() => Ok((f.round() as i64).max(1)),
            _ => Err(EventError::BadSampleRate(n.to_string())),
        },
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(|i| i.max(1))
            .map_err(|_| EventError::BadSampleRate(s.clone())),
        other => Err(EventError::BadSampleRate(other.to_string())),
    }
}

/// An event's time from its envelope value: absent or null is `now_us`, and so is an empty
/// string when `blank_is_now` (batch items and headers, as Honeycomb's API has it).
pub fn envelope_time(t: Option<&Value>, now_us: i64, blank_is_now: bool) -> Result<i64, EventError> {
    match t {
        None | Some(Value::Null) => Ok(now_us),
        Some(Value::String(s)) if s.is_empty() && blank_is_now => Ok(now_us),
        Some(t) => time::parse_time_value(t),
    }
}

/// Builds an event from its data object and envelope.
pub fn make_event(data: &Value, time_us: i64, sample_rate: i64, limits: &Limits) -> Result<Event, EventError> {
    Ok(Event {
        timestamp_us: time_us,
        sample_rate,
        fields: flatten_event(data, limits)?,
    })
}

/// One Honeycomb batch item, parsed: `{"data": {…}, "time": …, "samplerate": N}`.
pub fn batch_item(item: Value, now_us: i64, limits: &Limits) -> Result<Event, EventError> {
    let Value::Object(mut m) = item else {
        return Err(EventError::NotAnObject(sonde_model::flatten::json_kind(&item)));
    };
    let data = m.remove("data").unwrap_or(Value::Null);
    if !data.is_object() {
        return Err(EventError::Json(format!(
            "batch item needs a \"data\" object, got {}",
            sonde_model::flatten::json_kind(&data)
        )));
    }
    let time_us = envelope_time(m.get("time"), now_us, true)?;
    let rate = parse_sample_rate(m.get("samplerate").unwrap_or(&Value::Null))?;
    make_event(&data, time_us, rate, limits)
}

/// One NDJSON event, parsed: a flat or nested object whose `timestamp` (or `time`) key is its
/// time and whose `samplerate` key is its sample rate; both are taken out of the data.
pub fn line_object(mut obj: Map<String, Value>, now_us: i64, limits: &Limits) -> Result<Event, EventError> {
    let t = obj.remove("timestamp").or_else(|| obj.remove("time"));
    let time_us = envelope_time(t.as_ref(), now_us, false)?;
    let rate = match obj.remove("samplerate") {
        Some(v) => parse_sample_rate(&v)?,
        None => 1,
    };
    make_event(&Value::Object(obj), time_us, rate, limits)
}

/// The single-event endpoint's envelope, from its headers (`X-Honeycomb-Event-Time`,
/// `X-Honeycomb-Samplerate`), over an already decoded data object.
pub fn single_event(
    data: &Value,
    time_header: Option<&str>,
    rate_header: Option<&str>,
    now_us: i64,
    limits: &Limits,
) -> Result<Event, EventError> {
    // A header cannot be absent and present at once: blank (after trimming) means "now".
    let time = time_header.map(str::trim).filter(|t| !t.is_empty());
    let time_us = envelope_time(time.map(|t| Value::String(t.to_string())).as_ref(), now_us, true)?;
    let rate = match rate_header {
        Some(r) => parse_sample_rate(&Value::String(r.to_string()))?,
        None => 1,
    };
    make_event(data, time_us, rate, limits)
}

/// The event of a one-pass parse (see [`crate::onepass`]), its envelope read by the same rule.
pub(crate) fn flat_event(
    fields: Vec<(String, FieldValue)>,
    time: Option<Value>,
    samplerate: Option<Value>,
    now_us: i64,
    blank_time_is_now: bool,
) -> Result<Event, EventError> {
    Ok(Event {
        timestamp_us: envelope_time(time.as_ref(), now_us, blank_time_is_now)?,
        sample_rate: parse_sample_rate(samplerate.as_ref().unwrap_or(&Value::Null))?,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000_000_000;

    #[test]
    fn absent_null_and_blank_times_are_now_where_the_api_says_so() {
        assert_eq!(envelope_time(None, NOW, false).unwrap(), NOW);
        assert_eq!(envelope_time(Some(&Value::Null), NOW, false).unwrap(), NOW);
        assert_eq!(envelope_time(Some(&json!("")), NOW, true).unwrap(), NOW);
        assert!(envelope_time(Some(&json!("")), NOW, false).is_err());
        assert_eq!(
            envelope_time(Some(&json!(1_700_000_001)), NOW, false).unwrap(),
            NOW + 1_000_000
        );
    }

    #[test]
    fn sample_rates_below_one_are_unsampled() {
        assert_eq!(parse_sample_rate(&json!(0)).unwrap(), 1);
        assert_eq!(parse_sample_rate(&json!(-3)).unwrap(), 1);
        assert_eq!(parse_sample_rate(&json!(2.6)).unwrap(), 3);
        assert_eq!(parse_sample_rate(&json!(" 10 ")).unwrap(), 10);
        assert!(parse_sample_rate(&json!("ten")).is_err());
        assert!(parse_sample_rate(&json!([1])).is_err());
    }

    #[test]
    fn lines_take_timestamp_before_time_out_of_the_data() {
        let obj = json!({"timestamp": 1_700_000_002, "time": 5, "samplerate": 4, "a": 1});
        let Value::Object(m) = obj else { unreachable!() };
        let e = line_object(m, NOW, &Limits::default()).unwrap();
        assert_eq!((e.timestamp_us, e.sample_rate), (NOW + 2_000_000, 4));
        // `time` stays data when `timestamp` is the time.
        let mut names: Vec<&str> = e.fields.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        assert_eq!(names, ["a", "time"]);
    }

    #[test]
    fn single_events_read_their_envelope_from_headers() {
        let e = single_event(&json!({"a": 1}), Some(" "), Some("5"), NOW, &Limits::default()).unwrap();
        assert_eq!((e.timestamp_us, e.sample_rate), (NOW, 5));
        assert!(single_event(&json!({"a": 1}), Some("yesterday"), None, NOW, &Limits::default()).is_err());
    }
}
