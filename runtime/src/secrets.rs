//! Secrets: resolved only by the running master, from a secrets directory
//! (one file per secret, as Docker and Kubernetes mount them), from the
//! environment (`BBC_SECRET_<NAME>`, upper-cased, `-` and `.` as `_`), or
//! from the config's `secrets-command` (a password manager, a vault CLI).
//! Never written to the graph, the store or a log: [`Redactor`] masks every
//! secret value in log output.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bbc_graph::{Credential, Graph};

/// The secret that authorises `POST /api/v1/config` (replacing the
/// running configuration). Optional: without it the endpoint refuses.
pub const ADMIN_TOKEN: &str = "bbc-admin-token";

/// The secret that authorises the API's actions on builds (force, cancel,
/// submit a change, poll now). Optional: without it they are open to
/// whoever reaches the HTTP address, as in Buildbot's default.
pub const CONTROL_TOKEN: &str = "bbc-control-token";

#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
    /// The admin token, when one is configured (not empty).
    admin_token: Option<String>,
    /// The control token, when one is configured (not empty).
    control_token: Option<String>,
    /// Built once: compiling the pattern per log would cost more than a
    /// short log.
    redactor: Option<Redactor>,
}

/// Every secret name a graph refers to.
pub fn names(g: &Graph) -> BTreeSet<String> {
    bbc_graph::credentials::secret_names(g)
}

/// One secret from a file in `dir` or from the environment. Public so
/// that `bbc up` reads its local workers' passwords as the master will.
pub fn lookup(name: &str, dir: Option<&Path>) -> Option<String> {
    let from_file = dir.and_then(|d| {
        // Secret names are not paths.
        if name.contains('/') || name.contains("..") {
            return None;
        }
        std::fs::read_to_string(d.join(name)).ok()
    });
    from_file
        .map(|v| v.trim_end_matches(['\n', '\r']).to_string())
        .or_else(|| std::env::var(env_var_name(name)).ok())
}

/// How long `secrets-command` may take for one secret.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One secret from `dir`, the environment, or else `command` (`{name}` in
/// an argument replaced by the secret's name; also in `BBC_SECRET_NAME`).
/// `Err` says why the command gave nothing. Blocking.
pub fn lookup_with(name: &str, dir: Option<&Path>, command: &[String]) -> Result<String, String> {
    if let Some(v) = lookup(name, dir) {
        return Ok(v);
    }
    let Some((prog, args)) = command.split_first() else {
        return Err(String::new());
    };
    let args: Vec<String> = args.iter().map(|a| a.replace("{name}", name)).collect();
    let prog = prog.replace("{name}", name);
    let mut child = std::process::Command::new(&prog)
        .args(&args)
        .env("BBC_SECRET_NAME", name)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("secrets-command `{prog}` cannot start: {e}"))?;
    // Read on threads so a chatty command cannot block on a full pipe.
    let read = |p: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = std::io::Read::read_to_end(&mut p, &mut buf);
            }
            buf
        })
    };
    let out = read(child.stdout.take().map(|p| Box::new(p) as _));
    let err = read(child.stderr.take().map(|p| Box::new(p) as _));
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() < COMMAND_TIMEOUT => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "secrets-command `{prog}` gave no answer in {} s",
                    COMMAND_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("secrets-command `{prog}`: {e}")),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        // Its first line of errors only: what a password manager says
        // ("not in the password store"), never what it printed on stdout.
        let first = String::from_utf8_lossy(&err);
        let first: String = first
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        return Err(format!(
            "secrets-command `{prog}` failed ({status}): {first}"
        ));
    }
    let v = String::from_utf8(out)
        .map_err(|_| format!("secrets-command `{prog}` printed a value that is not UTF-8"))?;
    let v = v.trim_end_matches(['\n', '\r']).to_string();
    if v.is_empty() {
        return Err(format!("secrets-command `{prog}` printed nothing"));
    }
    Ok(v)
}

pub fn env_var_name(secret: &str) -> String {
    let mut s = String::from("BBC_SECRET_");
    s.extend(secret.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    s
}

/// Every user's `password=` secret must hold an argon2id PHC string: a
/// master refuses to start (or an apply to proceed) otherwise, rather
/// than run with a login nobody can pass — or one holding a password in
/// clear. The message names the user and the secret, never the value.
fn check_password_hashes(g: &Graph, values: &BTreeMap<String, String>) -> Result<(), String> {
    let mut bad = Vec::new();
    for u in &g.master.access.users {
        let (value, name) = match &u.password {
            Some(Credential::Secret { secret }) => {
                (values.get(secret).map(String::as_str), secret.as_str())
            }
            Some(Credential::Plain(p)) => (Some(p.as_str()), "(plain text in the graph)"),
            None => continue,
        };
        if let Err(why) = crate::password::check_phc(value.unwrap_or_default()) {
            bad.push(format!(
                "  user `{}`: the secret `{name}` is not an argon2id password hash: {why}",
                u.name
            ));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} user password(s) are unusable (store what `bbc passwd` prints, not a password):\n{}",
        bad.len(),
        bad.join("\n")
    ))
}

