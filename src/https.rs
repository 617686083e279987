//! How the API clients (`force`, `rebuild`, `sendchange`, `status`,
//! `login`, `apply`) trust a master's HTTPS certificate: a CA file or a
//! pinned fingerprint, as `bbc worker` trusts the worker port
//! (`bbc_runtime::tls`), else the system's roots.

use std::error::Error as _;

use bbc_runtime::tls::{self, Trust};

use crate::command_error::CommandError;

/// `--ca` / `--fingerprint`, shared by every command that calls the API.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TrustOpts {
    /// Trust the master's HTTPS certificate if it chains to a CA in this
    /// PEM file (or is the self-signed certificate in it); default $BBC_CA
    #[arg(long, value_name = "FILE", conflicts_with = "fingerprint")]
    pub ca: Option<String>,
    /// Trust the master's HTTPS certificate with this SHA-256 fingerprint
    /// (as `bbc cert` prints it), whatever it names
    #[arg(long, value_name = "SHA256")]
    pub fingerprint: Option<String>,
}

impl TrustOpts {
    /// What the options (else `$BBC_CA`) ask for; `None`: the system's roots.
    ///
    /// `$BBC_CA` takes either form, so that one variable set once serves
    /// every command: a fingerprint when it reads as one (`sha256:…`, 64
    /// hex digits) and names no file, else a CA file.
    pub fn trust(&self) -> Result<Option<Trust>, CommandError> {
        let usage = CommandError::Usage;
        if let Some(fp) = &self.fingerprint {
            return Ok(Some(Trust::Fingerprint(
                tls::parse_fingerprint(fp).map_err(|e| usage(format!("--fingerprint: {e}")))?,
            )));
        }
        if let Some(ca) = &self.ca {
            return Ok(Some(Trust::Ca(ca.into())));
        }
        match std::env::var("BBC_CA") {
            Ok(v) if !v.trim().is_empty() => {
                let v = v.trim();
                if !std::path::Path::new(v).exists() {
                    if let Ok(sha) = tls::parse_fingerprint(v) {
                        return Ok(Some(Trust::Fingerprint(sha)));
                    }
                }
                Ok(Some(Trust::Ca(v.into())))
            }
            _ => Ok(None),
        }
    }

    /// A client builder trusting what the options say.
    pub fn builder(&self) -> Result<reqwest::ClientBuilder, CommandError> {
        let b = reqwest::Client::builder();
        Ok(match self.trust()? {
            None => b,
            Some(t) => {
                let config = tls::client_config(&t).map_err(|e| {
                    CommandError::Usage(match &t {
                        Trust::Ca(_) => format!("--ca (or $BBC_CA): {e}"),
                        Trust::Fingerprint(_) => e,
                    })
                })?;
                b.use_preconfigured_tls((*config).clone())
            }
        })
    }

    pub fn client(&self) -> Result<reqwest::Client, CommandError> {
        self.builder()?
            .build()
            .map_err(|e| CommandError::Usage(format!("cannot make an HTTP client: {e}")))
    }
}

/// "cannot reach the master at URL: …", with every cause (reqwest's own
/// message hides the TLS one) and, when the certificate was the
/// problem, the fix.
pub fn unreachable(base: &str, e: &reqwest::Error) -> CommandError {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    if text.contains("certificate") {
        text.push_str(
            "\n  the master's HTTPS certificate is not one this client trusts: \
             pass --ca FILE (the master's certificate or its CA, PEM) or \
             --fingerprint SHA256 (as `bbc cert` printed it), or set BBC_CA to either",
        );
    }
    CommandError::Usage(format!("cannot reach the master at {base}: {text}"))
}
