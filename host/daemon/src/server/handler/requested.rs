//! A requested address (the `ips` capability, `args.cni.ips`, `CNI_ARGS` `IP=`): the pod gets
//! exactly that address when the pool holds it and nobody does, or the ADD fails naming why.
//! Never another address, and the allocator plugin is not asked to choose. With the EC2
//! provider, an address of an ENI's subnet that no ENI holds yet is assigned to that ENI first,
//! within the allocator's `eni-ops` grant, as the warm pool's requests are.

use super::*;
use wasmcni_cni::requested::RequestedAddresses;
use wasmcni_core::grants::EniChecker;
use wasmcni_core::ipam::Inventory;
use wasmcni_core::RequestFailure;

/// Why a requested address cannot be given (yet).
struct Refusal {
    code: u32,
    why: String,
    /// An ENI of the node whose subnet holds the address, which EC2 could assign it to.
    assignable_on: Option<String>,
}

impl Refusal {
    fn unavailable(why: impl Into<String>) -> Refusal {
        Refusal {
            code: codes::REQUESTED_ADDRESS_UNAVAILABLE,
            why: why.into(),
            assignable_on: None,
        }
    }

    fn into_error(self, source: &str, ip: IpAddr) -> CniError {
        CniError::new(
            self.code,
            format!("{source} asks for {ip}, which {}", self.why),
        )
    }
}

/// The addresses a request names, as the node serves them: the pod's first address (IPv4 on
/// a dual-stack node), and a dual-stack pod's IPv6 address.
pub(super) struct Wanted {
    pub(super) first: Option<IpAddr>,
    pub(super) ipv6: Option<Ipv6Addr>,
    pub(super) source: &'static str,
}

impl<D: Datapath> Handler<D> {
    /// What a request asks for. On a dual-stack node either family, or both; otherwise the
    /// node's family only: an address of the other family fails with code 2 (the pod would
    /// not get it, and must not be attached without it unsaid).
    pub(super) fn wanted(&self, requested: &RequestedAddresses) -> Result<Wanted, CniError> {
        if self.family != IpFamily::Dual {
            return Ok(Wanted {
                first: Some(self.requested_address(requested)?),
                ipv6: None,
                source: requested.source,
            });
        }
        Ok(Wanted {
            first: requested.of_family(false),
            ipv6: requested.of_family(true).and_then(|ip| match ip {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(_) => None,
            }),
            source: requested.source,
        })
    }

    /// A dual-stack pod's IPv6 address, under the allocation lock: the one asked for, or
    /// the next free one of the pool. `None` on a node of one family.
    pub(super) fn choose_second(
        &self,
        wanted: Option<&Wanted>,
    ) -> Result<Option<Ipv6Addr>, CniError> {
        if self.family != IpFamily::Dual {
            return Ok(None);
        }
        let choice = match wanted.and_then(|w| w.ipv6.map(|ip| (ip, w.source))) {
            Some((v6, source)) => self
                .requested_choice(IpAddr::V6(v6))
                .map_err(|refusal| refusal.into_error(source, IpAddr::V6(v6)))?,
            None => self.choose_v6()?,
        };
        match choice.ip {
            IpAddr::V6(v6) => Ok(Some(v6)),
            IpAddr::V4(v4) => Err(CniError::internal(format!("the IPv6 pool chose {v4}"))),
        }
    }

    /// The address of the node's family in a request (a node of one family).
    fn requested_address(&self, requested: &RequestedAddresses) -> Result<IpAddr, CniError> {
        let v6 = self.family == IpFamily::Ipv6;
        if let Some(other) = requested.of_family(!v6) {
            return Err(
                CniError::unsupported_field(requested.source, &other.to_string()).with_details(
                    format!(
                        "this node gives pods {} addresses only (provider ip_family = \"{}\"); ask for one of that family, or none",
                        if v6 { "IPv6" } else { "IPv4" },
                        self.family
                    ),
                ),
            );
        }
        requested.of_family(v6).ok_or_else(|| {
            CniError::internal(format!(
                "{} was parsed into no address of either family",
                requested.source
            ))
        })
    }

