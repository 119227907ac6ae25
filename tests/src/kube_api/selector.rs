//! `labelSelector` and `fieldSelector` query parameters: parsed once per request, then
//! matched against each object. Label selectors take the whole set-based grammar (`k`, `!k`,
//! `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`); field selectors take `=`, `==`
//! and `!=` on the fields each kind supports, and reject any other field as the real API
//! server does.

use std::collections::BTreeMap;

use super::objects::ApiObject;
use super::status::ApiError;

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelRequirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed `labelSelector`; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<LabelRequirement>);

impl LabelSelector {
    pub(crate) fn parse(text: &str) -> Result<LabelSelector, ApiError> {
        let mut requirements = Vec::new();
        for part in split_outside_parens(text) {
            let part = part.trim();
            if !part.is_empty() {
                requirements.push(parse_requirement(part)?);
            }
        }
        Ok(LabelSelector(requirements))
    }

    pub(crate) fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let empty = BTreeMap::new();
        let labels = labels.unwrap_or(&empty);
        self.0.iter().all(|r| match r {
            LabelRequirement::Exists(k) => labels.contains_key(k),
            LabelRequirement::NotExists(k) => !labels.contains_key(k),
            LabelRequirement::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
            LabelRequirement::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
        })
    }
}

fn split_outside_parens(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<LabelRequirement, ApiError> {
    let bad = |why: &str| ApiError::BadRequest(format!("unable to parse requirement: {part:?}: {why}"));
    if let Some(key) = part.strip_prefix('!') {
        return Ok(LabelRequirement::NotExists(label_key(key.trim()).map_err(|e| bad(&e))?));
    }
    if let Some(open) = part.find('(') {
        let values =
            part[open..].strip_prefix('(').and_then(|v| v.strip_suffix(')')).ok_or_else(|| bad("unclosed '('"))?;
        let values =
            values.split(',').map(|v| label_value(v.trim())).collect::<Result<Vec<_>, _>>().map_err(|e| bad(&e))?;
        let head: Vec<&str> = part[..open].split_whitespace().collect();
        return match head.as_slice() {
            [key, "in"] => Ok(LabelRequirement::In(label_key(key).map_err(|e| bad(&e))?, values)),
            [key, "notin"] => Ok(LabelRequirement::NotIn(label_key(key).map_err(|e| bad(&e))?, values)),
            _ => Err(bad("expected `key in (...)` or `key notin (...)`")),
        };
    }
    for (op, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = part.split_once(op) {
            let key = label_key(key.trim()).map_err(|e| bad(&e))?;
            let value = vec![label_value(value.trim()).map_err(|e| bad(&e))?];
            return Ok(if negated { LabelRequirement::NotIn(key, value) } else { LabelRequirement::In(key, value) });
        }
    }
    if part.contains(['<', '>', ' ']) {
        return Err(bad("unsupported operator"));
    }
    Ok(LabelRequirement::Exists(label_key(part).map_err(|e| bad(&e))?))
}

fn label_key(key: &str) -> Result<String, String> {
    let name = key.rsplit('/').next().unwrap_or(key);
    if name.is_empty() || name.len() > 63 || !key.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(key.to_string())
}

fn label_value(value: &str) -> Result<String, String> {
    if value.len() > 63 || !value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("invalid label value {value:?}"));
    }
    Ok(value.to_string())
}

/// A parsed `fieldSelector`; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `text` for kind `K`; a field the kind cannot be selected by is an error.
    pub(crate) fn parse<K: ApiObject>(text: &str) -> Result<FieldSelector, ApiError> {
        let probe = K::default();
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, negated, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, false, v)
            } else {
                return Err(ApiError::BadRequest(format!("invalid field selector {part:?}: expected field=value")));
            };
            let field = field.trim();
            if probe.field(field).is_none() {
                return Err(ApiError::BadRequest(format!("field label not supported: {field}")));
            }
            terms.push((field.to_string(), negated, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub(crate) fn matches<K: ApiObject>(&self, object: &K) -> bool {
        self.0
            .iter()
            .all(|(field, negated, value)| (object.field(field).as_deref() == Some(value.as_str())) != *negated)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selectors_match_like_kubernetes() {
        let ambient = labels(&[("istio.io/dataplane-mode", "ambient"), ("app", "web")]);
        let none = labels(&[("istio.io/dataplane-mode", "none")]);
        let cases: &[(&str, bool, bool)] = &[
            ("", true, true),
            ("istio.io/dataplane-mode=ambient", true, false),
            ("istio.io/dataplane-mode==ambient", true, false),
            ("istio.io/dataplane-mode!=ambient", false, true),
            ("istio.io/dataplane-mode", true, true),
            ("!app", false, true),
            ("istio.io/dataplane-mode in (ambient, none),app", true, false),
            ("istio.io/dataplane-mode notin (none)", true, false),
            ("app notin (web)", false, true),
        ];
        for (text, want_ambient, want_none) in cases {
            let s = LabelSelector::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"));
            assert_eq!(s.matches(Some(&ambient)), *want_ambient, "{text:?} on the ambient labels");
            assert_eq!(s.matches(Some(&none)), *want_none, "{text:?} on the opt-out labels");
        }
    }

    #[test]
    fn bad_label_selectors_name_the_requirement() {
        for text in ["a in (b", "a > 3", "bad key=x", "a=b c"] {
            let err = LabelSelector::parse(text).expect_err(text).to_string();
            assert!(err.contains("unable to parse requirement"), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn field_selectors_take_the_fields_kubernetes_supports() {
        let pod = super::super::objects::pod("ns1", "web", "node-a", "10.0.0.1");
        let on_a = FieldSelector::parse::<Pod>("spec.nodeName=node-a").unwrap();
        let not_web = FieldSelector::parse::<Pod>("metadata.name!=web").unwrap();
        let both = FieldSelector::parse::<Pod>("spec.nodeName==node-a,metadata.namespace=ns1").unwrap();
        assert!(on_a.matches(&pod) && both.matches(&pod) && !not_web.matches(&pod));
        assert!(!FieldSelector::parse::<Pod>("spec.nodeName=node-b").unwrap().matches(&pod));
        let err = FieldSelector::parse::<Pod>("spec.dnsPolicy=None").expect_err("unsupported field").to_string();
        assert_eq!(err, "field label not supported: spec.dnsPolicy");
    }
}
