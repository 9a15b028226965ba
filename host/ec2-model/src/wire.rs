//! The EC2 Query protocol on the wire: form-encoded request parameters with EC2's list
//! encodings (`PrivateIpAddress.1`, `Filter.1.Value.1`, `TagSpecification.1.Tag.1.Key`), and
//! XML responses in the `2016-11-15` namespace, errors included, shaped as `aws-sdk-ec2` parses
//! them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use crate::describe::{Filter, Page};
use crate::error::{codes, Ec2Error, Ec2Result};
use crate::types::{DeleteTag, Tag, Tags};

/// The XML namespace of EC2 API version 2016-11-15, the only version `aws-sdk-ec2` speaks.
pub const EC2_NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// The decoded parameters of one request, key → value, e.g. `Filter.1.Name` → `subnet-id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// Decode an `application/x-www-form-urlencoded` body (or query string). Malformed
    /// percent escapes are kept literally, as lenient servers do.
    pub fn from_form(body: &[u8]) -> Self {
        let mut values = BTreeMap::new();
        for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let mut halves = pair.splitn(2, |&b| b == b'=');
            let key = percent_decode(halves.next().unwrap_or_default());
            let value = percent_decode(halves.next().unwrap_or_default());
            values.insert(key, value);
        }
        Self { values }
    }

    /// Parameters from explicit pairs (used by tests and by nested structures).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Add `other`'s parameters, replacing those with the same key.
    pub fn extend(&mut self, other: Params) {
        self.values.extend(other.values);
    }

    /// All parameters in key order, e.g. for the request log.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.values
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `name`, or EC2's `MissingParameter` error.
    pub fn required(&self, name: &str) -> Ec2Result<&str> {
        self.get(name).ok_or_else(|| {
            Ec2Error::new(
                codes::MISSING_PARAMETER,
                format!("The request must contain the parameter {name}"),
            )
        })
    }

    /// `name` parsed as `T`, or `InvalidParameterValue` naming the value.
    pub fn parsed<T: FromStr>(&self, name: &str) -> Ec2Result<Option<T>> {
        self.get(name)
            .map(|raw| {
                raw.parse::<T>().map_err(|_| {
                    Ec2Error::invalid_value(format!(
                        "Value ({raw}) for parameter {name} is invalid."
                    ))
                })
            })
            .transpose()
    }

    /// A required parameter parsed as `T`.
    pub fn required_parsed<T: FromStr>(&self, name: &str) -> Ec2Result<T> {
        self.required(name)?;
        self.parsed(name)?.ok_or_else(|| unreachable_missing(name))
    }

    /// A boolean parameter (`true`/`false`, as the SDK writes them); absent is `false`.
    pub fn flag(&self, name: &str) -> Ec2Result<bool> {
        Ok(self.parsed::<bool>(name)?.unwrap_or(false))
    }

    /// A flattened list of scalars: `name.1`, `name.2`, … in index order.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.indexed(name)
            .into_iter()
            .filter_map(|(_, rest, value)| rest.is_empty().then_some(value))
            .collect()
    }

    /// A flattened list of scalars parsed as `T`.
    pub fn parsed_list<T: FromStr>(&self, name: &str) -> Ec2Result<Vec<T>> {
        self.list(name)
            .into_iter()
            .map(|raw| {
                raw.parse::<T>().map_err(|_| {
                    Ec2Error::invalid_value(format!(
                        "Value ({raw}) for parameter {name} is invalid."
                    ))
                })
            })
            .collect()
    }

    /// A flattened list of structures: `name.1.Key`, `name.1.Value`, … → one `Params` per
    /// index holding `Key`, `Value`, …
    pub fn structs(&self, name: &str) -> Vec<Params> {
        let mut by_index: BTreeMap<u32, Params> = BTreeMap::new();
        for (index, rest, value) in self.indexed(name) {
            if let Some(field) = rest.strip_prefix('.') {
                by_index
                    .entry(index)
                    .or_default()
                    .values
                    .insert(field.to_owned(), value);
            }
        }
        by_index.into_values().collect()
    }

    /// The sub-structure `name.*` (not a list), e.g. `Attachment.AttachmentId`.
    pub fn nested(&self, name: &str) -> Option<Params> {
        let prefix = format!("{name}.");
        let values: BTreeMap<String, String> = self
            .values
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|f| (f.to_owned(), v.clone())))
            .collect();
        (!values.is_empty()).then_some(Params { values })
    }

    /// `Filter.N.Name` / `Filter.N.Value.M` as model filters.
    pub fn filters(&self) -> Ec2Result<Vec<Filter>> {
        self.structs("Filter")
            .into_iter()
            .map(|filter| {
                Ok(Filter {
                    name: filter.required("Name")?.to_owned(),
                    values: filter.list("Value"),
                })
            })
            .collect()
    }

    /// `MaxResults` and `NextToken`.
    pub fn page(&self) -> Ec2Result<Page> {
        Ok(Page {
            max_results: self.parsed("MaxResults")?,
            next_token: self.get("NextToken").map(str::to_owned),
        })
    }

    /// `Tag.N.Key` / `Tag.N.Value` as tags to create.
    pub fn tags(&self, name: &str) -> Ec2Result<Vec<Tag>> {
        self.structs(name)
            .into_iter()
            .map(|tag| {
                Ok(Tag::new(
                    tag.required("Key")?,
                    tag.get("Value").unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// `Tag.N.Key` (and optional `Tag.N.Value`) as tags to delete.
    pub fn delete_tags(&self, name: &str) -> Ec2Result<Vec<DeleteTag>> {
        self.structs(name)
            .into_iter()
            .map(|tag| {
                Ok(DeleteTag {
                    key: tag.required("Key")?.to_owned(),
                    value: tag.get("Value").map(str::to_owned),
                })
            })
            .collect()
    }

    /// The tags of `TagSpecification.N` entries whose `ResourceType` is `resource_type`.
    /// A specification for another resource type is refused, as EC2 does.
    pub fn tag_specifications(&self, resource_type: &str) -> Ec2Result<Tags> {
        let mut tags = Tags::new();
        for spec in self.structs("TagSpecification") {
            let kind = spec.required("ResourceType")?;
            if kind != resource_type {
                return Err(Ec2Error::invalid_value(format!(
                    "'{kind}' is not a valid taggable resource type for this operation."
                )));
            }
            for tag in spec.tags("Tag")? {
                tags.insert(tag.key, tag.value);
            }
        }
        Ok(tags)
    }

    /// `(index, rest after the index, value)` for every key `name.<index><rest>`.
    fn indexed(&self, name: &str) -> Vec<(u32, String, String)> {
        let prefix = format!("{name}.");
        let mut out: Vec<(u32, String, String)> = self
            .values
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, v)| {
                let tail = &k[prefix.len()..];
                let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
                let index = tail[..digits].parse::<u32>().ok()?;
                Some((index, tail[digits..].to_owned(), v.clone()))
            })
            .collect();
        out.sort_by_key(|(index, _, _)| *index);
        out
    }
}

fn unreachable_missing(name: &str) -> Ec2Error {
    Ec2Error::new(
        codes::MISSING_PARAMETER,
        format!("The request must contain the parameter {name}"),
    )
}

fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() => match (hex_value(raw[i + 1]), hex_value(raw[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// A small XML writer: elements are opened and closed explicitly, text is escaped.
#[derive(Debug, Default)]
pub struct XmlWriter {
    out: String,
    open: Vec<&'static str>,
}

impl XmlWriter {
    /// A document starting with the XML declaration.
    pub fn new() -> Self {
        Self {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
            open: Vec::new(),
        }
    }

    /// `<name>`.
    pub fn open(&mut self, name: &'static str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self.open.push(name);
        self
    }

    /// `<name xmlns="namespace">`.
    pub fn open_with_namespace(&mut self, name: &'static str, namespace: &str) -> &mut Self {
        let _ = write!(self.out, "<{name} xmlns=\"{}\">", escape(namespace));
        self.open.push(name);
        self
    }

    /// Close the innermost open element.
    pub fn close(&mut self) -> &mut Self {
        if let Some(name) = self.open.pop() {
            let _ = write!(self.out, "</{name}>");
        }
        self
    }

    /// `<name>text</name>`.
    pub fn leaf(&mut self, name: &'static str, text: impl std::fmt::Display) -> &mut Self {
        let _ = write!(self.out, "<{name}>{}</{name}>", escape(&text.to_string()));
        self
    }

    /// `<name>text</name>` when `text` is `Some`.
    pub fn leaf_opt<T: std::fmt::Display>(
        &mut self,
        name: &'static str,
        text: Option<T>,
    ) -> &mut Self {
        if let Some(text) = text {
            self.leaf(name, text);
        }
        self
    }

    /// `<name><item>…</item>…</name>` with one `<item>` per element, filled by `item`.
    pub fn item_set<T>(
        &mut self,
        name: &'static str,
        items: impl IntoIterator<Item = T>,
        mut item: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        self.open(name);
        for value in items {
            self.open("item");
            item(self, value);
            self.close();
        }
        self.close()
    }

    /// `<name><item>text</item>…</name>`: a set of scalars.
    pub fn scalar_set<T: std::fmt::Display>(
        &mut self,
        name: &'static str,
        items: impl IntoIterator<Item = T>,
    ) -> &mut Self {
        self.open(name);
        for value in items {
            self.leaf("item", value);
        }
        self.close()
    }

    /// The document, with every open element closed.
    pub fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.close();
        }
        self.out
    }
}

/// Escape text for element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A successful response: `<{root} xmlns=…><requestId>…</requestId>…</{root}>`, the body
/// written by `body`; `root` is the action's name followed by `Response`.
pub fn response(root: &'static str, request_id: &str, body: impl FnOnce(&mut XmlWriter)) -> String {
    let mut xml = XmlWriter::new();
    xml.open_with_namespace(root, EC2_NAMESPACE)
        .leaf("requestId", request_id);
    body(&mut xml);
    xml.finish()
}

/// The error document EC2 answers with, for `aws-sdk-ec2`'s `ProvideErrorMetadata`.
pub fn error_document(code: &str, message: &str, request_id: &str) -> String {
    let mut xml = XmlWriter::new();
    xml.open("Response")
        .open("Errors")
        .open("Error")
        .leaf("Code", code)
        .leaf("Message", message)
        .close()
        .close()
        .leaf("RequestID", request_id);
    xml.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_form_with_escapes_and_lists() {
        let params = Params::from_form(
            b"Action=CreateTags&ResourceId.2=eni-2&ResourceId.1=eni-1&ResourceId.10=eni-10\
              &Tag.1.Key=k%20one&Tag.1.Value=a%2Bb+c&Version=2016-11-15",
        );
        assert_eq!(params.get("Action"), Some("CreateTags"));
        assert_eq!(params.list("ResourceId"), ["eni-1", "eni-2", "eni-10"]);
        let tags = params.tags("Tag").expect("tags");
        assert_eq!(tags, [Tag::new("k one", "a+b c")]);
    }

    #[test]
    fn filters_and_tag_specifications() {
        let params = Params::from_pairs([
            ("Filter.1.Name", "tag:cluster"),
            ("Filter.1.Value.1", "a"),
            ("Filter.1.Value.2", "b"),
            ("Filter.2.Name", "status"),
            ("Filter.2.Value.1", "available"),
            ("TagSpecification.1.ResourceType", "network-interface"),
            ("TagSpecification.1.Tag.1.Key", "node"),
            ("TagSpecification.1.Tag.1.Value", "n1"),
        ]);
        let filters = params.filters().expect("filters");
        assert_eq!(filters[0], Filter::new("tag:cluster", ["a", "b"]));
        assert_eq!(filters[1], Filter::new("status", ["available"]));
        let tags = params
            .tag_specifications("network-interface")
            .expect("tags");
        assert_eq!(tags.get("node").map(String::as_str), Some("n1"));
        let err = params
            .tag_specifications("instance")
            .expect_err("wrong type");
        assert_eq!(err.code, codes::INVALID_PARAMETER_VALUE);
    }

    #[test]
    fn malformed_escapes_are_kept() {
        let params = Params::from_form(b"a=100%&b=%zz&c=%4");
        assert_eq!(params.get("a"), Some("100%"));
        assert_eq!(params.get("b"), Some("%zz"));
        assert_eq!(params.get("c"), Some("%4"));
    }

    #[test]
    fn missing_and_invalid_parameters_use_ec2_codes() {
        let params = Params::from_pairs([("DeviceIndex", "one")]);
        assert_eq!(
            params.required("SubnetId").expect_err("missing").code,
            codes::MISSING_PARAMETER
        );
        assert_eq!(
            params
                .required_parsed::<u32>("DeviceIndex")
                .expect_err("bad")
                .code,
            codes::INVALID_PARAMETER_VALUE
        );
    }

    #[test]
    fn xml_is_escaped_and_closed() {
        let mut xml = XmlWriter::new();
        xml.open("a").leaf("b", "<&>\"'").open("c");
        assert_eq!(
            xml.finish(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a><b>&lt;&amp;&gt;&quot;&apos;</b><c></c></a>"
        );
    }

    #[test]
    fn error_document_has_ec2_shape() {
        let doc = error_document("InvalidAction", "no", "req-1");
        assert!(doc.ends_with(
            "<Response><Errors><Error><Code>InvalidAction</Code><Message>no</Message></Error></Errors><RequestID>req-1</RequestID></Response>"
        ));
    }
}
