//! [`StringMatch`]: how `namespaces` and `principals` (and their negations) compare a value:
//! exact, prefix, suffix, or presence (any non-empty value).
//!
//! Serialization follows Istio ztunnel's derived enum: `{"Exact": "v"}` in JSON and the tag
//! form `!Exact v` / `!Presence []` in YAML (serde_yaml 0.9 writes and reads enums as tags).
//! Reading also accepts a one-key mapping, in Istio's spelling or the protobuf one
//! (`{exact: v}`, `{Prefix: v}`, `{presence: {}}`), so hand-written files can skip tags.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde::ser::SerializeTupleVariant;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StringMatch {
    Exact(Arc<str>),
    Prefix(Arc<str>),
    Suffix(Arc<str>),
    /// Any non-empty value.
    Presence,
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => **s == *value,
            StringMatch::Prefix(s) => value.starts_with(&**s),
            StringMatch::Suffix(s) => value.ends_with(&**s),
            StringMatch::Presence => !value.is_empty(),
        }
    }

    /// The compared text, `None` for presence.
    pub fn value(&self) -> Option<&str> {
        match self {
            StringMatch::Exact(s) | StringMatch::Prefix(s) | StringMatch::Suffix(s) => Some(s),
            StringMatch::Presence => None,
        }
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            StringMatch::Exact(_) => "exact",
            StringMatch::Prefix(_) => "prefix",
            StringMatch::Suffix(_) => "suffix",
            StringMatch::Presence => "presence",
        }
    }
}

impl fmt::Display for StringMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StringMatch::Exact(s) => write!(f, "{s:?}"),
            StringMatch::Prefix(s) => write!(f, "{s:?}*"),
            StringMatch::Suffix(s) => write!(f, "*{s:?}"),
            StringMatch::Presence => f.write_str("*"),
        }
    }
}

const NAME: &str = "StringMatch";
const VARIANTS: &[&str] = &["Exact", "Prefix", "Suffix", "Presence"];

impl Serialize for StringMatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            StringMatch::Exact(s) => serializer.serialize_newtype_variant(NAME, 0, "Exact", &**s),
            StringMatch::Prefix(s) => serializer.serialize_newtype_variant(NAME, 1, "Prefix", &**s),
            StringMatch::Suffix(s) => serializer.serialize_newtype_variant(NAME, 2, "Suffix", &**s),
            // Istio's variant is `Presence()`, an empty tuple variant: `{"Presence": []}`.
            StringMatch::Presence => serializer.serialize_tuple_variant(NAME, 3, "Presence", 0)?.end(),
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Presence,
}

impl Kind {
    fn parse<E: de::Error>(name: &str) -> Result<Kind, E> {
        match name {
            "Exact" | "exact" => Ok(Kind::Exact),
            "Prefix" | "prefix" => Ok(Kind::Prefix),
            "Suffix" | "suffix" => Ok(Kind::Suffix),
            "Presence" | "presence" => Ok(Kind::Presence),
            other => Err(E::unknown_variant(other, VARIANTS)),
        }
    }

    fn with(self, text: String) -> StringMatch {
        match self {
            Kind::Exact => StringMatch::Exact(text.into()),
            Kind::Prefix => StringMatch::Prefix(text.into()),
            Kind::Suffix => StringMatch::Suffix(text.into()),
            Kind::Presence => StringMatch::Presence,
        }
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Kind::parse(&name)
    }
}

/// The payload of `presence`: nothing, `[]`, `{}` or `""` (anything else is a mistake).
struct Empty;

impl<'de> Deserialize<'de> for Empty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EmptyVisitor;
        impl<'de> Visitor<'de> for EmptyVisitor {
            type Value = Empty;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("nothing (presence takes no value)")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Empty, E> {
                Ok(Empty)
            }
            fn visit_none<E: de::Error>(self) -> Result<Empty, E> {
                Ok(Empty)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Empty, E> {
                if v.is_empty() { Ok(Empty) } else { Err(E::invalid_value(de::Unexpected::Str(v), &self)) }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Empty, A::Error> {
                match seq.next_element::<de::IgnoredAny>()? {
                    None => Ok(Empty),
                    Some(_) => Err(de::Error::invalid_length(1, &self)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Empty, A::Error> {
                match map.next_key::<de::IgnoredAny>()? {
                    None => Ok(Empty),
                    Some(_) => Err(de::Error::invalid_length(1, &self)),
                }
            }
        }
        deserializer.deserialize_any(EmptyVisitor)
    }
}

struct MatchVisitor;

impl<'de> Visitor<'de> for MatchVisitor {
    type Value = StringMatch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string match: !Exact v, !Prefix v, !Suffix v, !Presence [] (or a one-key mapping)")
    }

    // YAML tags (`!Exact v`) and JSON's externally tagged form.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<StringMatch, A::Error> {
        let (kind, variant) = data.variant::<Kind>()?;
        match kind {
            Kind::Presence => variant.newtype_variant::<Empty>().map(|_| StringMatch::Presence),
            kind => variant.newtype_variant::<String>().map(|text| kind.with(text)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringMatch, A::Error> {
        let Some(kind) = map.next_key::<Kind>()? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        let found = match kind {
            Kind::Presence => map.next_value::<Empty>().map(|_| StringMatch::Presence)?,
            kind => kind.with(map.next_value::<String>()?),
        };
        if map.next_key::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("a string match has exactly one of exact, prefix, suffix, presence"));
        }
        Ok(found)
    }
}

impl<'de> Deserialize<'de> for StringMatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MatchVisitor)
    }
}
