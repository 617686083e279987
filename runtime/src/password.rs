//! Password hashes: argon2id PHC strings (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
//!
//! A user's `password=` secret holds one of these, never a password:
//! `bbc passwd` makes it ([`hash`]), the master checks each one when it
//! resolves secrets at start and apply ([`check_phc`]) and
//! `POST /api/v1/login` verifies against it ([`verify`]). Hashing and
//! verifying take tens of milliseconds of CPU and memory on purpose, so
//! the master calls them on `spawn_blocking`, never on an async thread.

use std::sync::OnceLock;

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

/// OWASP's recommended argon2id parameters (Password Storage Cheat Sheet):
/// 19 MiB of memory, 2 passes, 1 lane.
pub const M_COST_KIB: u32 = 19_456;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;

/// Passwords longer than this are refused before hashing: nobody types
/// one, and it bounds the work an anonymous request can ask for.
pub const MAX_LEN: usize = 1024;

fn hasher() -> Result<Argon2<'static>, String> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|e| e.to_string())?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The argon2id PHC string of `password`, with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    if password.len() > MAX_LEN {
        return Err(format!("a password is at most {MAX_LEN} bytes"));
    }
    use ring::rand::SecureRandom;
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the system's random generator failed".to_string())?;
    let h = hasher()?
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| format!("cannot hash the password: {e}"))?;
    Ok(h.to_string())
}

/// Whether `phc` is an argon2id PHC string this master can verify
/// against; the error says what is wrong, never echoing the value.
pub fn check_phc(phc: &str) -> Result<(), String> {
    let h = PasswordHash::new(phc.trim())
        .map_err(|_| "it is not a PHC string ($argon2id$v=19$m=…,t=…,p=…$SALT$HASH)".to_string())?;
    if h.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "its algorithm is `{}`, not argon2id",
            h.algorithm.as_str()
        ));
    }
    Params::try_from(&h).map_err(|e| format!("its parameters are not usable: {e}"))?;
    if h.salt.is_none() || h.hash.is_none() {
        return Err("it has no salt or no hash".into());
    }
    Ok(())
}

/// Whether `password` matches the PHC string `phc`. Blocking (tens of ms).
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_LEN {
        return false;
    }
    let Ok(h) = PasswordHash::new(phc.trim()) else {
        return false;
    };
    if h.algorithm.as_str() != "argon2id" {
        return false;
    }
    Argon2::default()
        .verify_password(password.as_bytes(), &h)
        .is_ok()
}

/// A hash of a password nobody knows, with the parameters `bbc passwd`
/// uses: verified against when the user name is unknown (or has no
/// password), so that answer costs what a wrong password costs and the
/// time taken does not tell which names exist.
pub fn dummy() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 32];
        let _ = ring::rand::SystemRandom::new().fill(&mut b);
        let unguessable: String = b.iter().map(|x| format!("{x:02x}")).collect();
        // Hashing cannot fail for these parameters; if it ever did, a
        // malformed string makes `verify` fail fast, which only costs
        // the timing uniformity, never a login.
        hash(&unguessable).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(check_phc(&h).is_ok());
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horse ", &h));
        assert!(!verify("", &h));
        // Salted: the same password hashes differently each time.
        let again = hash("correct horse").unwrap();
        assert_ne!(h, again);
        assert!(verify("correct horse", &again));
        assert!(!verify(&"x".repeat(MAX_LEN + 1), &h));
        assert!(hash(&"x".repeat(MAX_LEN + 1)).is_err());
    }

    #[test]
    fn only_argon2id_phc_strings_pass() {
        for bad in [
            "",
            "hunter2",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            "$2b$12$abcdefghijklmnopqrstuu3ZsJ9p0k6wZl6yF1d0v4aC0b2pY7Q1a",
        ] {
            let e = check_phc(bad).unwrap_err();
            // The message never repeats the value (it is a secret).
            assert!(bad.len() < 12 || !e.contains(bad), "{e}");
            assert!(!verify("hunter2", bad));
        }
        // A valid argon2i string (not id) is refused with the reason.
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password_with_salt(b"pw", b"saltsaltsaltsalt")
        .unwrap()
        .to_string();
        assert!(check_phc(&argon2i).unwrap_err().contains("argon2i"));
        assert!(!verify("pw", &argon2i));
        assert!(check_phc(dummy()).is_ok());
    }
}
