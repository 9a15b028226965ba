//! The EC2 calls the ENI provider makes, each through the node's token bucket and retried with
//! exponential backoff and jitter on throttling and server errors.
//!
//! Retries are done here rather than by the SDK (whose client is built with one attempt) so
//! that every attempt takes a token: the SDK's retries would bypass the bucket, and under
//! `RequestLimitExceeded` those are exactly the calls that must slow down. A create carries a
//! `ClientToken` that stays the same across attempts, so a retried create that EC2 did carry
//! out returns the same ENI instead of making a second one.

use std::net::Ipv4Addr;
use std::time::Duration;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, NetworkInterface, NetworkInterfaceAttachmentChanges, ResourceType, Tag,
    TagSpecification,
};
use ipnet::Ipv4Net;

use super::bucket::TokenBucket;
use wasmcni_core::eni::{Ec2Error, Eni, EniAttachment};

/// A subnet as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Subnet {
    /// `subnet-…`.
    pub id: String,
    /// Its IPv4 CIDR.
    pub cidr: Ipv4Net,
    /// Its zone.
    pub availability_zone: String,
    /// Free addresses.
    pub free_addresses: u32,
    /// Tags.
    pub tags: Vec<(String, String)>,
}

/// What a new ENI starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEni {
    /// Subnet.
    pub subnet_id: String,
    /// Security groups.
    pub security_groups: Vec<String>,
    /// Secondary addresses at creation.
    pub secondary_ips: u32,
    /// /28 prefixes at creation.
    pub prefixes: u32,
    /// Tags, set atomically with the creation.
    pub tags: Vec<(String, String)>,
    /// Description.
    pub description: String,
    /// Idempotency token: the same token never makes a second ENI.
    pub client_token: String,
}

/// The EC2 API as the provider uses it.
pub struct Ec2Api {
    client: aws_sdk_ec2::Client,
    bucket: TokenBucket,
    max_attempts: u32,
    calls: std::sync::atomic::AtomicU64,
}

/// Error codes worth another attempt: throttling, server faults, transport failures.
pub fn retryable(code: &str) -> bool {
    matches!(
        code,
        "RequestLimitExceeded"
            | "Throttling"
            | "ThrottlingException"
            | "InternalError"
            | "InternalFailure"
            | "Unavailable"
            | "ServiceUnavailable"
            | "Timeout"
            | "Dispatch"
            | "Http5xx"
    )
}

/// EC2's error code and message of a failed call, or the SDK's kind of failure.
pub fn sdk_failure<E: ProvideErrorMetadata + std::fmt::Debug>(
    error: &SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
) -> (String, String) {
    match error {
        SdkError::ServiceError(service)
            if service.err().code().is_none() && service.raw().status().is_server_error() =>
        {
            (
                "Http5xx".into(),
                format!(
                    "HTTP {}: {}",
                    service.raw().status().as_u16(),
                    service.err().message().unwrap_or("")
                ),
            )
        }
        SdkError::ServiceError(service) => (
            service.err().code().unwrap_or("Unknown").to_owned(),
            service.err().message().unwrap_or("").to_owned(),
        ),
        SdkError::TimeoutError(_) => ("Timeout".into(), "the call did not finish in time".into()),
        SdkError::DispatchFailure(failure) => ("Dispatch".into(), format!("{failure:?}")),
        SdkError::ResponseError(response) if response.raw().status().is_server_error() => (
            "Http5xx".into(),
            format!("HTTP {}", response.raw().status().as_u16()),
        ),
        other => ("Client".into(), format!("{other:?}")),
    }
}

fn backoff(attempt: u32) -> Duration {
    // Full jitter over an exponential ceiling: 100 ms, 200 ms, … capped at 5 s.
    let ceiling = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    let mut byte = [0u8; 2];
    let _ = getrandom::fill(&mut byte);
    let fraction = f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX);
    Duration::from_millis((ceiling as f64 * (0.5 + fraction / 2.0)) as u64)
}

fn tag_pairs(tags: &[Tag]) -> Vec<(String, String)> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn malformed(action: &'static str, what: impl Into<String>) -> Ec2Error {
    Ec2Error::Api {
        action,
        code: "Malformed".into(),
        message: what.into(),
    }
}