    /// The choice for `ip`, returned with the allocation lock held as [`Handler::choose`]
    /// does, so the caller reserves it before anyone else can.
    pub(super) async fn choose_requested(
        &self,
        ip: IpAddr,
        source: &str,
    ) -> Result<(Choice, tokio::sync::MutexGuard<'_, ()>), CniError> {
        // Its last pod's DEL has answered, its veth not yet gone: wait for the kernel, against
        // one deadline, also when a DEL starts draining it between the look and the lock.
        let deadline = Instant::now() + draining::DRAIN_WAIT;
        let allocating = loop {
            if self.is_draining(ip) {
                let waiting = Instant::now();
                self.drained(Some(ip), deadline.saturating_duration_since(waiting))
                    .await;
                wasmcni_telemetry::metrics::Metrics::global().phase(
                    "ADD",
                    "drain_wait",
                    waiting.elapsed(),
                );
            }
            let allocating = self.allocation.lock().await;
            if !self.is_draining(ip) || Instant::now() >= deadline {
                break allocating;
            }
        };
        let refusal = match self.requested_choice(ip) {
            Ok(choice) => return Ok((choice, allocating)),
            Err(refusal) => refusal,
        };
        let (IpAddr::V4(v4), Some(eni_id)) = (ip, refusal.assignable_on.clone()) else {
            return Err(refusal.into_error(source, ip));
        };
        // EC2 is slow: other ADDs go on meanwhile, but none can choose the address, the
        // reconciler neither gives it back nor deletes its ENI, and a second request for it
        // is told to retry, until this ADD has reserved it or given up.
        let marked = AssigningMark::new(self, ip, &eni_id);
        drop(allocating);
        let assigned = self.assign_requested(v4, &eni_id).await;
        let allocating = self.allocation.lock().await;
        drop(marked);
        match (self.requested_choice(ip), assigned) {
            (Ok(choice), _) => Ok((choice, allocating)),
            // Still not on the ENI: EC2's reason is the one to give.
            (Err(refusal), Err(why)) if refusal.assignable_on.is_some() => {
                Err(Refusal::unavailable(why).into_error(source, ip))
            }
            // Held or given back meanwhile (an outside change): that is why.
            (Err(refusal), _) => Err(refusal.into_error(source, ip)),
        }
    }

