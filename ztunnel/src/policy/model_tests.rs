//! The model's serialized form (Istio ztunnel's local config and config dump spellings), its
//! checks, and CIDR parsing.

use super::*;

/// A policy as Istio ztunnel writes it into a local config file (serde_yaml tags for enums).
const ISTIO_YAML: &str = r#"
name: allow-sleep
namespace: default
scope: WorkloadSelector
action: Allow
rules:
- - - principals:
      - !Exact cluster.local/ns/default/sa/sleep
      - !Prefix cluster.local/ns/tools/
      notPrincipals:
      - !Suffix /sa/intruder
      - !Presence []
      sourceIps:
      - 10.0.0.0/8
      destinationPorts:
      - 8080
  - - serviceAccounts:
      - namespace: default
        serviceAccount: sleep
dryRun: false
"#;

#[test]
fn parses_istio_local_config_form() {
    let p: Authorization = serde_yaml::from_str(ISTIO_YAML).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.key().as_str(), "default/allow-sleep");
    assert_eq!((p.scope, p.action, p.dry_run), (Scope::WorkloadSelector, Action::Allow, false));
    assert_eq!(p.rules.len(), 1);
    assert_eq!(p.rules[0].clauses.len(), 2);
    let m = &p.rules[0].clauses[0].matches[0];
    assert_eq!(
        m.principals,
        vec![
            StringMatch::Exact("cluster.local/ns/default/sa/sleep".into()),
            StringMatch::Prefix("cluster.local/ns/tools/".into())
        ]
    );
    assert_eq!(m.not_principals, vec![StringMatch::Suffix("/sa/intruder".into()), StringMatch::Presence]);
    assert_eq!(m.source_ips, vec!["10.0.0.0/8".parse().unwrap()]);
    assert_eq!(m.destination_ports, vec![8080]);
    assert_eq!(p.rules[0].clauses[1].matches[0].service_accounts[0].service_account.as_ref(), "sleep");
    p.check().unwrap();
}

#[test]
fn round_trips_through_yaml_and_json_in_istio_spelling() {
    let p: Authorization = serde_yaml::from_str(ISTIO_YAML).unwrap();
    let yaml = serde_yaml::to_string(&p).unwrap();
    for expected in [
        "!Exact cluster.local/ns/default/sa/sleep",
        "!Presence []",
        "dryRun: false",
        "scope: WorkloadSelector",
        "- 10.0.0.0/8",
    ] {
        assert!(yaml.contains(expected), "YAML lacks {expected:?}:\n{yaml}");
    }
    assert_eq!(serde_yaml::from_str::<Authorization>(&yaml).unwrap(), p, "YAML round trip");
    let json = serde_json::to_value(&p).unwrap();
    let m = &json["rules"][0][0][0];
    assert_eq!(m["principals"][0]["Exact"], "cluster.local/ns/default/sa/sleep");
    assert_eq!(m["notPrincipals"][1]["Presence"], serde_json::json!([]));
    assert_eq!(json["action"], "Allow");
    assert!(m.get("namespaces").is_none(), "empty fields are left out: {m}");
    assert_eq!(serde_json::from_value::<Authorization>(json).unwrap(), p, "JSON round trip");
}

#[test]
fn unevaluated_notes_show_in_dumps_but_no_file_can_set_them() {
    let mut p: Authorization = serde_yaml::from_str(ISTIO_YAML).unwrap();
    assert!(p.unevaluated.is_empty());
    assert!(serde_json::to_value(&p).unwrap().get("unevaluated").is_none(), "left out when empty");
    let cases = [
        (Action::Deny, "matchingEveryConnection", "treated as matching every connection"),
        (Action::Allow, "matchingNoConnection", "treated as matching no connection"),
    ];
    for (action, spelled, told) in cases {
        let note = Unevaluated {
            at: "rules[0].clauses[1]".into(),
            content: "unknown field 3".into(),
            treated_as: TreatedAs::for_action(action),
        };
        assert!(note.to_string().starts_with("rules[0].clauses[1]: unknown field 3 cannot be evaluated"), "{note}");
        assert!(note.to_string().ends_with(told), "{action:?}: {note}");
        p.unevaluated = vec![note];
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["unevaluated"][0]["treatedAs"], spelled, "{json}");
        assert_eq!(json["unevaluated"][0]["at"], "rules[0].clauses[1]", "{json}");
        let err = serde_json::from_value::<Authorization>(json).expect_err("a config file cannot claim notes");
        assert!(err.to_string().contains("unevaluated"), "{err}");
    }
}

