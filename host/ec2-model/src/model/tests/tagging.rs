//! Tag rules: 50 tags per resource, key ≤ 128 and value ≤ 256 characters, `aws:` reserved,
//! CreateTags all-or-nothing across resources, DeleteTags by key or key and value.

use super::{code, strings, Fixture};
use crate::{codes, CreateNetworkInterface, DeleteTag, Tag, Tags};

fn tag(key: &str, value: &str) -> Tag {
    Tag::new(key, value)
}

#[test]
fn tags_are_set_overwritten_and_deleted() {
    let mut f = Fixture::new();
    let eni = f
        .ec2
        .create_network_interface(CreateNetworkInterface::new(&f.subnet.id))
        .expect("eni");
    let ids = vec![eni.id.clone()];
    f.ec2
        .create_tags(&ids, &[tag("cluster", "a"), tag("node", "n1")])
        .expect("tags");
    f.ec2
        .create_tags(&ids, &[tag("cluster", "b")])
        .expect("overwrite");
    let tags = &f.ec2.network_interface(&eni.id).expect("eni").tags;
    assert_eq!(tags.get("cluster").map(String::as_str), Some("b"));
    f.ec2
        .delete_tags(
            &ids,
            &[
                DeleteTag {
                    key: "cluster".into(),
                    value: Some("a".into()),
                },
                DeleteTag {
                    key: "node".into(),
                    value: None,
                },
            ],
        )
        .expect("delete");
    let tags = &f.ec2.network_interface(&eni.id).expect("eni").tags;
    assert_eq!(tags.len(), 1, "value mismatch keeps 'cluster': {tags:?}");
}

#[test]
fn tag_limits_and_reserved_prefix() {
    let mut f = Fixture::new();
    let eni = f
        .ec2
        .create_network_interface(CreateNetworkInterface::new(&f.subnet.id))
        .expect("eni");
    let ids = vec![eni.id.clone()];
    let fifty: Vec<Tag> = (0..50).map(|i| tag(&format!("k{i}"), "v")).collect();
    f.ec2.create_tags(&ids, &fifty).expect("50 tags");
    let err = f
        .ec2
        .create_tags(&ids, &[tag("one-more", "v")])
        .expect_err("51st");
    assert_eq!(err.code, codes::TAG_LIMIT_EXCEEDED);
    f.ec2
        .create_tags(&ids, &[tag("k0", "overwrite is fine")])
        .expect("overwrite");
    assert_eq!(
        code(f.ec2.create_tags(&ids, &[tag(&"k".repeat(129), "v")])),
        codes::INVALID_PARAMETER_VALUE
    );
    assert_eq!(
        code(f.ec2.create_tags(&ids, &[tag("", "v")])),
        codes::INVALID_PARAMETER_VALUE
    );
    assert_eq!(
        code(f.ec2.create_tags(&ids, &[tag("k0", &"v".repeat(257))])),
        codes::INVALID_PARAMETER_VALUE
    );
    // Lengths at the limit are valid; the 51st key still is not.
    assert_eq!(
        code(
            f.ec2
                .create_tags(&ids, &[tag(&"k".repeat(128), &"v".repeat(256))])
        ),
        codes::TAG_LIMIT_EXCEEDED
    );
    assert_eq!(
        code(
            f.ec2
                .create_tags(&ids, &[tag("aws:cloudformation:stack", "x")])
        ),
        codes::INVALID_PARAMETER_VALUE
    );
    assert_eq!(
        code(f.ec2.delete_tags(
            &ids,
            &[DeleteTag {
                key: "aws:x".into(),
                value: None
            }]
        )),
        codes::INVALID_PARAMETER_VALUE
    );
    let mut request = CreateNetworkInterface::new(&f.subnet.id);
    request.tags = (0..51)
        .map(|i| (format!("k{i}"), String::new()))
        .collect::<Tags>();
    assert_eq!(
        code(f.ec2.create_network_interface(request)),
        codes::TAG_LIMIT_EXCEEDED
    );
}

#[test]
fn create_tags_is_all_or_nothing_and_covers_every_resource_kind() {
    let mut f = Fixture::new();
    let node = f.instance("m5.large");
    let ids = vec![
        f.vpc.id.clone(),
        f.subnet.id.clone(),
        f.vpc.default_security_group_id.clone(),
        node.id.clone(),
        node.primary_network_interface_id.clone(),
    ];
    f.ec2
        .create_tags(&ids, &[tag("env", "test")])
        .expect("all kinds");
    assert_eq!(f.ec2.instance(&node.id).expect("node").tags.len(), 1);
    let mut with_missing = ids.clone();
    with_missing.push("eni-0123456789abcdef0".into());
    assert_eq!(
        code(f.ec2.create_tags(&with_missing, &[tag("new", "x")])),
        codes::INVALID_NETWORK_INTERFACE_ID_NOT_FOUND
    );
    assert!(
        !f.ec2
            .instance(&node.id)
            .expect("node")
            .tags
            .contains_key("new"),
        "nothing tagged when one id is unknown"
    );
    assert_eq!(
        code(
            f.ec2
                .create_tags(&strings(&["ami-12345678"]), &[tag("a", "b")])
        ),
        codes::INVALID_ID
    );
}
