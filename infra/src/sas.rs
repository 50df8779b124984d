//! The shared access key of an Azure Service Bus namespace (Service Bus topics and Notification
//! Hubs both sign requests with one): a secret that never prints.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct SasKey(String);

impl SasKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for signing; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SasKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SasKey(***)")
    }
}

impl fmt::Display for SasKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
