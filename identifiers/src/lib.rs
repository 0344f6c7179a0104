//! The names and addresses that cross a host boundary, checked once.
//!
//! A VM's name becomes a directory on the server and a tap device on both
//! hosts; a MAC address becomes a QEMU device property; a host's name keys
//! the server's table of VMs. Each arrives as text, from a configuration
//! file or from a peer, and each is parsed here into a type that can only
//! hold a valid value. Everything downstream (paths, QEMU options, tap
//! names) takes these types, never a string, so nothing a peer sends
//! reaches a command line or a path unchecked.
//!
//! Each type decodes from the wire (bincode) and from configuration files
//! (serde) through the same check as [`std::str::FromStr`], so a bad value
//! is refused where it is read, with an error naming the rule.
#![warn(missing_docs)]

mod host_name;
mod mac;
mod vm_name;

pub use host_name::HostName;
pub use mac::Mac;
pub use vm_name::VmName;

/// A value that breaks the rule of its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {what}: {rule}")]
pub struct InvalidIdentifier {
    /// What it was meant to be ("VM name", "MAC address").
    pub what: &'static str,
    /// The value as given (cut to 80 characters).
    pub value: String,
    /// The rule it breaks, and what to write instead.
    pub rule: &'static str,
}

impl InvalidIdentifier {
    /// `value` (kept to its first 80 characters) is not a valid `what`: `rule`.
    pub fn new(what: &'static str, value: &str, rule: &'static str) -> Self {
        InvalidIdentifier { what, value: value.chars().take(80).collect(), rule }
    }
}

/// Reads a checked type from its text on the wire (a bincode string), so
/// that the decoder refuses a bad value whatever the sender's code.
///
/// # Errors
/// bincode's error for a malformed string, or the type's rule broken.
pub fn decode_text<T, D>(decoder: &mut D) -> Result<T, bincode::error::DecodeError>
where
    T: std::str::FromStr<Err = InvalidIdentifier>,
    D: bincode::de::Decoder,
{
    let text: String = bincode::Decode::decode(decoder)?;
    text.parse().map_err(|e: InvalidIdentifier| bincode::error::DecodeError::OtherString(e.to_string()))
}

/// Reads a checked type from its text in a configuration file.
///
/// # Errors
/// The format's error, or the type's rule broken.
pub fn deserialize_text<'de, T, D>(deserializer: D) -> Result<T, D::Error>
where
    T: std::str::FromStr<Err = InvalidIdentifier>,
    D: serde::Deserializer<'de>,
{
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// Implements the traits of a checked type that wraps its text in field
/// `0`: `as_str`, `Display`, `AsRef<str>`, serde and bincode through its
/// `FromStr`.
/// The type must implement `FromStr<Err = InvalidIdentifier>`.
#[macro_export]
macro_rules! checked_string {
    ($type:ident) => {
        impl $type {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $type {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $crate::deserialize_text(deserializer)
            }
        }

        impl bincode::Encode for $type {
            fn encode<E: bincode::enc::Encoder>(&self, encoder: &mut E) -> Result<(), bincode::error::EncodeError> {
                bincode::Encode::encode(&self.0, encoder)
            }
        }

        impl<C> bincode::Decode<C> for $type {
            fn decode<D: bincode::de::Decoder<Context = C>>(
                decoder: &mut D,
            ) -> Result<Self, bincode::error::DecodeError> {
                $crate::decode_text(decoder)
            }
        }
        bincode::impl_borrow_decode!($type);
    };
}
