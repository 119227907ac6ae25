//! istiod as a config and certificate source.
pub mod convert;
mod proto;
