//! Text from outside (a plugin, a netconf, a runtime) made safe to print.

/// A JSON value from outside as an error message quotes it: at most 64 characters, then `...`.
pub fn excerpt(value: &serde_json::Value) -> String {
    crate::decode::describe(value)
}

/// `text` with control characters escaped (`\n`, `\u{1b}`, ...): for text from plugins, a
/// netconf or a runtime, so it cannot forge log lines or terminal sequences in a text log
/// or on stderr.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain"), "plain");
        assert_eq!(
            escape_controls("a\nfake line\x1b[31m"),
            "a\\nfake line\\u{1b}[31m"
        );
    }
}