impl Secrets {
    /// Resolves every secret the graph names; the error lists each missing
    /// one and where it was looked for.
    ///
    /// The admin token ([`ADMIN_TOKEN`]) is looked up the same way but is
    /// optional; when present it is redacted like every other secret.
    /// Blocking: it reads files.
    pub fn resolve(g: &Graph, dir: Option<&Path>) -> Result<Secrets, String> {
        let mut values = BTreeMap::new();
        let mut missing = Vec::new();
        let command = &g.master.secrets_command;
        for name in names(g) {
            match lookup_with(&name, dir, command) {
                Ok(v) => {
                    values.insert(name, v);
                }
                Err(why) => missing.push((name, why)),
            }
        }
        if missing.is_empty() {
            check_password_hashes(g, &values)?;
            let admin_token = lookup(ADMIN_TOKEN, dir).filter(|t| !t.is_empty());
            if let Some(t) = &admin_token {
                values.insert(ADMIN_TOKEN.to_string(), t.clone());
            }
            let control_token = lookup(CONTROL_TOKEN, dir).filter(|t| !t.is_empty());
            if let Some(t) = &control_token {
                values.insert(CONTROL_TOKEN.to_string(), t.clone());
            }
            let redactor = Some(Redactor::new(values.values().cloned()));
            return Ok(Secrets {
                values,
                admin_token,
                control_token,
                redactor,
            });
        }
        let where_ = match dir {
            Some(d) => format!("a file in {}, or", d.display()),
            None => "pass --secrets DIR (one file per secret), or set".to_string(),
        };
        let list: Vec<String> = missing
            .iter()
            .map(|(n, why)| {
                let why = if why.is_empty() {
                    String::new()
                } else {
                    format!("; {why}")
                };
                format!(
                    "  {n}: {where_} the environment variable {}{why}",
                    env_var_name(n)
                )
            })
            .collect();
        Err(format!(
            "{} secret(s) the config uses are missing:\n{}",
            missing.len(),
            list.join("\n")
        ))
    }

    /// The admin token, when configured.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// The control token, when configured.
    pub fn control_token(&self) -> Option<&str> {
        self.control_token.as_deref()
    }

    pub fn get<'a>(&'a self, c: &'a Credential) -> Option<&'a str> {
        match c {
            Credential::Secret { secret } => self.values.get(secret).map(String::as_str),
            Credential::Plain(p) => Some(p),
        }
    }

    /// A fresh redactor for one log (the compiled pattern is shared).
    pub fn redactor(&self) -> Redactor {
        match &self.redactor {
            Some(r) => Redactor {
                held: Vec::new(),
                ..r.clone()
            },
            None => Redactor::new(self.values.values().cloned()),
        }
    }

    /// `text` with every secret masked, in one piece: for values that are
    /// stored whole (a property set from a command's output).
    pub fn redact(&self, text: &str) -> String {
        let mut r = self.redactor();
        if r.is_empty() {
            return text.to_string();
        }
        let mut out = r.push(text.as_bytes());
        out.extend(r.finish());
        // Masks replace whole secrets (valid UTF-8 themselves), so only
        // a secret that is not UTF-8 could split a character here.
        String::from_utf8_lossy(&out).into_owned()
    }

    pub fn default_dir(state_dir: &Path) -> PathBuf {
        state_dir.join("secrets")
    }
}

/// Masks secret values in a byte stream that arrives in chunks, including a
/// value split across two chunks: a chunk's tail that could be the start of
/// a secret (and only that) is held back until the next one (or `finish`).
#[derive(Debug, Clone)]
pub struct Redactor {
    /// Every secret as a literal alternative, longest first; the regex
    /// crate searches them together (Aho-Corasick / SIMD prefilters), so
    /// redaction costs little per byte of log.
    re: Option<regex::bytes::Regex>,
    /// The secrets themselves, to tell whether the end of what arrived
    /// could be the start of one.
    secrets: Vec<Vec<u8>>,
    /// Which bytes start a secret: most positions are ruled out by one
    /// lookup.
    starts: [bool; 256],
    held: Vec<u8>,
}

const MASK: &[u8] = b"[secret]";

