//! Names of the capture programs and maps, and the compiled object.
pub const CONNECT4: &str = "ztunnel_connect4";
pub const CONNECT6: &str = "ztunnel_connect6";
pub const GETPEERNAME4: &str = "ztunnel_getpeername4";
pub const GETPEERNAME6: &str = "ztunnel_getpeername6";
pub const BIND4: &str = "ztunnel_bind4";
pub const BIND6: &str = "ztunnel_bind6";
pub const SOCKOPS: &str = "ztunnel_sockops";
pub const SK_LOOKUP: &str = "ztunnel_sk_lookup";
pub const POD_CONFIG_MAP: &str = "pod_config";
pub const ORIG_DST_MAP: &str = "orig_dst";
pub const INBOUND_SOCKETS_MAP: &str = "inbound_sockets";
pub static OBJECT: &[u8] = &[];
