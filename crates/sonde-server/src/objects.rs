//! What the routes for the objects users define (derived columns, markers, saved queries and
//! their annotations) share: ids, timestamps, the checks on their text fields, and the bound on
//! how many a dataset may hold (`--max-saved-objects`).

use crate::AppState;
use crate::error::ApiError;
use serde::{Deserialize, Deserializer};

/// A new random id: 11 characters of `0-9A-Za-z`, the form of Honeycomb's ids.
pub(crate) fn new_id() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 11];
    getrandom::fill(&mut bytes).expect("the system's random source");
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Now, as the RFC 3339 text of `created_at` and `updated_at`.
pub(crate) fn now() -> String {
    sonde_model::time::format_us(sonde_model::time::now_us())
}

/// Refuses `value` of `field` past `max` characters (or, with `required`, empty).
pub(crate) fn check_text(field: &str, value: &str, max: usize, required: bool) -> Result<(), ApiError> {
    let n = value.chars().count();
    if required && n == 0 {
        return Err(ApiError::bad_request(format!(
            "{field}: required, 1 to {max} characters"
        )));
    }
    if n > max {
        return Err(ApiError::bad_request(format!(
            "{field}: at most {max} characters, got {n}"
        )));
    }
    Ok(())
}

/// Refuses a link that is not `http://` or `https://` (the UI renders it as a link, and a
/// `javascript:` one would run in the reader's page).
pub(crate) fn check_url(field: &str, value: &str) -> Result<(), ApiError> {
    check_text(field, value, 2048, false)?;
    let lower = value.to_ascii_lowercase();
    let linkable = value.is_empty() || lower.starts_with("http://") || lower.starts_with("https://");
    if !linkable {
        return Err(ApiError::bad_request(format!(
            "{field}: must be an http:// or https:// URL, got {value:?}"
        )));
    }
    Ok(())
}

/// Refuses one more `what` in `dataset` when it already holds `held` of them: each kind of
/// object is bounded per dataset, since a document is read and written whole.
pub(crate) fn check_room(state: &AppState, what: &str, dataset: &str, held: usize) -> Result<(), ApiError> {
    let max = state.config.max_saved_objects;
    if held >= max {
        return Err(ApiError::bad_request(format!(
            "{dataset} already holds {held} {what}, the most allowed (set with --max-saved-objects / SONDE_MAX_SAVED_OBJECTS)"
        )));
    }
    Ok(())
}

/// Reads `null` as the default: Honeycomb's Go clients send `null` for an empty list.
pub(crate) fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
