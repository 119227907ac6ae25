//! Address conversion tests: a full workload and service convert field for field; each
//! malformed input is rejected naming the resource and the field. Policies are in
//! `authorization_tests.rs`.

use std::net::IpAddr;

use prost::Message;

use super::*;
use crate::state::{GatewayDestination, HealthStatus, NetworkAddress, Protocol};

fn defaults() -> Defaults {
    Defaults::new("mesh.example")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn workload() -> pb::Workload {
    pb::Workload {
        uid: "cluster1//v1/Pod/shop/cart-0".into(),
        name: "cart-0".into(),
        namespace: "shop".into(),
        addresses: vec![bytes(ip("10.0.0.7")), bytes(ip("fd00::7"))],
        tunnel_protocol: pb::TunnelProtocol::Hbone as i32,
        service_account: "cart".into(),
        node: "node-a".into(),
        workload_type: pb::WorkloadType::Pod as i32,
        status: pb::WorkloadStatus::Unhealthy as i32,
        waypoint: Some(pb::GatewayAddress {
            destination: Some(pb::gateway_address::Destination::Address(pb::NetworkAddress {
                network: "".into(),
                address: bytes(ip("10.0.0.9")),
            })),
            hbone_mtls_port: 15008,
        }),
        services: [(
            "shop/cart.shop.svc.cluster.local".to_string(),
            pb::PortList {
                ports: vec![
                    pb::Port { service_port: 80, target_port: 8080 },
                    pb::Port { service_port: 81, target_port: 0 },
                ],
            },
        )]
        .into(),
        capacity: Some(3),
        ..Default::default()
    }
}

fn service() -> pb::Service {
    pb::Service {
        name: "cart".into(),
        namespace: "shop".into(),
        hostname: "cart.shop.svc.cluster.local".into(),
        addresses: vec![pb::NetworkAddress { network: "".into(), address: bytes(ip("10.96.0.3")) }],
        ports: vec![pb::Port { service_port: 80, target_port: 8080 }],
        ip_families: pb::IpFamilies::Ipv4Only as i32,
        ..Default::default()
    }
}

fn convert(name: &str, address: pb::Address) -> Result<AddressEntry, ResourceError> {
    let d = defaults();
    AddressEntry::try_from(Named { name, message: address, defaults: &d })
}

fn of_workload(w: pb::Workload) -> pb::Address {
    pb::Address { r#type: Some(pb::address::Type::Workload(w)) }
}

fn of_service(s: pb::Service) -> pb::Address {
    pb::Address { r#type: Some(pb::address::Type::Service(s)) }
}

#[test]
fn workload_converts_field_for_field() {
    let entry = convert("cluster1//v1/Pod/shop/cart-0", of_workload(workload())).expect("valid workload");
    let AddressEntry::Workload { workload, endpoints } = entry else { panic!("expected a workload, got {entry:?}") };
    assert_eq!(workload.identity().to_string(), "spiffe://mesh.example/ns/shop/sa/cart");
    assert_eq!(workload.workload_ips, vec![ip("10.0.0.7"), ip("fd00::7")]);
    assert_eq!(workload.protocol, Protocol::Hbone);
    assert_eq!(workload.status, HealthStatus::Unhealthy);
    assert_eq!(&*workload.workload_type, "pod");
    assert_eq!(workload.capacity, 3);
    let waypoint = workload.waypoint.as_ref().expect("waypoint kept");
    assert_eq!(waypoint.destination, GatewayDestination::Address(NetworkAddress::new("", ip("10.0.0.9"))));
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].service_key.to_string(), "shop/cart.shop.svc.cluster.local");
    assert_eq!(endpoints[0].port, [(80, 8080)].into(), "target 0 means no own mapping");
    assert_eq!(endpoints[0].status, HealthStatus::Unhealthy);
}

#[test]
fn elided_identity_parts_get_istio_defaults() {
    let mut w = workload();
    w.service_account.clear();
    w.capacity = None;
    let Ok(AddressEntry::Workload { workload, .. }) = convert("w", of_workload(w)) else { panic!("valid") };
    assert_eq!(workload.identity().to_string(), "spiffe://mesh.example/ns/shop/sa/default");
    assert_eq!(workload.capacity, 1);
}

#[test]
fn service_converts_field_for_field() {
    let entry = convert("shop/cart.shop.svc.cluster.local", of_service(service())).expect("valid service");
    let AddressEntry::Service(s) = entry else { panic!("expected a service") };
    assert_eq!(s.vips, vec![NetworkAddress::new("", ip("10.96.0.3"))]);
    assert_eq!(s.ports, [(80, 8080)].into());
    assert_eq!(s.ip_families, Some(crate::state::IpFamily::IPv4));
    assert!(s.endpoints.is_empty());
}

#[test]
fn malformed_addresses_are_rejected_naming_resource_and_field() {
    type Edit = fn(&mut pb::Workload);
    let workload_cases: [(&str, Edit, &str, &str); 9] = [
        ("short address", |w| w.addresses[1] = vec![1, 2, 3, 4, 5], "workload.addresses[1]", "got 5"),
        ("no uid", |w| w.uid.clear(), "workload.uid", "must not be empty"),
        ("slash in sa", |w| w.service_account = "a/b".into(), "workload.service_account", "must not contain '/'"),
        ("unknown protocol", |w| w.tunnel_protocol = 7, "workload.tunnel_protocol", "unknown enum value 7"),
        ("ip twice", |w| w.addresses[1] = w.addresses[0].clone(), "workload.addresses[1]", "listed twice"),
        (
            "service key",
            |w| w.services = [("no-slash".to_string(), pb::PortList::default())].into(),
            "workload.services[\"no-slash\"]",
            "expected \"namespace/hostname\"",
        ),
        (
            "port range",
            |w| w.services.values_mut().for_each(|p| p.ports[0].target_port = 70000),
            "workload.services[\"shop/cart.shop.svc.cluster.local\"].ports[0].target_port",
            "out of range",
        ),
        (
            "waypoint port",
            |w| w.waypoint.as_mut().unwrap().hbone_mtls_port = 0,
            "workload.waypoint.hbone_mtls_port",
            "must be in 1..65535",
        ),
        (
            "waypoint without destination",
            |w| w.waypoint.as_mut().unwrap().destination = None,
            "workload.waypoint.destination",
            "neither hostname nor address",
        ),
    ];
    for (name, edit, field, reason) in workload_cases {
        let mut w = workload();
        edit(&mut w);
        let err = convert("bad-uid", of_workload(w)).expect_err(name);
        assert_eq!(err.field.as_deref(), Some(field), "{name}: {err}");
        assert!(err.reason.contains(reason), "{name}: {err}");
        assert!(err.to_string().starts_with("Address \"bad-uid\": "), "{name}: {err}");
    }
    type SvcEdit = fn(&mut pb::Service);
    let service_cases: [(&str, SvcEdit, &str, &str); 3] = [
        ("no hostname", |s| s.hostname.clear(), "service.hostname", "must not be empty"),
        ("vip bytes", |s| s.addresses[0].address = vec![], "service.addresses[0].address", "got 0"),
        ("port 0", |s| s.ports[0].service_port = 0, "service.ports[0]", "service port must be in 1..65535"),
    ];
    for (name, edit, field, reason) in service_cases {
        let mut s = service();
        edit(&mut s);
        let err = convert("shop/cart", of_service(s)).expect_err(name);
        assert_eq!(err.field.as_deref(), Some(field), "{name}: {err}");
        assert!(err.reason.contains(reason), "{name}: {err}");
    }
    let err = convert("empty", pb::Address { r#type: None }).expect_err("no type");
    assert_eq!(err.field.as_deref(), Some("type"));
}

#[test]
fn public_checkers_decode_then_convert() {
    let good = of_workload(workload()).encode_to_vec();
    check_address("w", &good, "cluster.local").expect("valid bytes");
    let err = check_address("w", &[0xff, 0xff], "cluster.local").expect_err("garbage");
    assert!(err.reason.contains("cannot decode"), "{err}");
}
