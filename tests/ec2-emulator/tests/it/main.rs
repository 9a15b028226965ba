//! Integration tests of the emulator, in one binary: the real `aws-sdk-ec2` and aws-config
//! IMDS clients against it over HTTP, faults, hypervisor mode (as root) and the differential
//! test against moto.

mod common;
mod faults;
mod hypervisor;
mod imds_client;
mod moto_differential;
mod sdk_api;