impl Redactor {
    pub fn new(values: impl IntoIterator<Item = String>) -> Redactor {
        // Very short values would mask ordinary text everywhere.
        let mut secrets: Vec<Vec<u8>> = values
            .into_iter()
            .filter(|v| v.len() >= 4)
            .map(String::into_bytes)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let mut starts = [false; 256];
        for v in &secrets {
            starts[usize::from(v[0])] = true;
        }
        let pattern = secrets
            .iter()
            .map(|s| regex::escape(&String::from_utf8_lossy(s)))
            .collect::<Vec<_>>()
            .join("|");
        // Escaped literals always compile; size limits are the only failure.
        let re = (!secrets.is_empty())
            .then(|| {
                regex::bytes::RegexBuilder::new(&pattern)
                    .unicode(false)
                    .size_limit(64 << 20)
                    .build()
                    .ok()
            })
            .flatten();
        Redactor {
            re,
            secrets,
            starts,
            held: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.re.is_none()
    }

    /// Feeds a chunk; returns what can be written now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.re.is_none() {
            return chunk.to_vec();
        }
        self.held.extend_from_slice(chunk);
        let (out, keep_from) = self.scan(false);
        self.held.drain(..keep_from);
        out
    }

    /// Flushes what was held back at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let (out, _) = self.scan(true);
        self.held.clear();
        out
    }

    /// Where the longest tail of `buf` that is a proper prefix of a secret
    /// starts (`buf.len()` when there is none). Only such a tail is held
    /// back: a quiet step's last line shows at once unless it ends in what
    /// could still become a secret.
    fn incomplete_from(&self, buf: &[u8]) -> usize {
        let longest = self.secrets.first().map_or(0, Vec::len);
        let first = buf.len().saturating_sub(longest.saturating_sub(1));
        for p in first..buf.len() {
            if !self.starts[usize::from(buf[p])] {
                continue;
            }
            let tail = &buf[p..];
            // Sorted longest first: stop at the first too short to extend.
            let could_grow = self
                .secrets
                .iter()
                .take_while(|s| s.len() > tail.len())
                .any(|s| s.starts_with(tail));
            if could_grow {
                return p;
            }
        }
        buf.len()
    }

    /// Masks every secret that starts where no longer secret could still
    /// be incomplete; returns the output and where the held bytes resume.
    fn scan(&self, last: bool) -> (Vec<u8>, usize) {
        let buf = &self.held;
        let Some(re) = &self.re else {
            return (buf.clone(), buf.len());
        };
        let safe_end = if last {
            buf.len()
        } else {
            self.incomplete_from(buf)
        };
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        for m in re.find_iter(buf) {
            // A match starting later might be the prefix of a longer secret
            // whose end has not arrived yet.
            if m.start() >= safe_end {
                break;
            }
            out.extend_from_slice(&buf[i..m.start()]);
            out.extend_from_slice(MASK);
            i = m.end();
        }
        let end = safe_end.max(i);
        out.extend_from_slice(&buf[i..end]);
        (out, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_across_chunks() {
        let mut r = Redactor::new([
            "hunter2pw".to_string(),
            "ab".to_string(),
            "hunter2pwlonger".to_string(),
            "a.b*c".to_string(),
        ]);
        let mut out = Vec::new();
        for chunk in [
            &b"pass=hun"[..],
            b"ter2pw ok ab ",
            b"hunter2",
            b"pwlon",
            b"ger a.b*c axbbc ",
            b"hunter2pw",
        ] {
            out.extend(r.push(chunk));
        }
        out.extend(r.finish());
        // The longer secret wins when it completes in a later chunk; regex
        // characters in a secret are literal.
        assert_eq!(
            String::from_utf8_lossy(&out),
            "pass=[secret] ok ab [secret] [secret] axbbc [secret]"
        );
    }

    /// A step that prints a line and then waits must show that line: only
    /// a tail that could still become a secret is held back.
    #[test]
    fn holds_back_only_what_could_become_a_secret() {
        let token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let mut r = Redactor::new([token.to_string(), "hunter2pw".to_string()]);
        assert_eq!(r.push(b"waiting for the lock\n"), b"waiting for the lock\n");
        // "hun" may be the start of a secret: held until more arrives.
        assert_eq!(r.push(b"user hun"), b"user ");
        assert_eq!(r.push(b"dred\n"), b"hundred\n");
        assert_eq!(r.push(b"t=0123"), b"t=");
        assert_eq!(r.push(&token.as_bytes()[4..]), b"[secret]");
        assert!(r.finish().is_empty());
    }

    #[test]
    fn no_secrets_passes_through() {
        let mut r = Redactor::new(Vec::new());
        assert_eq!(r.push(b"abc"), b"abc");
        assert!(r.finish().is_empty());
    }
}
