//! A serde [`Deserializer`] over a parsed JSON [`Value`] that reads it the way Go's
//! `encoding/json` reads SRDP's config, so that the config's types can simply derive
//! `Deserialize`:
//!
//! - an object read as a struct has its keys matched to the struct's fields exactly, else
//!   case-insensitively; unknown keys become warnings, and `null` members count as absent;
//! - `null` read as a map is an empty map (Go's nil map);
//! - every error names the path of the value it is about
//!   (`resourceList[0].selectors.vendors[1]`), and type errors say what was found.
//!
//! serde_json's own `Value` deserializer does none of this: its keys are exact and its errors
//! name neither the field nor the value found.

use std::fmt::Display;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{ConfigWarning, invalid, join};
use crate::error::ConfigError;

/// Reads `value`, found at `path` (`""` for the whole file), as a `T`. For the object `value`
/// itself, not the ones within it, `known` (a subset of `T`'s fields) replaces `T`'s fields as
/// the keys taken, and `ignored` keys are dropped without a warning.
pub(super) fn read<'de, T: Deserialize<'de>>(
    value: &'de Value,
    path: &str,
    known: Option<&'static [&'static str]>,
    ignored: &'static [&'static str],
    warnings: &mut Vec<ConfigWarning>,
) -> Result<T, ConfigError> {
    let de = De {
        value,
        path,
        known,
        ignored,
        warnings,
    };
    T::deserialize(de).map_err(|e| e.at(path))
}

/// How a value is described in a type error.
pub(super) fn found(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The path as an error shows it: the top level has no key of its own.
fn shown(path: &str) -> &str {
    if path.is_empty() { "config" } else { path }
}

/// An error on its way up. Errors raised by `Deserialize` impls (a missing field, a string
/// that does not parse) do not know where they are; the value they came from places them.
#[derive(Debug, thiserror::Error)]
enum DeError {
    #[error("{0}")]
    At(ConfigError),
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Custom(String),
}

impl de::Error for DeError {
    fn custom<T: Display>(msg: T) -> Self {
        DeError::Custom(msg.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::Missing(field)
    }
}

impl DeError {
    /// The error, placed at `path` unless it already has a place.
    fn at(self, path: &str) -> ConfigError {
        match self {
            DeError::At(e) => e,
            DeError::Missing(field) => ConfigError::Missing {
                field: join(path, field),
            },
            DeError::Custom(message) => invalid(shown(path), message),
        }
    }
}

struct De<'de, 'a> {
    value: &'de Value,
    path: &'a str,
    known: Option<&'static [&'static str]>,
    ignored: &'static [&'static str],
    warnings: &'a mut Vec<ConfigWarning>,
}

impl De<'_, '_> {
    fn expected(&self, expected: &'static str) -> DeError {
        DeError::At(ConfigError::Type {
            field: shown(self.path).to_string(),
            expected,
            found: found(self.value),
        })
    }
}

/// Reads a member or an element at `path`, placing the errors that come back without one.
fn nested<'de, S: DeserializeSeed<'de>>(
    seed: S,
    value: &'de Value,
    path: &str,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<S::Value, DeError> {
    let de = De {
        value,
        path,
        known: None,
        ignored: &[],
        warnings,
    };
    seed.deserialize(de).map_err(|e| DeError::At(e.at(path)))
}

/// The members of `obj` under the names in `known`: an exact match first, else a
/// case-insensitive one, as Go matches them. Two keys landing on one field are refused: Go
/// keeps the later one, but which one was later is lost once the object is parsed, and such a
/// config is a mistake.
fn fold<'de>(
    obj: &'de Map<String, Value>,
    known: &[&'static str],
    ignored: &[&str],
    path: &str,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Vec<(&'de str, &'de Value)>, ConfigError> {
    let mut out: Vec<(&'static str, &'de str, &'de Value)> = Vec::new();
    for (key, value) in obj {
        if ignored.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            continue;
        }
        let field = known
            .iter()
            .find(|k| **k == key)
            .or_else(|| known.iter().find(|k| k.eq_ignore_ascii_case(key)));
        let Some(field) = field else {
            warnings.push(ConfigWarning {
                field: join(path, key),
                message: format!("unknown key, ignored (known here: {})", known.join(", ")),
            });
            continue;
        };
        if let Some((_, previous, _)) = out.iter().find(|(f, ..)| f == field) {
            return Err(invalid(
                join(path, key),
                format!("{field:?} is given twice (also as {previous:?}); keep one"),
            ));
        }
        out.push((field, key, value));
    }
    Ok(out
        .into_iter()
        .filter(|(.., value)| !value.is_null())
        .map(|(field, _, value)| (field, value))
        .collect())
}

impl<'de> Deserializer<'de> for De<'de, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => n.deserialize_any(visitor).map_err(de::Error::custom),
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(_) => self.deserialize_seq(visitor),
            Value::Object(_) => self.deserialize_map(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Bool(b) => visitor.visit_bool(*b),
            _ => Err(self.expected("a boolean")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::String(s) => visitor.visit_borrowed_str(s),
            _ => Err(self.expected("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let Value::Array(items) = self.value else {
            return Err(self.expected("an array"));
        };
        visitor.visit_seq(Items {
            items: items.iter().enumerate(),
            path: self.path,
            warnings: self.warnings,
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let members = match self.value {
            Value::Object(obj) => obj.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            Value::Null => Vec::new(),
            _ => return Err(self.expected("an object")),
        };
        visitor.visit_map(Members {
            members: members.into_iter(),
            pending: None,
            path: self.path,
            warnings: self.warnings,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let Value::Object(obj) = self.value else {
            return Err(self.expected("an object"));
        };
        let known = self.known.unwrap_or(fields);
        let members =
            fold(obj, known, self.ignored, self.path, self.warnings).map_err(DeError::At)?;
        visitor.visit_map(Members {
            members: members.into_iter(),
            pending: None,
            path: self.path,
            warnings: self.warnings,
        })
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit unit_struct
        tuple tuple_struct enum identifier
    }
}

struct Items<'de, 'a> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Value>>,
    path: &'a str,
    warnings: &'a mut Vec<ConfigWarning>,
}

impl<'de> SeqAccess<'de> for Items<'de, '_> {
    type Error = DeError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, DeError> {
        let Some((i, value)) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{i}]", self.path);
        nested(seed, value, &path, self.warnings).map(Some)
    }
}

struct Members<'de, 'a> {
    members: std::vec::IntoIter<(&'de str, &'de Value)>,
    /// The member whose key was just read.
    pending: Option<(&'de str, &'de Value)>,
    path: &'a str,
    warnings: &'a mut Vec<ConfigWarning>,
}

impl<'de> MapAccess<'de> for Members<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.members.next() else {
            return Ok(None);
        };
        self.pending = Some((key, value));
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, DeError> {
        let (key, value) = self
            .pending
            .take()
            .ok_or_else(|| DeError::Custom("a value was asked for before its key".into()))?;
        nested(seed, value, &join(self.path, key), self.warnings)
    }
}
