//! The instance metadata service of one instance, served from the live model: IMDSv2 session
//! tokens, instance identity, and the per-MAC `network/interfaces/macs/<mac>/…` paths VPC CNI
//! reads, with EC2's eventual consistency as a knob (new ENIs and addresses appear late).
//!
//! Pure: requests come in as method, path, the two token headers and the current [`Instant`];
//! the HTTP listener in `server` only moves bytes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::rng::SeededRng;
use crate::types::{InstanceState, NetworkInterface};
use crate::Ec2Model;

/// The request header carrying the TTL of a requested token (and, in the answer, of the
/// token issued).
pub const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// The request header carrying a session token.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// Longest token lifetime IMDS grants (6 hours).
pub const MAX_TOKEN_TTL_SECONDS: u32 = 21_600;

/// The parts of an IMDS request the service looks at.
#[derive(Debug, Clone, Copy)]
pub struct ImdsRequest<'a> {
    /// `GET` or `PUT`.
    pub method: &'a str,
    /// The path, e.g. `/latest/meta-data/mac`.
    pub path: &'a str,
    /// `X-aws-ec2-metadata-token`.
    pub token: Option<&'a str>,
    /// `X-aws-ec2-metadata-token-ttl-seconds`.
    pub token_ttl: Option<&'a str>,
}

/// An IMDS answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsResponse {
    /// HTTP status.
    pub status: u16,
    /// Body (`text/plain`, or JSON for the identity document).
    pub body: String,
    /// TTL to send back in `X-aws-ec2-metadata-token-ttl-seconds` (token responses only).
    pub token_ttl: Option<u32>,
}

impl ImdsResponse {
    fn ok(body: String) -> Self {
        Self {
            status: 200,
            body,
            token_ttl: None,
        }
    }

    fn status(status: u16, text: &str) -> Self {
        Self {
            status,
            body: text.to_owned(),
            token_ttl: None,
        }
    }
}

/// When each ENI attachment and address of the instance was first seen, so IMDS can hide
/// what is younger than the configured lag. Entries present when the instance was chosen
/// (the instance's state at boot) are visible at once.
#[derive(Debug, Default)]
struct Visibility {
    first_seen: HashMap<String, Option<Instant>>,
}

impl Visibility {
    fn observe(&mut self, keys: Vec<String>, now: Option<Instant>) {
        let mut next = HashMap::with_capacity(keys.len());
        for key in keys {
            let seen = self.first_seen.get(&key).copied().unwrap_or(now);
            next.insert(key, seen);
        }
        self.first_seen = next;
    }

    fn visible(&self, key: &str, now: Instant, lag: Duration) -> bool {
        match self.first_seen.get(key) {
            Some(None) => true,
            Some(Some(seen)) => now.saturating_duration_since(*seen) >= lag,
            // Not observed yet: it appeared after the last observation, so it is brand new.
            None => lag.is_zero(),
        }
    }
}

fn eni_key(eni: &NetworkInterface) -> String {
    let attachment = eni
        .attachment
        .as_ref()
        .map_or("", |a| a.attachment_id.as_str());
    format!("eni {} {attachment}", eni.id)
}

fn address_key(eni: &NetworkInterface, kind: &str, value: impl std::fmt::Display) -> String {
    format!("{kind} {} {value}", eni.id)
}

/// Visibility keys of everything lag applies to: attachments, secondary IPv4 addresses,
/// /28 prefixes, IPv6 addresses and /80 prefixes. The primary address arrives with its ENI.
fn visibility_keys(model: &Ec2Model, instance_id: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for eni in model.instance_network_interfaces(instance_id) {
        keys.push(eni_key(eni));
        keys.extend(
            eni.secondary_private_ip_addresses
                .iter()
                .map(|a| address_key(eni, "ip", a)),
        );
        keys.extend(
            eni.ipv4_prefixes
                .iter()
                .map(|p| address_key(eni, "prefix", p)),
        );
        keys.extend(
            eni.ipv6_addresses
                .iter()
                .map(|a| address_key(eni, "ipv6", a)),
        );
        keys.extend(
            eni.ipv6_prefixes
                .iter()
                .map(|p| address_key(eni, "prefix6", p)),
        );
    }
    keys
}

