//! EC2's tag rules: at most 50 user tags per resource, keys of 1..=128 characters, values of
//! at most 256, and the `aws:` prefix reserved for AWS.

use crate::error::{codes, Ec2Error, Ec2Result};
use crate::types::{DeleteTag, Tag, Tags};

/// Most user tags one resource may carry.
pub const MAX_TAGS_PER_RESOURCE: usize = 50;
/// Longest tag key, in characters.
pub const MAX_KEY_LENGTH: usize = 128;
/// Longest tag value, in characters.
pub const MAX_VALUE_LENGTH: usize = 256;

/// Check the keys and values of tags about to be created.
pub(crate) fn validate_new_tags<'a>(
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Ec2Result<()> {
    for (key, value) in tags {
        validate_key(key)?;
        if value.chars().count() > MAX_VALUE_LENGTH {
            return Err(Ec2Error::invalid_value(format!(
                "Tag value exceeds the maximum length of {MAX_VALUE_LENGTH} characters (key '{key}')"
            )));
        }
    }
    Ok(())
}

/// Check keys of tags about to be deleted (the `aws:` prefix cannot be touched either way).
pub(crate) fn validate_delete_tags(tags: &[DeleteTag]) -> Ec2Result<()> {
    tags.iter().try_for_each(|tag| validate_key(&tag.key))
}

fn validate_key(key: &str) -> Ec2Result<()> {
    let length = key.chars().count();
    if length == 0 || length > MAX_KEY_LENGTH {
        return Err(Ec2Error::invalid_value(format!(
            "Tag key '{key}' must be between 1 and {MAX_KEY_LENGTH} characters long"
        )));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(Ec2Error::invalid_value(format!(
            "Value ( {key} ) for parameter key is invalid. Tag keys starting with 'aws:' are reserved for internal use"
        )));
    }
    Ok(())
}

/// Apply `new` on top of `existing` (same key overwrites), failing if the result would have
/// more than [`MAX_TAGS_PER_RESOURCE`] tags.
pub(crate) fn merged(existing: &Tags, new: &[Tag]) -> Ec2Result<Tags> {
    let mut tags = existing.clone();
    for tag in new {
        tags.insert(tag.key.clone(), tag.value.clone());
    }
    if tags.len() > MAX_TAGS_PER_RESOURCE {
        return Err(Ec2Error::new(
            codes::TAG_LIMIT_EXCEEDED,
            "The maximum number of Tags for a resource has been reached.",
        ));
    }
    Ok(tags)
}

/// Remove the tags `delete` names from `tags`.
pub(crate) fn remove(tags: &mut Tags, delete: &[DeleteTag]) {
    for tag in delete {
        let matches = match (&tag.value, tags.get(&tag.key)) {
            (None, Some(_)) => true,
            (Some(wanted), Some(actual)) => wanted == actual,
            (_, None) => false,
        };
        if matches {
            tags.remove(&tag.key);
        }
    }
}

/// Check the tags given at creation (TagSpecifications).
pub(crate) fn validate_map(tags: &Tags) -> Ec2Result<()> {
    validate_new_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    if tags.len() > MAX_TAGS_PER_RESOURCE {
        return Err(Ec2Error::new(
            codes::TAG_LIMIT_EXCEEDED,
            "The maximum number of Tags for a resource has been reached.",
        ));
    }
    Ok(())
}
