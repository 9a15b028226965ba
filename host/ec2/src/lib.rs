//! The node as EC2 sees it: identity and ENIs from IMDS (through aws-config's IMDSv2 client),
//! instance-type limits from `DescribeInstanceTypes` (through aws-sdk-ec2), and the max-pods
//! figure VPC CNI computes from them. The first piece of the EC2 ENI provider.
//!
//! Both clients are built here with explicit endpoints, retries and timeouts, so the same code
//! talks to EC2 and to the project's emulator (`tests/ec2-emulator`).

use std::time::Duration;

use aws_config::imds::client::error::ImdsError;
use aws_config::imds::Client as ImdsClient;
use aws_config::provider_config::ProviderConfig;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

pub mod api;
pub mod bucket;
pub mod in_process;
mod limits;
pub mod provider;

pub use limits::{max_pods, InstanceLimits};
pub use provider::Ec2Provider;
pub use wasmcni_core::eni::{Ec2Error, ImdsEni, NodeIdentity};

/// Where and how to reach EC2 and IMDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// EC2 API endpoint override (`None`: the region's public endpoint).
    pub ec2: Option<String>,
    /// IMDS endpoint override (`None`: `http://169.254.169.254`).
    pub imds: Option<String>,
    /// Static credentials (access key, secret) instead of the default provider chain; for
    /// the emulator.
    pub static_credentials: Option<(String, String)>,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Bound on one call, retries included.
    pub call_timeout: Duration,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            ec2: None,
            imds: None,
            static_credentials: None,
            max_attempts: 3,
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// An IMDSv2 client for `endpoints`.
pub fn imds_client(endpoints: &Endpoints) -> Result<ImdsClient, Ec2Error> {
    imds_client_over(
        endpoints,
        aws_smithy_http_client::Builder::new().build_http(),
    )
}

/// An IMDSv2 client for `endpoints` over `http` (the in-process IMDS of `simulate`).
pub fn imds_client_over(
    endpoints: &Endpoints,
    http: SharedHttpClient,
) -> Result<ImdsClient, Ec2Error> {
    let mut builder = ImdsClient::builder()
        .configure(&ProviderConfig::without_region().with_http_client(http))
        .max_attempts(endpoints.max_attempts)
        .read_timeout(endpoints.call_timeout);
    if let Some(url) = &endpoints.imds {
        builder = builder
            .endpoint(url)
            .map_err(|e| Ec2Error::Setup(format!("IMDS endpoint {url}: {e}")))?;
    }
    Ok(builder.build())
}

/// An EC2 client for `region` and `endpoints`: standard retries with backoff, a bound on each
/// call, plain HTTP for an `http://` endpoint (the emulator) and rustls otherwise.
pub async fn ec2_client(region: &str, endpoints: &Endpoints) -> aws_sdk_ec2::Client {
    ec2_client_over(region, endpoints, https_or_http(endpoints)).await
}

/// Plain HTTP for an `http://` EC2 endpoint (the emulator), rustls otherwise.
fn https_or_http(endpoints: &Endpoints) -> SharedHttpClient {
    match &endpoints.ec2 {
        Some(url) if url.starts_with("http://") => {
            aws_smithy_http_client::Builder::new().build_http()
        }
        _ => aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https(),
    }
}

/// An EC2 client for `region` and `endpoints` over `http` (the in-process EC2 of `simulate`).
pub async fn ec2_client_over(
    region: &str,
    endpoints: &Endpoints,
    http: SharedHttpClient,
) -> aws_sdk_ec2::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .http_client(http)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(endpoints.max_attempts)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(2)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(endpoints.call_timeout)
                .build(),
        );
    if let Some(url) = &endpoints.ec2 {
        loader = loader.endpoint_url(url);
    }
    if let Some((key, secret)) = &endpoints.static_credentials {
        loader = loader.credentials_provider(Credentials::new(
            key.clone(),
            secret.clone(),
            None,
            None,
            "wasmcni-static",
        ));
    }
    aws_sdk_ec2::Client::new(&loader.load().await)
}

async fn get(imds: &ImdsClient, path: &str) -> Result<String, Ec2Error> {
    imds.get(path)
        .await
        .map(|value| value.as_ref().trim().to_owned())
        .map_err(|e| Ec2Error::Imds {
            path: path.to_owned(),
            message: imds_message(&e),
        })
}

/// `None` for a path IMDS answers 404 for (an ENI without prefixes).
async fn get_optional(imds: &ImdsClient, path: &str) -> Result<Option<String>, Ec2Error> {
    match imds.get(path).await {
        Ok(value) => Ok(Some(value.as_ref().trim().to_owned())),
        Err(ImdsError::ErrorResponse(response)) if response.response().status().as_u16() == 404 => {
            Ok(None)
        }
        Err(e) => Err(Ec2Error::Imds {
            path: path.to_owned(),
            message: imds_message(&e),
        }),
    }
}

fn imds_message(error: &ImdsError) -> String {
    match error {
        ImdsError::ErrorResponse(response) => {
            format!("HTTP {}", response.response().status().as_u16())
        }
        other => {
            let mut message = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            message
        }
    }
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty())
}

fn parse_list<T: std::str::FromStr>(
    path: &str,
    text: &str,
    expected: &'static str,
) -> Result<Vec<T>, Ec2Error> {
    lines(text)
        .map(|item| {
            item.parse().map_err(|_| Ec2Error::Malformed {
                path: path.to_owned(),
                value: item.to_owned(),
                expected,
            })
        })
        .collect()
}

