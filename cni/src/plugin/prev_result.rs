//! The previous plugins' result (`prevResult`): the pod's addresses for the node agent, and the
//! result this plugin prints on ADD, which is `prevResult` itself. This plugin adds no
//! interface, address or route, so the chain's result is what the plugins before it returned.
//!
//! Every spec version this plugin accepts writes addresses as `ips[].address` in CIDR
//! notation (`10.244.1.5/24`, `fd00::5/64`); nothing else of the result is read.

use std::net::IpAddr;

use serde_json::{Value, json};

/// A malformed `prevResult`; the message names the field.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("prevResult.{field}: {problem}")]
pub(crate) struct PrevResultError {
    field: String,
    problem: String,
}

/// The pod's addresses, in result order.
pub(crate) fn pod_ips(prev_result: Option<&Value>) -> Result<Vec<IpAddr>, PrevResultError> {
    let error = |field: String, problem: &str| PrevResultError { field, problem: problem.to_string() };
    let ips = match prev_result.and_then(|r| r.get("ips")) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(ips)) => ips,
        Some(_) => return Err(error("ips".into(), "expected a list")),
    };
    let parse_one = |(i, entry): (usize, &Value)| {
        let field = format!("ips[{i}].address");
        let address = entry.get("address").ok_or_else(|| error(field.clone(), "missing"))?;
        let address = address.as_str().ok_or_else(|| error(field.clone(), "expected a string"))?;
        parse_cidr_address(address).map_err(|problem| error(field, &problem))
    };
    ips.iter().enumerate().map(parse_one).collect()
}

/// The address part of `ADDRESS/PREFIX`, with the prefix checked against the family.
fn parse_cidr_address(cidr: &str) -> Result<IpAddr, String> {
    let (address, prefix) = cidr.split_once('/').ok_or_else(|| format!("{cidr:?} is not ADDRESS/PREFIX"))?;
    let ip: IpAddr = address.parse().map_err(|_| format!("{cidr:?} does not start with an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(len) if len <= max => Ok(ip),
        _ => Err(format!("{cidr:?} has no prefix length from 0 to {max}")),
    }
}

/// What ADD prints: `prevResult` unchanged, or (first in a chain, which this plugin is not
/// meant to be) an empty result of the config's version.
pub(crate) fn add_result(prev_result: Option<&Value>, cni_version: &str) -> Value {
    prev_result.cloned().unwrap_or_else(|| json!({ "cniVersion": cni_version }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_every_supported_version() {
        let v1 = json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],
            "ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":0},
                   {"address":"fd00::5/64","interface":0}]});
        let v03 = json!({"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.2/16"}]});
        assert_eq!(
            pod_ips(Some(&v1)).unwrap(),
            vec!["10.244.1.5".parse::<IpAddr>().unwrap(), "fd00::5".parse().unwrap()]
        );
        assert_eq!(pod_ips(Some(&v03)).unwrap(), vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(pod_ips(None).unwrap(), Vec::<IpAddr>::new());
        assert_eq!(pod_ips(Some(&json!({"cniVersion":"1.0.0"}))).unwrap(), Vec::<IpAddr>::new());
    }

    #[test]
    fn malformed_addresses_name_the_field() {
        let cases = [
            (json!({"ips":{}}), "prevResult.ips: expected a list"),
            (json!({"ips":[{"address":"10.0.0.1/8"},{"gateway":"x"}]}), "prevResult.ips[1].address: missing"),
            (json!({"ips":[{"address":5}]}), "prevResult.ips[0].address: expected a string"),
            (json!({"ips":[{"address":"10.0.0.1"}]}), "prevResult.ips[0].address: \"10.0.0.1\" is not ADDRESS/PREFIX"),
            (json!({"ips":[{"address":"pod/24"}]}), "prevResult.ips[0].address: \"pod/24\" does not start with"),
            (json!({"ips":[{"address":"10.0.0.1/33"}]}), "no prefix length from 0 to 32"),
            (json!({"ips":[{"address":"::1/129"}]}), "no prefix length from 0 to 128"),
        ];
        for (result, want) in cases {
            let err = pod_ips(Some(&result)).unwrap_err().to_string();
            assert!(err.contains(want), "{result}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn add_passes_the_previous_result_through() {
        let prev = json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/16"}],"dns":{}});
        assert_eq!(add_result(Some(&prev), "0.4.0"), prev);
        assert_eq!(add_result(None, "1.0.0"), json!({"cniVersion":"1.0.0"}));
    }
}
