//! `bbc cert`: a self-signed certificate and key for the master's TLS
//! ports, and the fingerprint worker admins pin with
//! `bbc worker --master-fingerprint`. A fleet with its own CA gives the
//! master a certificate from it instead (docs/security.md).

use std::path::Path;

use bbc_runtime::tls;

use crate::command_error::CommandError;

pub fn cert(
    cert: &str,
    key: &str,
    names: &[String],
    days: i64,
    force: bool,
) -> Result<(), CommandError> {
    if days < 1 {
        return Err(CommandError::Usage(format!(
            "--days {days}: a certificate must be valid for at least a day"
        )));
    }
    let (cert_path, key_path) = (Path::new(cert), Path::new(key));
    if !force {
        for p in [cert_path, key_path] {
            if p.exists() {
                return Err(CommandError::Usage(format!(
                    "{} exists; remove it or pass --force to replace it",
                    p.display()
                )));
            }
        }
    }
    let names = if names.is_empty() {
        default_names()
    } else {
        names.to_vec()
    };
    let _ = std::fs::remove_file(cert_path);
    tls::ensure_self_signed(cert_path, key_path, &names, days).map_err(CommandError::Usage)?;
    let fp = tls::fingerprint_of_file(cert_path).map_err(CommandError::Usage)?;
    println!("wrote {cert} and {key} (for {})", names.join(", "));
    println!("fingerprint: {fp}");
    println!("workers connect with: bbc worker --master HOST:PORT --master-fingerprint {fp} …");
    Ok(())
}

/// Loopback under every name, and this host's name when it has one.
fn default_names() -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && h != "localhost" {
            names.push(h.to_string());
        }
    }
    names
}
