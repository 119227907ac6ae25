//! Finds what an encoded `istio.security.Authorization` carries beyond the fields this build's
//! proto declares. prost skips unknown fields while decoding, so a policy converted from the
//! decoded message alone would be enforced as if that content were absent: a DENY narrowed by
//! a condition it cannot see would deny less than istiod asked for. Walking the wire format a
//! second time, with the same schema, tells the conversion which element (the policy, a rule,
//! a clause or a match) holds such content.
//!
//! Content nested inside a match (its string matches, addresses and service accounts) counts
//! as the match's. Istio's `extensions` (field 7 of the policy, 13 of a match) are not
//! declared in our proto, so they are found here too and named. The walker runs on bytes prost
//! has decoded already; should it still meet something it cannot parse, the element at hand
//! is reported as holding undecodable content (field number 0), never skipped.

use std::collections::BTreeMap;
use std::fmt;

/// An element of the resource; indexes are positions in the repeated fields as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Place {
    Policy,
    Rule(usize),
    Clause(usize, usize),
    Match(usize, usize, usize),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Place::Policy => f.write_str("policy"),
            Place::Rule(i) => write!(f, "rules[{i}]"),
            Place::Clause(i, j) => write!(f, "rules[{i}].clauses[{j}]"),
            Place::Match(i, j, k) => write!(f, "rules[{i}].clauses[{j}].matches[{k}]"),
        }
    }
}

/// Field numbers kept per element for the report; more only add "and more".
const NUMBERS_KEPT: usize = 4;

/// Field numbers of unknown content, by the element holding it (at most [`NUMBERS_KEPT`]
/// distinct numbers each; `truncated` when there were more).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Found {
    pub(super) numbers: Vec<u32>,
    pub(super) truncated: bool,
}

impl Found {
    fn add(&mut self, number: u32) {
        if self.numbers.contains(&number) {
            return;
        }
        if self.numbers.len() < NUMBERS_KEPT {
            self.numbers.push(number);
        } else {
            self.truncated = true;
        }
    }

    /// `unknown field 14`, `extensions (field 13)`, `undecodable content`, comma-separated.
    pub(super) fn describe(&self, place: Place) -> String {
        let mut parts: Vec<String> = self
            .numbers
            .iter()
            .map(|&n| match (place, n) {
                (_, 0) => "undecodable content".to_string(),
                (Place::Policy, 7) | (Place::Match(..), 13) => format!("extensions (field {n})"),
                _ => format!("unknown field {n}"),
            })
            .collect();
        if self.truncated {
            parts.push("more unknown fields".into());
        }
        parts.join(", ")
    }
}

/// The messages of `authorization.proto`, as far as the walk needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Message {
    Policy,
    Rule,
    Clause,
    Match,
    StringMatch,
    Address,
    ServiceAccountMatch,
    Empty,
}

enum Field {
    Scalar,
    Nested(Message),
    Unknown,
}

/// What field `number` of `message` is in our proto.
fn field(message: Message, number: u32) -> Field {
    use Message as M;
    match (message, number) {
        (M::Policy, 1..=4 | 6) => Field::Scalar,
        (M::Policy, 5) => Field::Nested(M::Rule),
        (M::Rule, 1) => Field::Nested(M::Clause),
        (M::Clause, 2) => Field::Nested(M::Match),
        (M::Match, 1..=4) => Field::Nested(M::StringMatch),
        (M::Match, 5..=8) => Field::Nested(M::Address),
        (M::Match, 9 | 10) => Field::Scalar,
        (M::Match, 11 | 12) => Field::Nested(M::ServiceAccountMatch),
        (M::StringMatch, 1..=3) | (M::Address, 1 | 2) | (M::ServiceAccountMatch, 1 | 2) => Field::Scalar,
        (M::StringMatch, 4) => Field::Nested(M::Empty),
        _ => Field::Unknown,
    }
}