/// A node of the metadata tree: a value or a directory.
#[derive(Debug)]
enum Node {
    Leaf(String),
    Dir(BTreeMap<String, Node>),
}

impl Node {
    fn dir() -> Self {
        Node::Dir(BTreeMap::new())
    }

    fn insert(&mut self, path: &str, value: impl Into<String>) {
        let mut node = self;
        let mut parts = path.split('/').peekable();
        while let Some(part) = parts.next() {
            let Node::Dir(children) = node else { return };
            if parts.peek().is_none() {
                children.insert(part.to_owned(), Node::Leaf(value.into()));
                return;
            }
            node = children.entry(part.to_owned()).or_insert_with(Node::dir);
        }
    }

    fn lookup(&self, path: &str) -> Option<&Node> {
        path.split('/')
            .filter(|part| !part.is_empty())
            .try_fold(self, |node, part| match node {
                Node::Dir(children) => children.get(part),
                Node::Leaf(_) => None,
            })
    }

    fn render(&self) -> String {
        match self {
            Node::Leaf(value) => value.clone(),
            Node::Dir(children) => children
                .iter()
                .map(|(name, child)| match child {
                    Node::Dir(_) => format!("{name}/"),
                    Node::Leaf(_) => name.clone(),
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// The IMDS of one instance.
#[derive(Debug)]
pub struct Imds {
    instance_id: Option<String>,
    tokens: HashMap<String, Instant>,
    rng: SeededRng,
    visibility: Visibility,
    allow_imdsv1: bool,
}

impl Imds {
    /// IMDS for `instance_id` (none: every metadata path is 404), tokens drawn from `seed`.
    pub fn new(instance_id: Option<String>, seed: u64) -> Self {
        Self {
            instance_id,
            tokens: HashMap::new(),
            rng: SeededRng::new(seed ^ 0x1_4D5),
            visibility: Visibility::default(),
            allow_imdsv1: false,
        }
    }

    /// Answer GETs without a token too (IMDSv1); by default a token is required, as on EKS
    /// nodes with `HttpTokens=required`.
    pub fn allow_imdsv1(&mut self, allow: bool) {
        self.allow_imdsv1 = allow;
    }

    /// The instance this IMDS speaks for.
    pub fn instance_id(&self) -> Option<&str> {
        self.instance_id.as_deref()
    }

    /// Speak for another instance; its current ENIs and addresses are visible at once.
    pub fn set_instance(&mut self, instance_id: Option<String>, model: &Ec2Model) {
        self.instance_id = instance_id;
        self.visibility = Visibility::default();
        self.observe_at_boot(model);
    }

    /// Record the current state as the instance's boot state: visible without lag.
    pub fn observe_at_boot(&mut self, model: &Ec2Model) {
        let keys = self.keys(model);
        self.visibility.observe(keys, None);
    }

    /// Record the model's current state; what is new from now on is hidden for the lag.
    /// Called after every change to the model, so the lag counts from the change.
    pub fn observe(&mut self, model: &Ec2Model, now: Instant) {
        let keys = self.keys(model);
        self.visibility.observe(keys, Some(now));
    }

    fn keys(&self, model: &Ec2Model) -> Vec<String> {
        self.instance_id
            .as_deref()
            .map(|id| visibility_keys(model, id))
            .unwrap_or_default()
    }

    /// Answer one request.
    pub fn handle(
        &mut self,
        request: ImdsRequest<'_>,
        model: &Ec2Model,
        now: Instant,
        lag: Duration,
    ) -> ImdsResponse {
        self.observe(model, now);
        let path = request.path;
        if path == "/latest/api/token" {
            return match request.method {
                "PUT" => self.issue_token(request.token_ttl, now),
                _ => ImdsResponse::status(405, "Method Not Allowed"),
            };
        }
        if request.method != "GET" && request.method != "HEAD" {
            return ImdsResponse::status(405, "Method Not Allowed");
        }
        match request.token {
            Some(token) if self.tokens.get(token).is_some_and(|expiry| *expiry > now) => {}
            None if self.allow_imdsv1 => {}
            _ => return ImdsResponse::status(401, "Unauthorized"),
        }
        let tree = self.tree(model, now, lag);
        let relative = path.strip_prefix("/latest").unwrap_or("/nowhere");
        match tree.lookup(relative) {
            Some(node) => ImdsResponse::ok(node.render()),
            None => ImdsResponse::status(404, "Not Found"),
        }
    }

    fn issue_token(&mut self, ttl: Option<&str>, now: Instant) -> ImdsResponse {
        let ttl = ttl.and_then(|raw| raw.trim().parse::<u32>().ok());
        let Some(ttl) = ttl.filter(|ttl| (1..=MAX_TOKEN_TTL_SECONDS).contains(ttl)) else {
            return ImdsResponse::status(400, "Bad Request");
        };
        self.tokens.retain(|_, expiry| *expiry > now);
        let token = format!(
            "AQAEA{:016x}{:016x}==",
            self.rng.next_u64(),
            self.rng.next_u64()
        );
        self.tokens
            .insert(token.clone(), now + Duration::from_secs(u64::from(ttl)));
        ImdsResponse {
            status: 200,
            body: token,
            token_ttl: Some(ttl),
        }
    }

    /// The whole metadata tree of the instance as it looks now (with lag applied).
    fn tree(&self, model: &Ec2Model, now: Instant, lag: Duration) -> Node {
        let mut root = Node::dir();
        let Some(instance) = self
            .instance_id
            .as_deref()
            .and_then(|id| model.instance(id))
        else {
            return root;
        };
        if instance.state != InstanceState::Running {
            return root;
        }
        let visible = |key: &str| self.visibility.visible(key, now, lag);
        let region = model.region().to_owned();
        let primary = model
            .network_interface(&instance.primary_network_interface_id)
            .filter(|eni| eni.attachment.is_some());
        let local_ipv4 = instance
            .private_ip_address
            .map(|a| a.to_string())
            .unwrap_or_default();
        let hostname = instance
            .private_ip_address
            .map(|a| model.private_dns_name(a))
            .unwrap_or_default();
        root.insert("meta-data/ami-id", "ami-0123456789abcdef0");
        root.insert("meta-data/instance-id", &instance.id);
        root.insert("meta-data/instance-type", &instance.instance_type);
        root.insert("meta-data/local-ipv4", &local_ipv4);
        root.insert("meta-data/hostname", &hostname);
        root.insert("meta-data/local-hostname", &hostname);
        root.insert(
            "meta-data/placement/availability-zone",
            &instance.availability_zone,
        );
        root.insert("meta-data/placement/region", &region);
        root.insert("meta-data/services/domain", "amazonaws.com");
        root.insert("meta-data/services/partition", "aws");
        if let Some(primary) = primary {
            root.insert("meta-data/mac", &primary.mac_address);
            if let Some(first) = primary.ipv6_addresses.first() {
                if visible(&address_key(primary, "ipv6", first)) {
                    root.insert("meta-data/ipv6", first.to_string());
                }
            }
        }
        // Keeps `network/interfaces/macs/` a directory while no ENI is visible.
        root.insert("meta-data/network/interfaces/macs/.keep", "");
        for eni in model.instance_network_interfaces(&instance.id) {
            if visible(&eni_key(eni)) {
                self.insert_interface(&mut root, model, eni, &visible);
            }
        }
        remove_placeholder(&mut root);
        let document = serde_json::json!({
            "accountId": model.account_id(),
            "architecture": "x86_64",
            "availabilityZone": instance.availability_zone,
            "imageId": "ami-0123456789abcdef0",
            "instanceId": instance.id,
            "instanceType": instance.instance_type,
            "pendingTime": "2024-01-01T00:00:00Z",
            "privateIp": local_ipv4,
            "region": region,
            "version": "2017-09-30",
        });
        root.insert(
            "dynamic/instance-identity/document",
            serde_json::to_string_pretty(&document).unwrap_or_default(),
        );
        root
    }

    fn insert_interface(
        &self,
        root: &mut Node,
        model: &Ec2Model,
        eni: &NetworkInterface,
        visible: &dyn Fn(&str) -> bool,
    ) {
        let Some(attachment) = &eni.attachment else {
            return;
        };
        let base = format!("meta-data/network/interfaces/macs/{}", eni.mac_address);
        let mut put = |name: &str, value: String| root.insert(&format!("{base}/{name}"), value);
        put("device-number", attachment.device_index.to_string());
        put("network-card", attachment.network_card_index.to_string());
        put("interface-id", eni.id.clone());
        put("mac", eni.mac_address.clone());
        put("owner-id", eni.owner_id.clone());
        put(
            "local-hostname",
            model.private_dns_name(eni.private_ip_address),
        );
        let ipv4s: Vec<String> = std::iter::once(eni.private_ip_address.to_string())
            .chain(
                eni.secondary_private_ip_addresses
                    .iter()
                    .filter(|a| visible(&address_key(eni, "ip", a)))
                    .map(ToString::to_string),
            )
            .collect();
        put("local-ipv4s", ipv4s.join("\n"));
        let prefixes = visible_list(eni, "prefix", &eni.ipv4_prefixes, visible);
        if !prefixes.is_empty() {
            put("ipv4-prefix", prefixes.join("\n"));
        }
        let ipv6s = visible_list(eni, "ipv6", &eni.ipv6_addresses, visible);
        if !ipv6s.is_empty() {
            put("ipv6s", ipv6s.join("\n"));
        }
        let ipv6_prefixes = visible_list(eni, "prefix6", &eni.ipv6_prefixes, visible);
        if !ipv6_prefixes.is_empty() {
            put("ipv6-prefix", ipv6_prefixes.join("\n"));
        }
        put("security-group-ids", eni.security_group_ids.join("\n"));
        let group_names: Vec<String> = eni
            .security_group_ids
            .iter()
            .filter_map(|id| model.security_group(id).map(|g| g.name.clone()))
            .collect();
        put("security-groups", group_names.join("\n"));
        put("subnet-id", eni.subnet_id.clone());
        put("vpc-id", eni.vpc_id.clone());
        if let Some(subnet) = model.subnet(&eni.subnet_id) {
            put("subnet-ipv4-cidr-block", subnet.cidr_block.to_string());
            if let Some(block) = subnet.ipv6_cidr_block {
                put("subnet-ipv6-cidr-blocks", block.to_string());
            }
        }
        if let Some(vpc) = model.vpc(&eni.vpc_id) {
            let blocks: Vec<String> = vpc.cidr_blocks.iter().map(ToString::to_string).collect();
            put(
                "vpc-ipv4-cidr-block",
                blocks.first().cloned().unwrap_or_default(),
            );
            put("vpc-ipv4-cidr-blocks", blocks.join("\n"));
            if let Some(block) = vpc.ipv6_cidr_block {
                put("vpc-ipv6-cidr-blocks", block.to_string());
            }
        }
    }
}

fn visible_list<T: std::fmt::Display>(
    eni: &NetworkInterface,
    kind: &str,
    items: &[T],
    visible: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    items
        .iter()
        .filter(|item| visible(&address_key(eni, kind, item)))
        .map(ToString::to_string)
        .collect()
}

/// Drop the placeholder that keeps `network/interfaces/macs/` a directory when empty.
fn remove_placeholder(root: &mut Node) {
    let mut node = root;
    for part in ["meta-data", "network", "interfaces", "macs"] {
        let Node::Dir(children) = node else { return };
        let Some(child) = children.get_mut(part) else {
            return;
        };
        node = child;
    }
    if let Node::Dir(macs) = node {
        macs.remove(".keep");
    }
}

#[cfg(test)]
mod tests;
