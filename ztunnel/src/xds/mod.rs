//! istiod as a config and certificate source.
mod proto;
