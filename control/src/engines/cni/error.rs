//! CNI errors: a code from the specification, a message a user can act on, details.

use serde::Serialize;

/// The error codes of the CNI specification that vswitch-cni returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The configuration's `cniVersion` is not one this plugin speaks.
    IncompatibleVersion = 1,
    /// The container is not attached (CHECK).
    UnknownContainer = 3,
    /// A required environment variable is missing or malformed.
    InvalidEnv = 4,
    /// Standard input could not be read.
    Io = 5,
    /// The configuration is not JSON of the expected shape.
    Decode = 6,
    /// The configuration is well-formed but asks for something impossible.
    InvalidConfig = 7,
    /// The daemon could not be reached: retry later.
    TryAgainLater = 11,
    /// STATUS: the plugin cannot serve ADD now (the daemon is not running).
    NotAvailable = 50,
}

/// One CNI error, printed as the specification's error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The JSON object the runtime reads on standard output.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_value(Wire {
            cni_version,
            code: self.code as u32,
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or(serde_json::Value::Null)
    }
}

/// The daemon could not be reached at `socket`.
pub fn daemon_down(socket: &std::path::Path, e: impl std::fmt::Display) -> CniError {
    CniError::new(Code::TryAgainLater, crate::engines::daemon_down(socket))
        .with_details(e.to_string())
}
