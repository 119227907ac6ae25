//! The lab both `cargo xtask demo` and `cargo xtask bench` run on: namespaced nodes and pods
//! with real eBPF capture ([`cluster`], [`layout`]), the binaries they run ([`binaries`]: ztunnel and
//! the traffic tool `testapp`, whose output `ztunnel_tests::traffic` reads), what the ztunnels and apps report about the
//! traffic ([`metrics`], [`evidence`], [`server_log`]), and cleanup that survives signals
//! ([`cleanup`], [`interruptible`]). Neither the demo nor the benchmark is imported from here.

pub(crate) mod binaries;
pub(crate) mod blocking;
pub(crate) mod cleanup;
pub(crate) mod cluster;
pub(crate) mod evidence;
pub(crate) mod http;
pub(crate) mod interruptible;
pub(crate) mod layout;
pub(crate) mod metrics;
pub(crate) mod prerequisites;
pub(crate) mod server_log;
pub(crate) mod units;
