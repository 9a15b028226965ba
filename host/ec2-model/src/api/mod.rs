//! Routing of EC2 Query API actions: which actions exist, which throttling class each belongs
//! to (describe vs mutating, as EC2 buckets them), and which handler answers it.
//!
//! Handlers (`handlers`) turn [`Params`] into model requests and the model's answer into XML
//! (`render`); nothing here does I/O, so the whole API can be exercised without a socket.

mod handlers;
mod render;

use crate::error::{codes, Ec2Error, Ec2Result};
use crate::model::Ec2Model;
use crate::wire::{Params, XmlWriter};

/// EC2's request-rate classes: each has its own token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionClass {
    /// Describe* and other read-only actions.
    NonMutating,
    /// Actions that change state (create, attach, assign, tag, …).
    Mutating,
}

impl ActionClass {
    /// A short name for logs and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionClass::NonMutating => "non-mutating",
            ActionClass::Mutating => "mutating",
        }
    }
}

type ReadHandler = fn(&Ec2Model, &Params, Reply<'_>) -> Ec2Result<String>;
type WriteHandler = fn(&mut Ec2Model, &Params, Reply<'_>) -> Ec2Result<String>;

#[derive(Clone, Copy)]
enum Handler {
    Read(ReadHandler),
    Write(WriteHandler),
}

/// One action the emulator answers.
#[derive(Clone, Copy)]
pub struct Action {
    /// The `Action` parameter, e.g. `AssignPrivateIpAddresses`.
    pub name: &'static str,
    /// The root element of the response, e.g. `AssignPrivateIpAddressesResponse`.
    pub root: &'static str,
    handler: Handler,
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Action")
            .field("name", &self.name)
            .field("class", &self.class())
            .finish()
    }
}

impl Action {
    /// The throttling class of the action.
    pub fn class(&self) -> ActionClass {
        match self.handler {
            Handler::Read(_) => ActionClass::NonMutating,
            Handler::Write(_) => ActionClass::Mutating,
        }
    }

    /// Run the action on `model` and render the response document. A failed action leaves
    /// the model unchanged (the model guarantees it).
    pub fn run(
        &self,
        model: &mut Ec2Model,
        params: &Params,
        request_id: &str,
    ) -> Ec2Result<String> {
        let reply = Reply {
            root: self.root,
            request_id,
        };
        match self.handler {
            Handler::Read(handler) => handler(model, params, reply),
            Handler::Write(handler) => handler(model, params, reply),
        }
    }
}

/// What a handler needs to write its response document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reply<'a> {
    root: &'static str,
    request_id: &'a str,
}

impl Reply<'_> {
    /// The response document with `body` inside the root element.
    fn xml(self, body: impl FnOnce(&mut XmlWriter)) -> Ec2Result<String> {
        Ok(crate::wire::response(self.root, self.request_id, body))
    }

    /// The response of an action that answers only `<return>true</return>`.
    fn ok(self) -> Ec2Result<String> {
        self.xml(|xml| {
            xml.leaf("return", true);
        })
    }
}

macro_rules! actions {
    ($($kind:ident $name:literal => $handler:path,)*) => {
        /// Every action the emulator answers.
        pub const ACTIONS: &[Action] = &[
            $(Action {
                name: $name,
                root: concat!($name, "Response"),
                handler: Handler::$kind($handler),
            },)*
        ];
    };
}

actions! {
    Read "DescribeInstances" => handlers::describe_instances,
    Read "DescribeInstanceTypes" => handlers::describe_instance_types,
    Read "DescribeSubnets" => handlers::describe_subnets,
    Read "DescribeVpcs" => handlers::describe_vpcs,
    Read "DescribeSecurityGroups" => handlers::describe_security_groups,
    Read "DescribeNetworkInterfaces" => handlers::describe_network_interfaces,
    Read "DescribeTrunkInterfaceAssociations" => handlers::describe_trunk_interface_associations,
    Write "CreateVpc" => handlers::create_vpc,
    Write "CreateSubnet" => handlers::create_subnet,
    Write "CreateSecurityGroup" => handlers::create_security_group,
    Write "RunInstances" => handlers::run_instances,
    Write "TerminateInstances" => handlers::terminate_instances,
    Write "CreateNetworkInterface" => handlers::create_network_interface,
    Write "AttachNetworkInterface" => handlers::attach_network_interface,
    Write "DetachNetworkInterface" => handlers::detach_network_interface,
    Write "DeleteNetworkInterface" => handlers::delete_network_interface,
    Write "ModifyNetworkInterfaceAttribute" => handlers::modify_network_interface_attribute,
    Write "AssignPrivateIpAddresses" => handlers::assign_private_ip_addresses,
    Write "UnassignPrivateIpAddresses" => handlers::unassign_private_ip_addresses,
    Write "AssignIpv6Addresses" => handlers::assign_ipv6_addresses,
    Write "UnassignIpv6Addresses" => handlers::unassign_ipv6_addresses,
    Write "CreateTags" => handlers::create_tags,
    Write "DeleteTags" => handlers::delete_tags,
    Write "AssociateTrunkInterface" => handlers::associate_trunk_interface,
    Write "DisassociateTrunkInterface" => handlers::disassociate_trunk_interface,
}