/// Reads the node's identity and every attached ENI from IMDS (the paths VPC CNI reads).
pub async fn discover(imds: &ImdsClient) -> Result<NodeIdentity, Ec2Error> {
    let instance_id = get(imds, "/latest/meta-data/instance-id").await?;
    let instance_type = get(imds, "/latest/meta-data/instance-type").await?;
    let availability_zone = get(imds, "/latest/meta-data/placement/availability-zone").await?;
    let region = match get_optional(imds, "/latest/meta-data/placement/region").await? {
        Some(region) => region,
        // Older IMDS: the zone minus its letter.
        None => availability_zone
            .trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .to_owned(),
    };
    let primary_mac = get(imds, "/latest/meta-data/mac").await?;
    let macs = get(imds, "/latest/meta-data/network/interfaces/macs/").await?;
    let mut enis = Vec::new();
    for mac in lines(&macs).map(|m| m.trim_end_matches('/')) {
        let base = format!("/latest/meta-data/network/interfaces/macs/{mac}");
        let path = |leaf: &str| format!("{base}/{leaf}");
        let device = get(imds, &path("device-number")).await?;
        let device_number = device.parse().map_err(|_| Ec2Error::Malformed {
            path: path("device-number"),
            value: device.clone(),
            expected: "a device number",
        })?;
        let cidr_text = get(imds, &path("subnet-ipv4-cidr-block")).await?;
        let subnet_cidr = cidr_text.parse().map_err(|_| Ec2Error::Malformed {
            path: path("subnet-ipv4-cidr-block"),
            value: cidr_text.clone(),
            expected: "an IPv4 CIDR",
        })?;
        let ipv4s = parse_list(
            &path("local-ipv4s"),
            &get(imds, &path("local-ipv4s")).await?,
            "an IPv4 address",
        )?;
        let ipv4_prefixes = match get_optional(imds, &path("ipv4-prefix")).await? {
            Some(text) => parse_list(&path("ipv4-prefix"), &text, "an IPv4 prefix")?,
            None => Vec::new(),
        };
        let security_groups = lines(&get(imds, &path("security-group-ids")).await?)
            .map(str::to_owned)
            .collect();
        let vpc_cidrs = parse_list(
            &path("vpc-ipv4-cidr-blocks"),
            &get(imds, &path("vpc-ipv4-cidr-blocks")).await?,
            "an IPv4 CIDR",
        )?;
        enis.push(ImdsEni {
            mac: mac.to_owned(),
            id: get(imds, &path("interface-id")).await?,
            device_number,
            subnet_id: get(imds, &path("subnet-id")).await?,
            subnet_cidr,
            ipv4s,
            ipv4_prefixes,
            security_groups,
            vpc_cidrs,
            vpc_id: get(imds, &path("vpc-id")).await?,
        });
    }
    enis.sort_by_key(|e| e.device_number);
    Ok(NodeIdentity {
        instance_id,
        instance_type,
        availability_zone,
        region,
        primary_mac,
        enis,
    })
}

/// The limits of `instance_type` from `DescribeInstanceTypes`.
pub async fn instance_limits(
    ec2: &aws_sdk_ec2::Client,
    instance_type: &str,
) -> Result<InstanceLimits, Ec2Error> {
    let api = |e: aws_sdk_ec2::error::SdkError<_, _>| -> Ec2Error {
        let (code, message) = api::sdk_failure(&e);
        Ec2Error::Api {
            action: "DescribeInstanceTypes",
            code,
            message,
        }
    };
    let answer = ec2
        .describe_instance_types()
        .instance_types(aws_sdk_ec2::types::InstanceType::from(instance_type))
        .send()
        .await
        .map_err(api)?;
    limits_of(instance_type, &answer)
}

/// The limits in a `DescribeInstanceTypes` answer for `instance_type`.
pub(crate) fn limits_of(
    instance_type: &str,
    answer: &aws_sdk_ec2::operation::describe_instance_types::DescribeInstanceTypesOutput,
) -> Result<InstanceLimits, Ec2Error> {
    let info = answer
        .instance_types()
        .first()
        .ok_or_else(|| Ec2Error::Api {
            action: "DescribeInstanceTypes",
            code: "Empty".into(),
            message: format!("no answer for {instance_type}"),
        })?;
    let network = info.network_info().ok_or_else(|| Ec2Error::Api {
        action: "DescribeInstanceTypes",
        code: "Incomplete".into(),
        message: format!("{instance_type} has no networkInfo"),
    })?;
    let default_card = network.default_network_card_index().unwrap_or(0);
    let card_enis = network
        .network_cards()
        .iter()
        .find(|c| c.network_card_index() == Some(default_card))
        .and_then(|c| c.maximum_network_interfaces());
    let enis = card_enis
        .or(network.maximum_network_interfaces())
        .unwrap_or(1);
    let nitro = info.hypervisor().map(|h| h.as_str()) == Some("nitro");
    let vcpus = info
        .v_cpu_info()
        .and_then(|v| v.default_v_cpus())
        .unwrap_or(1);
    Ok(InstanceLimits {
        instance_type: instance_type.to_owned(),
        vcpus: u32::try_from(vcpus).unwrap_or(1),
        max_enis: u32::try_from(enis).unwrap_or(1),
        ipv4_per_eni: u32::try_from(network.ipv4_addresses_per_interface().unwrap_or(1))
            .unwrap_or(1),
        prefix_delegation: nitro || info.bare_metal().unwrap_or(false),
    })
}

#[cfg(test)]
mod tests;
