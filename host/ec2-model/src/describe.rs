//! Describe* plumbing shared by all resource kinds: EC2 filters (with `*`/`?` wildcards and
//! `tag:` filters) and pagination with `MaxResults` and an opaque, deterministic `NextToken`.

use serde::{Deserialize, Serialize};

use crate::error::{Ec2Error, Ec2Result};
use crate::types::Tags;

/// One EC2 filter: the item matches if any value matches (values are ORed; filters are ANDed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Filter name, e.g. `attachment.instance-id` or `tag:cluster`.
    pub name: String,
    /// Accepted values; `*` and `?` are wildcards.
    pub values: Vec<String>,
}

impl Filter {
    /// A filter on `name` accepting any of `values`.
    pub fn new(
        name: impl Into<String>,
        values: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }
}

/// Pagination parameters: `MaxResults` and `NextToken`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Page {
    /// Page size; `None` returns everything in one page.
    pub max_results: Option<u32>,
    /// Token from the previous page.
    pub next_token: Option<String>,
}

impl Page {
    /// Everything in one page.
    pub fn all() -> Self {
        Self::default()
    }

    /// The first page of at most `max_results` items.
    pub fn first(max_results: u32) -> Self {
        Self {
            max_results: Some(max_results),
            next_token: None,
        }
    }

    /// The page after the one that returned `next_token`.
    pub fn after(max_results: u32, next_token: impl Into<String>) -> Self {
        Self {
            max_results: Some(max_results),
            next_token: Some(next_token.into()),
        }
    }
}

/// One page of a Describe* answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribePage<T> {
    /// Items of this page, in id order.
    pub items: Vec<T>,
    /// Token for the next page; `None` on the last page.
    pub next_token: Option<String>,
}

/// A resource kind that Describe* can filter.
pub(crate) trait Filterable {
    /// Whether EC2 knows this (non-tag) filter name for the kind.
    fn known_filter(name: &str) -> bool;
    /// The item's values for a known filter name.
    fn filter_values(&self, name: &str) -> Vec<String>;
    /// The item's tags, for `tag:<key>`, `tag-key` and `tag-value`.
    fn tags(&self) -> &Tags;
}

/// Reject unknown filter names up front, as EC2 does even when nothing would match.
pub(crate) fn validate_filters<T: Filterable>(filters: &[Filter]) -> Ec2Result<()> {
    for filter in filters {
        let name = filter.name.as_str();
        let known = name.starts_with("tag:")
            || name == "tag-key"
            || name == "tag-value"
            || T::known_filter(name);
        if !known {
            return Err(Ec2Error::invalid_value(format!(
                "The filter '{name}' is invalid"
            )));
        }
    }
    Ok(())
}

/// Whether `item` passes all `filters` (names must have been validated).
pub(crate) fn matches_all<T: Filterable>(item: &T, filters: &[Filter]) -> bool {
    filters.iter().all(|filter| {
        let values: Vec<String> = if let Some(key) = filter.name.strip_prefix("tag:") {
            item.tags().get(key).cloned().into_iter().collect()
        } else if filter.name == "tag-key" {
            item.tags().keys().cloned().collect()
        } else if filter.name == "tag-value" {
            item.tags().values().cloned().collect()
        } else {
            item.filter_values(&filter.name)
        };
        filter.values.iter().any(|pattern| {
            values
                .iter()
                .any(|value| wildcard_match(pattern.as_bytes(), value.as_bytes()))
        })
    })
}

/// EC2 filter matching: `*` matches any run of characters, `?` exactly one.
pub(crate) fn wildcard_match(pattern: &[u8], value: &[u8]) -> bool {
    // Iterative matcher with one backtrack point: linear enough for filter values.
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, v));
                p += 1;
            }
            Some(&c) if c == b'?' || c == value[v] => {
                p += 1;
                v += 1;
            }
            _ => match star {
                Some((star_p, star_v)) => {
                    p = star_p + 1;
                    v = star_v + 1;
                    star = Some((star_p, star_v + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Reject `MaxResults` outside EC2's bounds for the action.
pub(crate) fn validate_max_results(page: &Page, min: u32, max: u32) -> Ec2Result<()> {
    match page.max_results {
        Some(n) if n < min || n > max => Err(Ec2Error::invalid_value(format!(
            "Value ( {n} ) for parameter maxResults is invalid. Expecting a value between {min} and {max}."
        ))),
        _ => Ok(()),
    }
}

/// Cut `items` (sorted by their key) into the page `page` asks for.
///
/// The token encodes the key of the last item returned, so a page continues after it even if
/// items were added or removed in between, and the same state always gives the same pages.
pub(crate) fn paginate<T>(items: Vec<(String, T)>, page: &Page) -> Ec2Result<DescribePage<T>> {
    let after = match &page.next_token {
        Some(token) => Some(decode_token(token)?),
        None => None,
    };
    let mut remaining = items
        .into_iter()
        .filter(|(key, _)| after.as_ref().is_none_or(|after| key > after));
    let limit = page.max_results.map_or(usize::MAX, |n| n as usize);
    let mut out = Vec::new();
    let mut last_key = None;
    for (key, item) in remaining.by_ref().take(limit) {
        last_key = Some(key);
        out.push(item);
    }
    let next_token = match (remaining.next(), last_key) {
        (Some(_), Some(key)) => Some(encode_token(&key)),
        _ => None,
    };
    Ok(DescribePage {
        items: out,
        next_token,
    })
}

const TOKEN_VERSION: &str = "ec2emu1:";

fn encode_token(key: &str) -> String {
    format!("{TOKEN_VERSION}{key}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_token(token: &str) -> Ec2Result<String> {
    let invalid = || {
        Ec2Error::new(
            crate::error::codes::INVALID_PAGINATION_TOKEN,
            format!("The pagination token '{token}' is invalid."),
        )
    };
    if !token.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(TOKEN_VERSION)
        .map(str::to_owned)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"eni-*", b"eni-0abc"));
        assert!(wildcard_match(b"*", b""));
        assert!(wildcard_match(b"a?c", b"abc"));
        assert!(!wildcard_match(b"a?c", b"ac"));
        assert!(wildcard_match(b"*b*d", b"abcbd"));
        assert!(!wildcard_match(b"exact", b"exactly"));
    }

    #[test]
    fn pages_cover_everything_once_in_order() {
        let items: Vec<(String, u32)> = (0..12).map(|i| (format!("k{i:02}"), i)).collect();
        let mut page = Page::first(5);
        let mut seen = Vec::new();
        loop {
            let got = paginate(items.clone(), &page).expect("valid token");
            seen.extend(got.items);
            match got.next_token {
                Some(token) => page = Page::after(5, token),
                None => break,
            }
        }
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn exact_page_size_has_no_trailing_token() {
        let items: Vec<(String, u32)> = (0..5).map(|i| (format!("k{i}"), i)).collect();
        let got = paginate(items, &Page::first(5)).expect("page");
        assert_eq!(got.items.len(), 5);
        assert_eq!(got.next_token, None);
    }

    #[test]
    fn garbage_token_is_rejected() {
        let err = paginate(Vec::<(String, u32)>::new(), &Page::after(5, "nope")).expect_err("bad");
        assert_eq!(err.code, crate::error::codes::INVALID_PAGINATION_TOKEN);
    }
}
