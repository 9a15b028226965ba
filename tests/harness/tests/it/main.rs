//! Integration tests (root): real network namespaces, the real daemon and shim, real peers.
//!
//! One binary for all of them (as wasmtime aggregates its integration tests), one module per
//! concern. Each test builds its own namespaces with unique names and removes them on drop.

mod approvals;
mod attachments;
mod bad_input;
mod chain;
mod crash;
mod cri;
mod ctr;
mod daemon_down;
mod dual_stack;
mod ec2;
mod ops;
mod plugins;
mod pod_lifecycle;
mod podman;
mod registry;
mod requested;
mod sandbox;
mod scaffold;
mod static_ipv6;
mod support;