    /// `ip` as a choice, or why it cannot be given.
    fn requested_choice(&self, ip: IpAddr) -> Result<Choice, Refusal> {
        if let Some(holder) = self.store().holder_of(ip) {
            let pod = holder.pod.as_ref().map_or_else(String::new, |p| {
                format!(" (pod {}/{})", p.namespace, p.name)
            });
            return Err(Refusal::unavailable(format!(
                "is held by attachment {}{pod}",
                holder.key
            )));
        }
        if self.is_foreign(ip) {
            return Err(Refusal::unavailable(
                "is held by a pod on this node the datastore does not record (another CNI's, or one whose record was lost)",
            ));
        }
        if self.is_assigning(ip) {
            return Err(Refusal {
                code: codes::TRY_AGAIN_LATER,
                why: "is being assigned to this node by EC2 for another ADD that asked for it; retry once that ADD has finished".to_owned(),
                assignable_on: None,
            });
        }
        if self.is_draining(ip) {
            return Err(Refusal {
                code: codes::TRY_AGAIN_LATER,
                why: format!(
                    "was released by a DEL whose veth the kernel has not finished deleting after {} ms; retry once it has",
                    draining::DRAIN_WAIT.as_millis()
                ),
                assignable_on: None,
            });
        }
        if let Some(left) = self.cooling_left(ip) {
            return Err(Refusal {
                code: codes::TRY_AGAIN_LATER,
                why: format!(
                    "was released recently and rests for {} ms more (provider.ec2.ip_cooldown_ms), so late packets for its last pod do not reach this one; retry then",
                    left.as_millis()
                ),
                assignable_on: None,
            });
        }
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        match ip {
            IpAddr::V4(v4) => {
                if pool.inventory().excluded.contains(&v4) {
                    return Err(Refusal::unavailable(
                        "is excluded from the pool (a node or ENI address, or provider.static.exclude)",
                    ));
                }
                if let Some(block) = pool.locate(v4) {
                    return Ok(Choice {
                        ip,
                        route_table: block.route_table,
                        eni_id: block.eni_id.clone(),
                    });
                }
                let inventory = pool.inventory().clone();
                drop(pool);
                Err(self.outside_pool(v4, &inventory))
            }
            IpAddr::V6(v6) => {
                if pool.inventory().excluded_v6.contains(&v6) {
                    return Err(Refusal::unavailable(
                        "is excluded from the pool (provider.static.exclude)",
                    ));
                }
                if let Some(block) = pool.locate_v6(v6) {
                    return Ok(Choice {
                        ip,
                        route_table: None,
                        eni_id: block.eni_id.clone(),
                    });
                }
                let prefixes = &pool.inventory().ipv6;
                Err(Refusal::unavailable(
                    match prefixes.iter().find(|b| b.cidr.contains(&v6)) {
                        Some(block) => format!(
                            "is the first address of the node's prefix {}, which is never a pod's",
                            block.cidr
                        ),
                        None => format!(
                            "is not in the node's IPv6 prefix ({})",
                            join_or_none(prefixes.iter().map(|b| b.cidr.to_string()))
                        ),
                    },
                ))
            }
        }
    }

    /// Why an IPv4 address the pool does not hold cannot be given, and the ENI EC2 could
    /// assign it to.
    fn outside_pool(&self, ip: Ipv4Addr, inventory: &Inventory) -> Refusal {
        if let Some(block) = inventory.blocks.iter().find(|b| b.cidr.contains(&ip)) {
            return Refusal::unavailable(format!(
                "is the network or broadcast address of {}, which no pod is given",
                block.cidr
            ));
        }
        let Some(ec2) = self.ec2.get() else {
            return Refusal::unavailable(format!(
                "is outside the pool ({}): add its range to provider.static.cidrs, or ask for an address of the pool",
                join_or_none(inventory.blocks.iter().map(|b| b.cidr.to_string()))
            ));
        };
        let enis = ec2.enis();
        let usable = || enis.iter().filter(|e| e.managed && e.linked);
        match usable().find(|e| e.subnet_cidr.contains(&ip)) {
            Some(eni) if aws_reserved(eni.subnet_cidr, ip) => Refusal::unavailable(format!(
                "is reserved by AWS in subnet {} ({}: its first four addresses and its last are never assigned)",
                eni.eni.subnet_id, eni.subnet_cidr
            )),
            Some(eni) => Refusal {
                code: codes::REQUESTED_ADDRESS_UNAVAILABLE,
                why: format!(
                    "is in subnet {} ({}) but not assigned to this node",
                    eni.eni.subnet_id, eni.subnet_cidr
                ),
                assignable_on: Some(eni.eni.id.clone()),
            },
            None => Refusal::unavailable(format!(
                "is in no subnet of this node's ENIs ({}): a pod here can only have an address of those",
                join_or_none(usable().map(|e| format!("{} {}", e.eni.subnet_id, e.subnet_cidr)))
            )),
        }
    }