#[test]
fn string_matches_also_read_as_one_key_mappings() {
    let cases = [
        ("{exact: a}", StringMatch::Exact("a".into())),
        ("{Prefix: a}", StringMatch::Prefix("a".into())),
        ("{suffix: a}", StringMatch::Suffix("a".into())),
        ("{presence: {}}", StringMatch::Presence),
        ("{Presence: []}", StringMatch::Presence),
        ("!presence", StringMatch::Presence),
        ("!Presence {}", StringMatch::Presence),
    ];
    for (yaml, expected) in cases {
        let got: StringMatch = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        assert_eq!(got, expected, "{yaml}");
    }
    for bad in ["a", "{exact: a, prefix: b}", "{regex: a}", "!Presence [x]", "{}"] {
        assert!(serde_yaml::from_str::<StringMatch>(bad).is_err(), "{bad:?} must be rejected");
    }
}

#[test]
fn proto_enum_spellings_and_defaults() {
    let p: Authorization =
        serde_yaml::from_str("{name: n, namespace: ns, scope: WORKLOAD_SELECTOR, action: DENY}").unwrap();
    assert_eq!((p.scope, p.action), (Scope::WorkloadSelector, Action::Deny));
    assert!(p.rules.is_empty() && !p.dry_run, "rules and dryRun default to empty and false");
    for bad in [
        "{name: n, namespace: ns, scope: Global}",
        "{name: n, namespace: ns, scope: Cluster, action: Allow}",
        "{name: n, namespace: ns, scope: Global, action: Allow, extra: 1}",
        "{name: n, namespace: ns, scope: Global, action: Allow, rules: [[[{destinationPort: [80]}]]]}",
        "{name: n, namespace: ns, scope: Global, action: Allow, rules: [[[{destinationPorts: [70000]}]]]}",
    ] {
        assert!(serde_yaml::from_str::<Authorization>(bad).is_err(), "{bad} must be rejected");
    }
}

fn m(p: &mut Authorization) -> &mut Match {
    &mut p.rules[0].clauses[0].matches[0]
}

#[test]
fn check_names_the_field() {
    let base: Authorization = serde_yaml::from_str(ISTIO_YAML).unwrap();
    let with = |f: &dyn Fn(&mut Authorization)| {
        let mut p = base.clone();
        f(&mut p);
        p.check().expect_err("must be rejected")
    };
    let cases: Vec<(PolicyError, &str, Problem)> = vec![
        (with(&|p| p.name = "".into()), "name", Problem::Empty),
        (with(&|p| p.namespace = "a/b".into()), "namespace", Problem::Slash("a/b".into())),
        (with(&|p| m(p).destination_ports.push(0)), "rules[0][0][0].destinationPorts[1]", Problem::PortZero),
        (with(&|p| m(p).not_destination_ports = vec![0]), "rules[0][0][0].notDestinationPorts[0]", Problem::PortZero),
        (
            with(&|p| m(p).principals[1] = StringMatch::Prefix("".into())),
            "rules[0][0][0].principals[1]",
            Problem::EmptyString("prefix"),
        ),
        (
            with(&|p| m(p).namespaces = vec![StringMatch::Exact("".into())]),
            "rules[0][0][0].namespaces[0]",
            Problem::EmptyString("exact"),
        ),
        (
            with(&|p| p.rules[0].clauses[1].matches[0].service_accounts[0].namespace = "".into()),
            "rules[0][1][0].serviceAccounts[0].namespace",
            Problem::Empty,
        ),
    ];
    for (err, field, problem) in cases {
        assert_eq!(err.field, field, "{err}");
        assert_eq!(err.problem, problem, "{err}");
    }
}

#[test]
fn cidr_parsing() {
    let ok = [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("10.1.2.3", "10.1.2.3/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("fd00::1/64", "fd00::/64"),
        ("::1", "::1/128"),
        ("::/0", "::/0"),
    ];
    for (text, shown) in ok {
        let c: Cidr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(c.to_string(), shown, "{text}");
    }
    for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "10.0.0.0/", "10.0.0.0/x", "host/8", ""] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad:?} must be rejected");
    }
    assert_eq!(Cidr::from_octets(&[10, 1, 0, 0], 16).unwrap().to_string(), "10.1.0.0/16");
    assert_eq!(Cidr::from_octets(&[0; 16], 0).unwrap().to_string(), "::/0");
    assert_eq!(Cidr::from_octets(&[1, 2, 3], 8), Err(CidrError::Octets { len: 3 }));
    assert!(matches!(Cidr::from_octets(&[10, 0, 0, 0], 40), Err(CidrError::Prefix { prefix: 40, .. })));
}