/// Every element of the encoded `Authorization` in `bytes` that holds unknown content.
pub(super) fn unknown_fields(bytes: &[u8]) -> BTreeMap<Place, Found> {
    let mut found = BTreeMap::new();
    walk(Message::Policy, bytes, Place::Policy, &mut found);
    found
}

/// Walks one message at `place`. The nesting is fixed by the schema (six levels at most), so
/// the recursion is bounded.
fn walk(message: Message, mut bytes: &[u8], place: Place, found: &mut BTreeMap<Place, Found>) {
    let mut report = |number: u32| found.entry(place).or_default().add(number);
    // Occurrences so far of the repeated field that opens the next place (rules, clauses,
    // matches); prost appends them in this order, so this is the index in the decoded message.
    let mut opened = 0usize;
    let mut children = Vec::new();
    while !bytes.is_empty() {
        let Some(key) = varint(&mut bytes) else { return report(0) };
        let Ok(number) = u32::try_from(key >> 3) else { return report(0) };
        if number == 0 {
            return report(0);
        }
        let body = match key & 7 {
            0 => varint(&mut bytes).map(|_| None),
            1 => take(&mut bytes, 8).map(|_| None),
            2 => varint(&mut bytes)
                .and_then(|len| usize::try_from(len).ok())
                .and_then(|len| take(&mut bytes, len))
                .map(Some),
            5 => take(&mut bytes, 4).map(|_| None),
            // A group: never a field of ours. The element is reported either way, so the rest
            // of this message need not be read.
            3 => return report(number),
            _ => return report(0),
        };
        let Some(body) = body else { return report(0) };
        match field(message, number) {
            Field::Unknown => report(number),
            Field::Scalar => {}
            Field::Nested(child) => {
                let Some(body) = body else { return report(0) };
                let next = match (place, child) {
                    (Place::Policy, Message::Rule) => Place::Rule(opened),
                    (Place::Rule(i), Message::Clause) => Place::Clause(i, opened),
                    (Place::Clause(i, j), Message::Match) => Place::Match(i, j, opened),
                    _ => place,
                };
                if next != place {
                    opened += 1;
                }
                children.push((child, body, next));
            }
        }
    }
    for (child, body, next) in children {
        walk(child, body, next, found);
    }
}