/// Converts EC2's description of an ENI.
fn eni_of(action: &'static str, ni: &NetworkInterface) -> Result<Eni, Ec2Error> {
    let id = ni
        .network_interface_id()
        .ok_or_else(|| malformed(action, "an ENI without an id"))?
        .to_owned();
    let primary_ip = ni
        .private_ip_address()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| malformed(action, format!("{id} has no primary IPv4 address")))?;
    let secondary_ips = ni
        .private_ip_addresses()
        .iter()
        .filter(|a| !a.primary().unwrap_or(false))
        .filter_map(|a| a.private_ip_address()?.parse().ok())
        .collect();
    let prefixes = ni
        .ipv4_prefixes()
        .iter()
        .filter_map(|p| p.ipv4_prefix()?.parse().ok())
        .collect();
    let ipv6_prefixes = ni
        .ipv6_prefixes()
        .iter()
        .filter_map(|p| p.ipv6_prefix()?.parse().ok())
        .collect();
    let attachment = ni.attachment().map(|a| EniAttachment {
        id: a.attachment_id().unwrap_or_default().to_owned(),
        instance_id: a.instance_id().unwrap_or_default().to_owned(),
        device_index: a.device_index().unwrap_or_default().max(0) as u32,
        network_card: a.network_card_index().unwrap_or_default().max(0) as u32,
        status: a
            .status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        attached_unix_ms: a
            .attach_time()
            .and_then(|t| t.to_millis().ok())
            .map_or(0, |ms| ms.max(0) as u64),
        delete_on_termination: a.delete_on_termination().unwrap_or(false),
    });
    Ok(Eni {
        mac: ni.mac_address().unwrap_or_default().to_ascii_lowercase(),
        subnet_id: ni.subnet_id().unwrap_or_default().to_owned(),
        security_groups: ni
            .groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_owned))
            .collect(),
        primary_ip,
        secondary_ips,
        prefixes,
        ipv6_prefixes,
        status: ni
            .status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        interface_type: ni
            .interface_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        attachment,
        tags: tag_pairs(ni.tag_set()),
        id,
    })
}

macro_rules! attempt {
    ($api:expr, $action:literal, $call:expr) => {{
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            $api.bucket.take().await;
            $api.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match $call.await {
                Ok(out) => {
                    wasmcni_telemetry::metrics::Metrics::global().ec2_attempt($action, "ok");
                    break Ok(out);
                }
                Err(error) => {
                    let (code, message) = sdk_failure(&error);
                    let metrics = wasmcni_telemetry::metrics::Metrics::global();
                    metrics.ec2_attempt(
                        $action,
                        if code == "RequestLimitExceeded" { "throttled" } else { "error" },
                    );
                    metrics.ec2_error($action, &code);
                    if retryable(&code) && attempt < $api.max_attempts {
                        tracing::debug!(action = $action, attempt, %code, "EC2 call failed; retrying");
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                    break Err(Ec2Error::Api {
                        action: $action,
                        code,
                        message,
                    });
                }
            }
        }
    }};
}

