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

/// Objects kept in one document as lists by scope (a dataset, or `__all__`): markers, marker
/// settings, query annotations, triggers, SLOs, burn alerts. The helpers below are the find,
/// change and delete every kind of them needs, written once.
pub(crate) trait Keyed {
    /// The object's id.
    fn key(&self) -> &str;
}

/// A document of objects by scope.
pub(crate) type ByScope<T> = std::collections::BTreeMap<String, Vec<T>>;

/// The object `id` of `scope` in document `doc` (`missing` when there is none).
pub(crate) async fn find_in<T>(
    state: &AppState,
    doc: &str,
    scope: &str,
    id: &str,
    missing: impl Fn() -> ApiError,
) -> Result<T, ApiError>
where
    T: Keyed + Clone + serde::de::DeserializeOwned,
{
    let all: ByScope<T> = state.storage.documents().load(doc).await?;
    all.get(scope)
        .and_then(|l| l.iter().find(|x| x.key() == id).cloned())
        .ok_or_else(missing)
}

/// Changes the object `id` of `scope` in document `doc` with `change` (which may refuse, and
/// then nothing is written); answers it changed.
pub(crate) async fn change_in<T>(
    state: &AppState,
    doc: &str,
    scope: &str,
    id: &str,
    missing: impl Fn() -> ApiError,
    change: impl FnOnce(&mut T) -> Result<(), ApiError>,
) -> Result<T, ApiError>
where
    T: Keyed + Clone + serde::Serialize + serde::de::DeserializeOwned,
{
    state
        .storage
        .documents()
        .update(doc, |all: &mut ByScope<T>| {
            let x = all
                .get_mut(scope)
                .and_then(|l| l.iter_mut().find(|x| x.key() == id))
                .ok_or_else(&missing)?;
            let mut new = x.clone();
            change(&mut new)?;
            *x = new.clone();
            Ok(new)
        })
        .await?
}

/// Deletes the object `id` of `scope` from document `doc`; answers it.
pub(crate) async fn delete_in<T>(
    state: &AppState,
    doc: &str,
    scope: &str,
    id: &str,
    missing: impl Fn() -> ApiError,
) -> Result<T, ApiError>
where
    T: Keyed + serde::Serialize + serde::de::DeserializeOwned,
{
    state
        .storage
        .documents()
        .update(doc, |all: &mut ByScope<T>| {
            let list = all.get_mut(scope).ok_or_else(&missing)?;
            let at = list.iter().position(|x| x.key() == id).ok_or_else(&missing)?;
            Ok(list.remove(at))
        })
        .await?
}

/// Adds `item` to `scope` in document `doc`, within `--max-saved-objects` (`what` names the
/// kind in the error); answers it.
pub(crate) async fn add_in<T>(state: &AppState, doc: &str, scope: &str, what: &str, item: T) -> Result<T, ApiError>
where
    T: Clone + serde::Serialize + serde::de::DeserializeOwned,
{
    state
        .storage
        .documents()
        .update(doc, |all: &mut ByScope<T>| {
            let list = all.entry(scope.to_string()).or_default();
            check_room(state, what, scope, list.len())?;
            list.push(item.clone());
            Ok(item)
        })
        .await?
}
