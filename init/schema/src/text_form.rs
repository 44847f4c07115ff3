//! Values written as one string, in the TOML config and in the plan's JSON alike
//! (`"8080:80/tcp"`, `"/src:/dst:ro"`, `"udp://10.0.2.2:514"`): serialised by their `Display`,
//! deserialised by their `parse`. A `parse` error becomes serde's custom error, raised while the
//! deserializer is at the value, so toml reports it at the value's own line and column (an
//! element of an array included); `Display` writes a form that `parse` reads back to an equal
//! value.

use std::fmt;

use serde::de::{Error, Visitor};

/// Implements `Serialize` (the `Display` form) and `Deserialize` (through
/// `parse(&str) -> Result<Self, String>`) for each type listed.
macro_rules! serde_as_text {
    ($($type:ty),+ $(,)?) => {$(
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let mut value = None;
                d.deserialize_str($crate::text_form::Parse(&mut |text: &str| {
                    value = Some(<$type>::parse(text)?);
                    Ok(())
                }))?;
                value.ok_or_else(|| serde::de::Error::custom("no value was read"))
            }
        }
    )+};
}

pub(crate) use serde_as_text;

/// The one visitor of every such type: it hands the string to a parser that keeps the value.
/// (One visitor type, not one per value type: each visitor type is another copy of the
/// deserializers' code in PID 1.)
pub(crate) struct Parse<'a>(pub(crate) &'a mut dyn FnMut(&str) -> Result<(), String>);

impl Visitor<'_> for Parse<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<(), E> {
        (self.0)(text).map_err(E::custom)
    }
}