/// A base-128 varint (at most 10 bytes), advancing `bytes`.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some(value);
        }
    }
    None
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(head)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::xds::proto::security as pb;

    fn key(number: u32, wire: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut v = u64::from(number) << 3 | u64::from(wire);
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out
    }

    fn nested(number: u32, body: &[u8]) -> Vec<u8> {
        [key(number, 2), vec![body.len() as u8], body.to_vec()].concat()
    }

    fn places(bytes: &[u8]) -> Vec<(String, Vec<u32>)> {
        unknown_fields(bytes).into_iter().map(|(p, f)| (p.to_string(), f.numbers)).collect()
    }

    #[test]
    fn every_declared_field_is_known() {
        let s = |t| pb::StringMatch { match_type: Some(t) };
        use pb::string_match::MatchType as T;
        let strings =
            vec![s(T::Exact("a".into())), s(T::Prefix("b".into())), s(T::Suffix("c".into())), s(T::Presence(()))];
        let addr = vec![pb::Address { address: vec![10, 0, 0, 0], length: 8 }];
        let sa = vec![pb::ServiceAccountMatch { namespace: "ns".into(), service_account: "sa".into() }];
        let m = pb::Match {
            namespaces: strings.clone(),
            not_namespaces: strings.clone(),
            service_accounts: sa.clone(),
            not_service_accounts: sa,
            principals: strings.clone(),
            not_principals: strings,
            source_ips: addr.clone(),
            not_source_ips: addr.clone(),
            destination_ips: addr.clone(),
            not_destination_ips: addr,
            destination_ports: vec![80, 443],
            not_destination_ports: vec![8080],
        };
        let a = pb::Authorization {
            name: "n".into(),
            namespace: "ns".into(),
            scope: 2,
            action: 1,
            rules: vec![pb::Rule { clauses: vec![pb::Clause { matches: vec![m.clone(), m] }] }],
            dry_run: true,
        };
        assert_eq!(places(&a.encode_to_vec()), vec![], "a policy using every declared field");
        // Ports also arrive unpacked (one varint per value).
        let unpacked = [key(9, 0), vec![80], key(10, 0), vec![81]].concat();
        let bytes = nested(5, &nested(1, &nested(2, &unpacked)));
        assert_eq!(places(&bytes), vec![]);
    }

    #[test]
    fn unknown_fields_are_placed_by_index_whatever_their_wire_type() {
        let unknown = [
            ("varint", [key(20, 0), vec![1]].concat()),
            ("fixed64", [key(20, 1), vec![0; 8]].concat()),
            ("length-delimited", [key(20, 2), vec![2, 9, 9]].concat()),
            ("fixed32", [key(20, 5), vec![0; 4]].concat()),
            ("group", [key(20, 3), key(1, 0), vec![1], key(20, 4)].concat()),
        ];
        let plain_match = nested(9, &[80]);
        for (wire, field) in unknown {
            // Rule 1, clause 1, match 1 (second of each) holds it; everything else is known.
            let odd_match = [plain_match.clone(), field.clone()].concat();
            let clause = [nested(2, &plain_match), nested(2, &odd_match)].concat();
            let rule = [nested(1, &nested(2, &plain_match)), nested(1, &clause)].concat();
            let policy = [nested(5, &nested(1, &[])), nested(5, &rule), key(6, 0), vec![1]].concat();
            assert_eq!(places(&policy), vec![("rules[1].clauses[1].matches[1]".into(), vec![20])], "{wire}");
            // And at the other levels.
            let at_clause = nested(5, &nested(1, &[nested(2, &plain_match), field.clone()].concat()));
            assert_eq!(places(&at_clause), vec![("rules[0].clauses[0]".into(), vec![20])], "{wire}");
            let at_rule = nested(5, &[nested(1, &[]), field.clone()].concat());
            assert_eq!(places(&at_rule), vec![("rules[0]".into(), vec![20])], "{wire}");
            assert_eq!(places(&[field.clone(), key(1, 2), vec![0]].concat()), vec![("policy".into(), vec![20])]);
        }
    }

    #[test]
    fn content_inside_a_match_counts_as_the_match() {
        let in_string = nested(3, &[key(5, 2), vec![1, b'x']].concat());
        let in_address = nested(5, &[key(1, 2), vec![4, 10, 0, 0, 1], key(3, 0), vec![1]].concat());
        let in_account = nested(11, &[key(1, 2), vec![1, b'n'], key(9, 0), vec![1]].concat());
        let in_presence = nested(3, &nested(4, &[key(1, 0), vec![1]].concat()));
        for (what, m) in
            [("string", in_string), ("address", in_address), ("account", in_account), ("presence", in_presence)]
        {
            let bytes = nested(5, &nested(1, &nested(2, &m)));
            assert_eq!(
                unknown_fields(&bytes).keys().copied().collect::<Vec<_>>(),
                vec![Place::Match(0, 0, 0)],
                "{what}"
            );
        }
    }

    #[test]
    fn extensions_are_named_and_garbage_is_reported_not_skipped() {
        let found = unknown_fields(&[key(7, 2), vec![0]].concat());
        assert_eq!(found[&Place::Policy].describe(Place::Policy), "extensions (field 7)");
        let many: Vec<u8> = (20..30).flat_map(|n| [key(n, 0), vec![1]].concat()).collect();
        let found = unknown_fields(&many);
        assert_eq!(
            found[&Place::Policy].describe(Place::Policy),
            "unknown field 20, unknown field 21, unknown field 22, unknown field 23, more unknown fields"
        );
        for garbage in [vec![0x80], vec![0x2a, 9, 1], vec![0x00], vec![0x2f], vec![0x2c]] {
            let found = unknown_fields(&garbage);
            assert_eq!(found[&Place::Policy].numbers, vec![0], "{garbage:?} must be reported as undecodable");
        }
    }
}
