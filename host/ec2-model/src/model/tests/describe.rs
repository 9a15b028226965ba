//! Describe* behaviour: the filters VPC CNI and wasmcni use, wildcards, unknown filters,
//! ids with MaxResults, and pagination that covers everything once in a stable order.

use super::{code, strings, Fixture};
use crate::{codes, CreateNetworkInterface, Filter, Page, Tag};

/// Fixture with two instances, each with one extra ENI; ENIs of node A are tagged.
fn populated() -> (Fixture, String, String) {
    let mut f = Fixture::new();
    let a = f.instance("m5.large");
    let b = f.instance("m5.large");
    for (node, device) in [(&a, 1), (&b, 1)] {
        let eni = f
            .ec2
            .create_network_interface(CreateNetworkInterface::new(&f.subnet.id))
            .expect("eni");
        f.ec2
            .attach_network_interface(&eni.id, &node.id, device, None)
            .expect("attach");
    }
    let a_enis: Vec<String> = f
        .ec2
        .instance_network_interfaces(&a.id)
        .iter()
        .map(|e| e.id.clone())
        .collect();
    f.ec2
        .create_tags(
            &a_enis,
            &[Tag::new("cluster.k8s.amazonaws.com/name", "demo")],
        )
        .expect("tags");
    (f, a.id, b.id)
}

fn ids_of(page: &crate::DescribePage<crate::NetworkInterface>) -> Vec<String> {
    page.items.iter().map(|e| e.id.clone()).collect()
}

#[test]
fn filters_select_by_attachment_subnet_status_and_tags() {
    let (mut f, a, _b) = populated();
    let spare = f
        .ec2
        .create_network_interface(CreateNetworkInterface::new(&f.subnet.id))
        .expect("available eni");
    let describe = |f: &Fixture, filters: Vec<Filter>| {
        f.ec2
            .describe_network_interfaces(&[], &filters, &Page::all())
            .expect("describe")
    };
    let by_instance = describe(
        &f,
        vec![Filter::new("attachment.instance-id", [a.as_str()])],
    );
    assert_eq!(by_instance.items.len(), 2);
    let by_tag = describe(
        &f,
        vec![Filter::new("tag:cluster.k8s.amazonaws.com/name", ["demo"])],
    );
    assert_eq!(ids_of(&by_tag), ids_of(&by_instance));
    let by_tag_key = describe(&f, vec![Filter::new("tag-key", ["cluster.k8s.*"])]);
    assert_eq!(by_tag_key.items.len(), 2);
    let available = describe(&f, vec![Filter::new("status", ["available"])]);
    assert_eq!(ids_of(&available), vec![spare.id.clone()]);
    let all_in_subnet = describe(
        &f,
        vec![
            Filter::new("subnet-id", [f.subnet.id.as_str()]),
            Filter::new("vpc-id", [f.vpc.id.as_str()]),
            Filter::new("availability-zone", ["us-west-2*"]),
        ],
    );
    assert_eq!(all_in_subnet.items.len(), 5);
    let one = describe(
        &f,
        vec![Filter::new("network-interface-id", [spare.id.as_str()])],
    );
    assert_eq!(one.items.len(), 1);
    let either = describe(&f, vec![Filter::new("status", ["available", "in-use"])]);
    assert_eq!(either.items.len(), 5);
    let none = describe(&f, vec![Filter::new("tag:missing", ["*"])]);
    assert!(none.items.is_empty());
}

#[test]
fn unknown_filters_and_bad_paging_are_errors() {
    let (f, _a, _b) = populated();
    let err = f
        .ec2
        .describe_network_interfaces(&[], &[Filter::new("bogus-filter", ["x"])], &Page::all())
        .expect_err("unknown filter");
    assert_eq!(err.code, codes::INVALID_PARAMETER_VALUE);
    assert_eq!(err.message, "The filter 'bogus-filter' is invalid");
    assert_eq!(
        code(f.ec2.describe_network_interfaces(&[], &[], &Page::first(4))),
        codes::INVALID_PARAMETER_VALUE
    );
    let id = f
        .ec2
        .describe_network_interfaces(&[], &[], &Page::all())
        .expect("all")
        .items[0]
        .id
        .clone();
    assert_eq!(
        code(
            f.ec2
                .describe_network_interfaces(&[id], &[], &Page::first(5))
        ),
        codes::INVALID_PARAMETER_COMBINATION
    );
    assert_eq!(
        code(f.ec2.describe_network_interfaces(
            &strings(&["eni-0123456789abcdef0"]),
            &[],
            &Page::all()
        )),
        codes::INVALID_NETWORK_INTERFACE_ID_NOT_FOUND
    );
    assert_eq!(
        code(
            f.ec2
                .describe_network_interfaces(&[], &[], &Page::after(5, "not-a-token"))
        ),
        codes::INVALID_PAGINATION_TOKEN
    );
}

#[test]
fn pagination_returns_everything_once_in_id_order() {
    let mut f = Fixture::new();
    for _ in 0..23 {
        f.ec2
            .create_network_interface(CreateNetworkInterface::new(&f.subnet.id))
            .expect("eni");
    }
    let mut page = Page::first(5);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let got = f
            .ec2
            .describe_network_interfaces(&[], &[], &page)
            .expect("page");
        assert!(got.items.len() <= 5);
        seen.extend(ids_of(&got));
        pages += 1;
        match got.next_token {
            Some(token) => page = Page::after(5, token),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "ordered by id, no repeats");
    assert_eq!(seen.len(), 23);
}

#[test]
fn describe_instances_subnets_and_types() {
    let (f, a, b) = populated();
    let all = f
        .ec2
        .describe_instances(&[], &[], &Page::all())
        .expect("instances");
    assert_eq!(all.items.len(), 2);
    let one = f
        .ec2
        .describe_instances(std::slice::from_ref(&a), &[], &Page::all())
        .expect("by id");
    assert_eq!(one.items[0].network_interfaces.len(), 2);
    assert_eq!(
        one.items[0].network_interfaces[0]
            .attachment
            .as_ref()
            .map(|x| x.device_index),
        Some(0)
    );
    let by_type = f
        .ec2
        .describe_instances(&[], &[Filter::new("instance-type", ["m5.*"])], &Page::all())
        .expect("filter");
    assert_eq!(by_type.items.len(), 2);
    let running = f
        .ec2
        .describe_instances(
            &[],
            &[Filter::new("instance-state-name", ["running"])],
            &Page::all(),
        )
        .expect("filter");
    assert!(running.items.iter().any(|d| d.instance.id == b));
    let subnets = f
        .ec2
        .describe_subnets(std::slice::from_ref(&f.subnet.id), &[], &Page::all())
        .expect("subnets");
    // 251 usable − 4 primaries/ENIs.
    assert_eq!(subnets.items[0].available_ip_address_count, 247);
    let types = f
        .ec2
        .describe_instance_types(&strings(&["m5.large", "p4d.24xlarge"]))
        .expect("types");
    assert_eq!(types.len(), 2);
    let err = f
        .ec2
        .describe_instance_types(&strings(&["m5.large", "m5.bogus"]))
        .expect_err("unknown type");
    assert_eq!(err.code, codes::INVALID_INSTANCE_TYPE);
    assert_eq!(
        err.message,
        "The following supplied instance types do not exist: [m5.bogus]"
    );
    assert_eq!(f.ec2.describe_instance_types(&[]).expect("all").len(), 34);
}