    /// Asks EC2 to assign `ip` to `eni_id` on the pod's behalf, as the warm pool's
    /// `assign-ips` would: checked against the allocator's `eni-ops` grant and the ENI's room,
    /// written to the audit log, a failure kept for the next plans. The error completes
    /// "`<source>` asks for `<ip>`, which ...".
    async fn assign_requested(&self, ip: Ipv4Addr, eni_id: &str) -> Result<(), String> {
        let not_assigned =
            format!("is in the subnet of ENI {eni_id} but not assigned to this node");
        let plugins = self.plugins();
        let Some(allocator) = plugins.allocator.clone() else {
            return Err(format!(
                "{not_assigned}, and no allocator plugin holds an eni-ops grant to assign it"
            ));
        };
        let snapshot = self.pool_snapshot();
        let request = EniChecker::new(&allocator.spec().grants.eni_ops, &snapshot, &[])
            .assign_ips(eni_id, 1)
            .map_err(|e| {
                format!(
                    "{not_assigned}, and allocator {} may not assign it there: {e}",
                    allocator.name()
                )
            })?;
        let ec2 = self
            .ec2
            .get()
            .ok_or_else(|| format!("{not_assigned} (no EC2 provider)"))?;
        let started = Instant::now();
        let outcome = ec2.assign_address(eni_id, ip).await;
        self.audit_log.record(&AuditEntry {
            ts_ms: now_unix_ms(),
            plugin: allocator.name(),
            call: "eni-ops",
            args: serde_json::json!({ "request": request, "address": ip, "for": "a requested address" }),
            outcome: if outcome.is_ok() { "ok" } else { "error" },
            result: match &outcome {
                Ok(()) => format!("{eni_id}: +{ip}"),
                Err(e) => e.to_string(),
            },
            duration_us: started.elapsed().as_micros() as u64,
        });
        match outcome {
            Ok(()) => {
                tracing::info!(eni = %eni_id, %ip, "requested address assigned to the ENI");
                self.refresh_inventory();
                Ok(())
            }
            Err(e) => {
                let code = match &e {
                    wasmcni_core::eni::Ec2Error::Api { code, .. } => code.clone(),
                    _ => "Unavailable".to_owned(),
                };
                tracing::warn!(eni = %eni_id, %ip, %code, error = %e, "assigning a requested address failed");
                // A refusal of this address (taken in the VPC, not assignable) says nothing
                // about the ENI or the subnet: the allocator's next plans need not hear of it.
                if !refused_for_the_address(&code) {
                    self.record_request_failure(RequestFailure {
                        request: request.kind(),
                        eni_id: Some(eni_id.to_owned()),
                        subnet_id: None,
                        code,
                        message: e.to_string(),
                        age_ms: 0,
                    });
                }
                Err(format!(
                    "{not_assigned}, and EC2 refused to assign it to {eni_id}: {e}"
                ))
            }
        }
    }
}

/// Marks a requested address as being assigned (see [`Handler::is_assigning`]) for as long
/// as it lives, also when the ADD is dropped mid-request.
struct AssigningMark<'a, D: Datapath> {
    handler: &'a Handler<D>,
    ip: IpAddr,
}

impl<'a, D: Datapath> AssigningMark<'a, D> {
    fn new(handler: &'a Handler<D>, ip: IpAddr, eni_id: &str) -> Self {
        handler
            .assigning
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ip, eni_id.to_owned());
        AssigningMark { handler, ip }
    }
}

impl<D: Datapath> Drop for AssigningMark<'_, D> {
    fn drop(&mut self) {
        self.handler
            .assigning
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.ip);
    }
}

/// AWS keeps a subnet's first four addresses (network, router, DNS, future use) and its last.
fn aws_reserved(subnet: Ipv4Net, ip: Ipv4Addr) -> bool {
    let offset = u32::from(ip).wrapping_sub(u32::from(subnet.network()));
    offset < 4 || ip == subnet.broadcast()
}

/// EC2 error codes that refuse the one address asked for, not the ENI or the subnet.
fn refused_for_the_address(code: &str) -> bool {
    matches!(code, "InvalidParameterValue" | "InvalidIPAddress.InUse")
}

fn join_or_none(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}
