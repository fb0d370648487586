//! Honeycomb's API in msgpack (libhoney's `Content-Type: application/msgpack`): a batch array
//! or one event, converted to JSON values and then read by the same envelope rule.

use crate::envelope::batch_item;
use crate::{BodyError, Decoded};
use serde_json::{Map, Value};
use sonde_model::{EventError, Limits, time};

/// Decodes a msgpack batch body: one outcome per item, in order. Errors only when the body as a
/// whole is not a msgpack array.
pub fn decode_batch(plain: &[u8], now_us: i64, limits: &Limits) -> Result<Decoded, BodyError> {
    let v = rmpv::decode::read_value_with_max_depth(&mut &plain[..], limits.max_depth + 2)
        .map_err(|e| BodyError::Malformed(format!("malformed msgpack batch: {e}")))?;
    let rmpv::Value::Array(items) = v else {
        return Err(BodyError::Malformed("msgpack batch body must be an array".into()));
    };
    Ok(items
        .into_iter()
        .map(|item| {
            let json = msgpack_to_json(item)?;
            // msgpack has no raw item size at hand; its JSON form is a close enough stand-in.
            limits.check_event_bytes(json.to_string().len())?;
            batch_item(json, now_us, limits)
        })
        .collect())
}

/// Decodes one msgpack value (the single-event endpoint's body) to JSON.
pub fn decode_value(plain: &[u8], limits: &Limits) -> Result<Value, EventError> {
    let v = rmpv::decode::read_value_with_max_depth(&mut &plain[..], limits.max_depth + 1)
        .map_err(|e| EventError::Json(format!("malformed msgpack: {e}")))?;
    msgpack_to_json(v)
}

/// Converts a msgpack value to JSON, with msgpack's timestamp extension (type -1) as RFC3339.
pub fn msgpack_to_json(v: rmpv::Value) -> Result<Value, EventError> {
    use rmpv::Value as M;
    Ok(match v {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(x), _) => Value::from(x),
            (None, Some(x)) => Value::from(x as f64),
            _ => return Err(EventError::Json("msgpack integer out of range".into())),
        },
        M::F32(f) => serde_json::Number::from_f64(f as f64).map_or(Value::Null, Value::Number),
        M::F64(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        M::String(s) => match s.into_str() {
            Some(s) => Value::String(s),
            None => return Err(EventError::Json("msgpack string is not valid UTF-8".into())),
        },
        M::Binary(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
        M::Array(a) => Value::Array(a.into_iter().map(msgpack_to_json).collect::<Result<_, _>>()?),
        M::Map(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                let key = match k {
                    M::String(s) => s
                        .into_str()
                        .ok_or_else(|| EventError::Json("msgpack key is not valid UTF-8".into()))?,
                    other => other.to_string(),
                };
                out.insert(key, msgpack_to_json(v)?);
            }
            Value::Object(out)
        }
        M::Ext(-1, bytes) => Value::String(time::format_us(msgpack_timestamp(&bytes)?)),
        M::Ext(t, _) => return Err(EventError::Json(format!("unsupported msgpack extension type {t}"))),
    })
}

/// Decodes msgpack's timestamp extension (4, 8 or 12 bytes) to µs since the epoch.
fn msgpack_timestamp(b: &[u8]) -> Result<i64, EventError> {
    let (secs, nanos): (i64, u32) = match b.len() {
        4 => (u32::from_be_bytes(b.try_into().unwrap()) as i64, 0),
        8 => {
            let x = u64::from_be_bytes(b.try_into().unwrap());
            ((x & 0x3_ffff_ffff) as i64, (x >> 34) as u32)
        }
        12 => (
            i64::from_be_bytes(b[4..12].try_into().unwrap()),
            u32::from_be_bytes(b[0..4].try_into().unwrap()),
        ),
        n => return Err(EventError::BadTime(format!("msgpack timestamp of {n} bytes"))),
    };
    Ok(secs * 1_000_000 + (nanos / 1000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgpack_timestamps() {
        assert_eq!(
            msgpack_timestamp(&1_700_000_000u32.to_be_bytes()).unwrap(),
            1_700_000_000_000_000
        );
        let x: u64 = (123_456_000u64 << 34) | 1_700_000_000;
        assert_eq!(msgpack_timestamp(&x.to_be_bytes()).unwrap(), 1_700_000_000_123_456);
    }
}