/// The action a request asks for: `MissingAction` without an `Action` parameter,
/// `InvalidAction` for a name the emulator does not answer.
pub fn route(params: &Params) -> Ec2Result<&'static Action> {
    let name = params.get("Action").ok_or_else(|| {
        Ec2Error::new(
            codes::MISSING_ACTION,
            "The request must contain the parameter Action",
        )
    })?;
    find(name).ok_or_else(|| {
        Ec2Error::new(
            codes::INVALID_ACTION,
            format!("The action {name} is not valid for this web service."),
        )
    })
}

/// The action named `name`, if the emulator answers it.
pub fn find(name: &str) -> Option<&'static Action> {
    ACTIONS.iter().find(|action| action.name == name)
}

/// `DryRunOperation` when the request sets `DryRun=true`: EC2 answers so (HTTP 412) for a
/// request that would have been allowed, without doing anything.
pub fn check_dry_run(params: &Params) -> Ec2Result<()> {
    if params.flag("DryRun")? {
        return Err(Ec2Error::new(
            codes::DRY_RUN_OPERATION,
            "Request would have succeeded, but DryRun flag is set.",
        ));
    }
    Ok(())
}

/// What EC2 answered one request, and how.
#[derive(Debug)]
pub struct Answered {
    /// The response document, or EC2's error.
    pub result: Ec2Result<String>,
    /// The action the request named, when it named one EC2 answers.
    pub action: Option<&'static Action>,
    /// Whether a fault (not the model) produced the answer.
    pub injected: bool,
}

impl Answered {
    /// Whether the request changed the model: a mutating action that succeeded.
    pub fn changed(&self) -> bool {
        self.result.is_ok()
            && self
                .action
                .is_some_and(|a| a.class() == ActionClass::Mutating)
    }

    /// The HTTP status EC2 sends for it.
    pub fn status(&self) -> u16 {
        self.result
            .as_ref()
            .map_or_else(Ec2Error::http_status, |_| 200)
    }

    /// The request log's record of `params`, answered so.
    pub fn record(
        &self,
        params: &Params,
        request_id: &str,
        received_at: std::time::SystemTime,
        since_start: std::time::Duration,
    ) -> crate::faults::RequestRecord {
        crate::faults::RequestRecord {
            sequence: 0,
            action: params.get("Action").unwrap_or_default().to_owned(),
            params: params.as_map().clone(),
            status: self.status(),
            error_code: self.result.as_ref().err().map(|e| e.code.to_owned()),
            request_id: request_id.to_owned(),
            received_at,
            since_start,
        }
    }

    /// The HTTP status and body EC2 sends for it.
    pub fn response(&self, request_id: &str) -> (u16, String) {
        match &self.result {
            Ok(body) => (200, body.clone()),
            Err(error) => (
                error.http_status(),
                crate::wire::error_document(error.code, &error.message, request_id),
            ),
        }
    }
}

/// One request as EC2 answers it, without I/O: the action `params` name, then a fault
/// `faults` decides on at `now` (throttling, an error rate, a scripted failure), the dry-run
/// check, and the action on `model`, whose changes are stamped `unix_ms` (`attachTime`). A
/// failed action leaves the model unchanged. The EC2 emulator answers each HTTP request with
/// it; `simulate` each SDK call, in process (both from `wasmcni_clock`: the system's time, or
/// the simulation's).
pub fn answer(
    model: &mut Ec2Model,
    faults: &mut crate::faults::Faults,
    params: &Params,
    request_id: &str,
    now: std::time::Instant,
    unix_ms: u64,
) -> Answered {
    let action = match route(params) {
        Ok(action) => action,
        Err(error) => {
            return Answered {
                result: Err(error),
                action: None,
                injected: false,
            }
        }
    };
    if let Some(fault) = faults.decide(action, now) {
        return Answered {
            result: Err(fault),
            action: Some(action),
            injected: true,
        };
    }
    model.set_clock(unix_ms);
    let result = check_dry_run(params).and_then(|()| action.run(model, params, request_id));
    Answered {
        result,
        action: Some(action),
        injected: false,
    }
}

#[cfg(test)]
mod tests;