impl Ec2Api {
    /// Wraps `client` (built with one attempt per call) with `bucket` and `max_attempts`.
    pub fn new(client: aws_sdk_ec2::Client, bucket: TokenBucket, max_attempts: u32) -> Ec2Api {
        Ec2Api {
            client,
            bucket,
            max_attempts: max_attempts.max(1),
            calls: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Attempts made so far (every one took a token).
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The bucket.
    pub fn bucket(&self) -> &TokenBucket {
        &self.bucket
    }

    /// The limits of `instance_type` (`DescribeInstanceTypes`).
    pub async fn instance_limits(
        &self,
        instance_type: &str,
    ) -> Result<super::InstanceLimits, Ec2Error> {
        let answer = attempt!(
            self,
            "DescribeInstanceTypes",
            self.client
                .describe_instance_types()
                .instance_types(aws_sdk_ec2::types::InstanceType::from(instance_type))
                .send()
        )?;
        super::limits_of(instance_type, &answer)
    }

    /// ENIs matching `filters` (`name`, values), every page.
    pub async fn describe_enis(&self, filters: &[(&str, &[&str])]) -> Result<Vec<Eni>, Ec2Error> {
        let filters: Vec<Filter> = filters
            .iter()
            .map(|(name, values)| {
                Filter::builder()
                    .name(*name)
                    .set_values(Some(values.iter().map(|v| (*v).to_owned()).collect()))
                    .build()
            })
            .collect();
        let mut token: Option<String> = None;
        let mut enis = Vec::new();
        loop {
            let page = attempt!(
                self,
                "DescribeNetworkInterfaces",
                self.client
                    .describe_network_interfaces()
                    .set_filters(Some(filters.clone()))
                    .set_next_token(token.clone())
                    .max_results(1000)
                    .send()
            )?;
            for ni in page.network_interfaces() {
                enis.push(eni_of("DescribeNetworkInterfaces", ni)?);
            }
            match page.next_token() {
                Some(next) if token.as_deref() == Some(next) => {
                    return Err(malformed(
                        "DescribeNetworkInterfaces",
                        format!("the same NextToken {next:?} twice"),
                    ))
                }
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(enis)
    }

    /// One ENI.
    pub async fn describe_eni(&self, eni_id: &str) -> Result<Option<Eni>, Ec2Error> {
        let found = attempt!(
            self,
            "DescribeNetworkInterfaces",
            self.client
                .describe_network_interfaces()
                .network_interface_ids(eni_id)
                .send()
        );
        match found {
            Ok(page) => page
                .network_interfaces()
                .first()
                .map(|ni| eni_of("DescribeNetworkInterfaces", ni))
                .transpose(),
            Err(Ec2Error::Api { code, .. }) if code == "InvalidNetworkInterfaceID.NotFound" => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The subnets of `vpc_id`.
    pub async fn describe_subnets(&self, vpc_id: &str) -> Result<Vec<Subnet>, Ec2Error> {
        let page = attempt!(
            self,
            "DescribeSubnets",
            self.client
                .describe_subnets()
                .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
                .send()
        )?;
        page.subnets()
            .iter()
            .map(|s| {
                let id = s.subnet_id().unwrap_or_default().to_owned();
                let cidr = s
                    .cidr_block()
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| malformed("DescribeSubnets", format!("{id} has no CIDR")))?;
                Ok(Subnet {
                    cidr,
                    availability_zone: s.availability_zone().unwrap_or_default().to_owned(),
                    free_addresses: s.available_ip_address_count().unwrap_or(0).max(0) as u32,
                    tags: tag_pairs(s.tags()),
                    id,
                })
            })
            .collect()
    }

    /// Creates an ENI (tags set atomically with it).
    pub async fn create_eni(&self, new: &NewEni) -> Result<Eni, Ec2Error> {
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::NetworkInterface)
            .set_tags(Some(
                new.tags
                    .iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .build();
        let mut request = self
            .client
            .create_network_interface()
            .subnet_id(&new.subnet_id)
            .set_groups(Some(new.security_groups.clone()))
            .description(&new.description)
            .client_token(&new.client_token)
            .tag_specifications(tags);
        if new.secondary_ips > 0 {
            request = request.secondary_private_ip_address_count(new.secondary_ips as i32);
        }
        if new.prefixes > 0 {
            request = request.ipv4_prefix_count(new.prefixes as i32);
        }
        let out = attempt!(self, "CreateNetworkInterface", request.clone().send())?;
        let ni = out
            .network_interface()
            .ok_or_else(|| malformed("CreateNetworkInterface", "no networkInterface"))?;
        eni_of("CreateNetworkInterface", ni)
    }

    /// Attaches `eni_id` at `device_index`; returns the attachment id.
    pub async fn attach_eni(
        &self,
        eni_id: &str,
        instance_id: &str,
        device_index: u32,
    ) -> Result<String, Ec2Error> {
        let out = attempt!(
            self,
            "AttachNetworkInterface",
            self.client
                .attach_network_interface()
                .network_interface_id(eni_id)
                .instance_id(instance_id)
                .device_index(device_index as i32)
                .network_card_index(0)
                .send()
        )?;
        Ok(out
            .attachment_id()
            .ok_or_else(|| malformed("AttachNetworkInterface", "no attachmentId"))?
            .to_owned())
    }

    /// Sets DeleteOnTermination on an attachment, so the ENI goes with the instance.
    pub async fn set_delete_on_termination(
        &self,
        eni_id: &str,
        attachment_id: &str,
    ) -> Result<(), Ec2Error> {
        attempt!(
            self,
            "ModifyNetworkInterfaceAttribute",
            self.client
                .modify_network_interface_attribute()
                .network_interface_id(eni_id)
                .attachment(
                    NetworkInterfaceAttachmentChanges::builder()
                        .attachment_id(attachment_id)
                        .delete_on_termination(true)
                        .build()
                )
                .send()
        )?;
        Ok(())
    }

    /// Assigns `count` secondary addresses; returns them.
    pub async fn assign_ips(&self, eni_id: &str, count: u32) -> Result<Vec<Ipv4Addr>, Ec2Error> {
        let out = attempt!(
            self,
            "AssignPrivateIpAddresses",
            self.client
                .assign_private_ip_addresses()
                .network_interface_id(eni_id)
                .secondary_private_ip_address_count(count as i32)
                .send()
        )?;
        Ok(assigned_ips(&out))
    }

    /// Assigns the secondary address `ip` (one of the ENI's subnet); returns what EC2 reports
    /// assigned.
    pub async fn assign_ip(&self, eni_id: &str, ip: Ipv4Addr) -> Result<Vec<Ipv4Addr>, Ec2Error> {
        let out = attempt!(
            self,
            "AssignPrivateIpAddresses",
            self.client
                .assign_private_ip_addresses()
                .network_interface_id(eni_id)
                .private_ip_addresses(ip.to_string())
                .send()
        )?;
        Ok(assigned_ips(&out))
    }

    /// Delegates `count` /28 prefixes; returns them.
    pub async fn assign_prefixes(
        &self,
        eni_id: &str,
        count: u32,
    ) -> Result<Vec<Ipv4Net>, Ec2Error> {
        let out = attempt!(
            self,
            "AssignPrivateIpAddresses",
            self.client
                .assign_private_ip_addresses()
                .network_interface_id(eni_id)
                .ipv4_prefix_count(count as i32)
                .send()
        )?;
        Ok(out
            .assigned_ipv4_prefixes()
            .iter()
            .filter_map(|p| p.ipv4_prefix()?.parse().ok())
            .collect())
    }

    /// Delegates `count` IPv6 prefixes (/80s); returns them.
    pub async fn assign_ipv6_prefixes(
        &self,
        eni_id: &str,
        count: u32,
    ) -> Result<Vec<ipnet::Ipv6Net>, Ec2Error> {
        let out = attempt!(
            self,
            "AssignIpv6Addresses",
            self.client
                .assign_ipv6_addresses()
                .network_interface_id(eni_id)
                .ipv6_prefix_count(count as i32)
                .send()
        )?;
        Ok(out
            .assigned_ipv6_prefixes()
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// Unassigns secondary addresses and prefixes.
    pub async fn unassign(
        &self,
        eni_id: &str,
        ips: &[Ipv4Addr],
        prefixes: &[Ipv4Net],
    ) -> Result<(), Ec2Error> {
        let mut request = self
            .client
            .unassign_private_ip_addresses()
            .network_interface_id(eni_id);
        for ip in ips {
            request = request.private_ip_addresses(ip.to_string());
        }
        for prefix in prefixes {
            request = request.ipv4_prefixes(prefix.to_string());
        }
        attempt!(self, "UnassignPrivateIpAddresses", request.clone().send())?;
        Ok(())
    }

    /// Detaches an attachment; one that is already gone counts as detached (a retried detach
    /// whose first answer was lost).
    pub async fn detach(&self, attachment_id: &str) -> Result<(), Ec2Error> {
        match attempt!(
            self,
            "DetachNetworkInterface",
            self.client
                .detach_network_interface()
                .attachment_id(attachment_id)
                .send()
        ) {
            Ok(_) => Ok(()),
            Err(Ec2Error::Api { code, .. })
                if code == "InvalidAttachmentID.NotFound" || code == "IncorrectState" =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes an ENI; one that is already gone counts as deleted.
    pub async fn delete_eni(&self, eni_id: &str) -> Result<(), Ec2Error> {
        match attempt!(
            self,
            "DeleteNetworkInterface",
            self.client
                .delete_network_interface()
                .network_interface_id(eni_id)
                .send()
        ) {
            Ok(_) => Ok(()),
            Err(Ec2Error::Api { code, .. }) if code == "InvalidNetworkInterfaceID.NotFound" => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// The addresses an `AssignPrivateIpAddresses` answer lists.
fn assigned_ips(
    out: &aws_sdk_ec2::operation::assign_private_ip_addresses::AssignPrivateIpAddressesOutput,
) -> Vec<Ipv4Addr> {
    out.assigned_private_ip_addresses()
        .iter()
        .filter_map(|a| a.private_ip_address()?.parse().ok())
        .collect()
}
