//! Lenient JSON field access shared by the CNI decoders, with Go's key matching rules.
//!
//! Runtimes are written in Go, whose `encoding/json` matches object keys to struct fields
//! case-insensitively (containerd sends `HostPort`, podman `hostPort`). These helpers do the same
//! (an exact match wins over a case-folded one) and report failures as `path: why`, where `path`
//! is the JSON path of the offending value, so every decoder's errors name what was wrong.

use serde_json::{Map, Value};
use std::fmt;

/// A value that could not be decoded: where it sits in the document and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// JSON path of the offending value, such as `runtimeConfig.portMappings[0].hostPort`.
    pub(crate) path: String,
    /// What was wrong, naming the value.
    pub(crate) why: String,
}

impl FieldError {
    /// A failure of the value at `path`.
    pub(crate) fn new(path: impl Into<String>, why: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            why: why.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.why)
    }
}

/// Joins an object path and a key the way the error messages print them.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Joins an array path and an index.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Looks `key` up like Go's `encoding/json`: the exact key if present, otherwise the first key
/// equal to it ignoring ASCII case. A JSON `null` counts as absent, as it does for Go's
/// pointer, slice and omitempty fields.
pub(crate) fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    let found = match obj.get(key) {
        Some(v) => Some(v),
        None => obj
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v),
    };
    found.filter(|v| !v.is_null())
}

/// True when `key` names the same field as `wanted` under Go's matching rules.
pub(crate) fn key_matches(key: &str, wanted: &str) -> bool {
    key.eq_ignore_ascii_case(wanted)
}

/// A short rendering of a value for error messages: JSON text, cut after 64 characters.
pub(crate) fn describe(v: &Value) -> String {
    const LIMIT: usize = 64;
    let text = v.to_string();
    if text.chars().count() <= LIMIT {
        text
    } else {
        let cut: String = text.chars().take(LIMIT).collect();
        format!("{cut}...")
    }
}

/// The name of a JSON value's kind, for "expected X, got Y" messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value at `path` as an object.
pub(crate) fn as_object<'a>(
    v: &'a Value,
    path: &str,
) -> Result<&'a Map<String, Value>, FieldError> {
    v.as_object().ok_or_else(|| {
        FieldError::new(
            path,
            format!("expected an object, got {} {}", kind(v), describe(v)),
        )
    })
}

/// The value at `path` as an array.
pub(crate) fn as_array<'a>(v: &'a Value, path: &str) -> Result<&'a [Value], FieldError> {
    v.as_array().map(Vec::as_slice).ok_or_else(|| {
        FieldError::new(
            path,
            format!("expected an array, got {} {}", kind(v), describe(v)),
        )
    })
}

/// The value at `path` as a string.
pub(crate) fn as_str<'a>(v: &'a Value, path: &str) -> Result<&'a str, FieldError> {
    v.as_str().ok_or_else(|| {
        FieldError::new(
            path,
            format!("expected a string, got {} {}", kind(v), describe(v)),
        )
    })
}

/// The value at `path` as a boolean.
pub(crate) fn as_bool(v: &Value, path: &str) -> Result<bool, FieldError> {
    v.as_bool().ok_or_else(|| {
        FieldError::new(
            path,
            format!("expected a boolean, got {} {}", kind(v), describe(v)),
        )
    })
}

/// The value at `path` as a non-negative integer no larger than `max`.
pub(crate) fn as_uint(v: &Value, path: &str, max: u64) -> Result<u64, FieldError> {
    match v.as_u64() {
        Some(n) if n <= max => Ok(n),
        Some(n) => Err(FieldError::new(
            path,
            format!("{n} is too large (maximum {max})"),
        )),
        None => Err(FieldError::new(
            path,
            format!(
                "expected a non-negative integer, got {} {}",
                kind(v),
                describe(v)
            ),
        )),
    }
}

/// Optional string member `key` of `obj`; absent and `null` give `None`.
pub(crate) fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, FieldError> {
    field(obj, key)
        .map(|v| as_str(v, &join(path, key)))
        .transpose()
}

/// Optional string member that treats `""` like absence, as Go's `omitempty` writers do.
pub(crate) fn opt_nonempty_string(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, FieldError> {
    Ok(opt_str(obj, key, path)?
        .filter(|s| !s.is_empty())
        .map(str::to_string))
}

/// Optional unsigned integer member `key` of `obj`, at most `max`.
pub(crate) fn opt_uint(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    max: u64,
) -> Result<Option<u64>, FieldError> {
    field(obj, key)
        .map(|v| as_uint(v, &join(path, key), max))
        .transpose()
}

/// Optional list-of-strings member `key` of `obj`; absent gives an empty list.
pub(crate) fn string_list(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Vec<String>, FieldError> {
    let Some(v) = field(obj, key) else {
        return Ok(Vec::new());
    };
    let list_path = join(path, key);
    as_array(v, &list_path)?
        .iter()
        .enumerate()
        .map(|(i, item)| as_str(item, &index(&list_path, i)).map(str::to_string))
        .collect()
}

/// True for names the spec constrains to `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$` (container IDs and
/// network names).
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(first) if first.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The pattern [`is_identifier`] checks, for error messages.
pub(crate) const IDENTIFIER_PATTERN: &str = "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_prefers_exact_key_then_folds_case_and_skips_null() {
        let v = json!({"HostPort": 1, "hostPort": 2, "Other": 3, "gone": null});
        let obj = v.as_object().unwrap();
        assert_eq!(field(obj, "hostPort"), Some(&json!(2)));
        assert_eq!(field(obj, "other"), Some(&json!(3)));
        assert_eq!(field(obj, "gone"), None);
        assert_eq!(field(obj, "missing"), None);
    }

    #[test]
    fn identifiers_follow_the_spec_pattern() {
        for ok in ["a", "0", "abc-DEF_1.2", "k8s.io-123"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "-a", ".a", "_a", "a b", "a/b", "ä", "a:b"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn describe_truncates_long_values() {
        let long = Value::String("x".repeat(100));
        assert_eq!(describe(&long).chars().count(), 67);
        assert_eq!(describe(&json!(5)), "5");
    }

    #[test]
    fn uint_errors_name_path_and_value() {
        let e = as_uint(&json!(-1), "a.b", 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a.b: expected a non-negative integer, got a number -1"
        );
        let e = as_uint(&json!(11), "a.b", 10).unwrap_err();
        assert_eq!(e.to_string(), "a.b: 11 is too large (maximum 10)");
    }
}
