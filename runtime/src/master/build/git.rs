//! A git step: the script that checks the source out on the worker (with
//! the worker's git), and the revision it reports.

use bbc_graph::eval::render;
use bbc_graph::{BuildResult, GitMethod, GitMode, Step, StepKind};

use super::{Ctx, Outcome};
use crate::protocol::WireCommand;

impl Ctx {
    /// Checks the source out (with `codebase`, that codebase's source
    /// stamp), then sets `got_revision` (and `got_revision.CODEBASE`) to
    /// the commit the script reports.
    pub(super) async fn git(&mut self, index: u32, step: &Step) -> Outcome {
        let StepKind::Git {
            repo,
            branch,
            mode,
            method,
            shallow,
            submodules,
            retry,
            retry_delay_ms,
            ssh_key,
            ssh_known_hosts,
            codebase,
        } = &step.kind
        else {
            return Outcome::of(BuildResult::Exception, "not a git step");
        };
        let mut repo = render(repo, &self.props);
        let mut branch = branch.as_ref().map(|b| render(b, &self.props));
        let revision = match codebase {
            // The codebase's stamp wins over what the step says; a set
            // without one (forced, a scheduler not naming it) leaves the
            // step's `repo`/`branch` at the branch's head.
            Some(cb) => match self.sources.iter().find(|s| s.codebase == *cb) {
                Some(stamp) => {
                    if !stamp.repository.is_empty() {
                        repo = stamp.repository.clone();
                    }
                    if !stamp.branch.is_empty() {
                        branch = Some(stamp.branch.clone());
                    }
                    Some(stamp.revision.clone())
                }
                None => None,
            },
            None => {
                if branch.is_none() {
                    branch = self.prop("branch");
                }
                self.prop("revision")
            }
        };
        let branch = branch.filter(|b| !b.is_empty());
        let revision = revision.filter(|r| !r.is_empty());
        let wd = self.workdir(step);
        let script = git_script(&GitScript {
            repo: &repo,
            branch: branch.as_deref(),
            revision: revision.as_deref(),
            workdir: &wd,
            mode: *mode,
            method: *method,
            shallow: *shallow,
            submodules: *submodules,
            retry: *retry,
            retry_delay_ms: retry_delay_ms.unwrap_or(DEFAULT_RETRY_DELAY_MS),
            ssh_key: ssh_key.is_some(),
            ssh_known_hosts: ssh_known_hosts.as_deref(),
        });
        // The key travels as a secret variable of the step's environment
        // (resolved now, sent only where secrets may go, redacted), never
        // in the script the log shows.
        let keyed;
        let step = match ssh_key {
            Some(k) => {
                let mut s = step.clone();
                s.env_secrets.insert(SSH_KEY_VAR.to_string(), k.clone());
                keyed = s;
                &keyed
            }
            None => step,
        };
        let mut out = self
            .command(
                index,
                step,
                WireCommand::Shell(script),
                ".".into(),
                None,
                true,
            )
            .await;
        if out.result == BuildResult::Success {
            let text = out.captured.take().unwrap_or_default();
            // The script's last line is the checked-out commit.
            if let Some(rev) = String::from_utf8_lossy(&text)
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("got_revision="))
            {
                let rev = rev.trim().to_string();
                // `got_revision` is the default codebase's (the first one
                // of the set, or a step naming none); each codebase's is
                // also `got_revision.CODEBASE` (Buildbot's dict property,
                // flattened: bbc properties are scalars).
                let first = self.sources.first().map(|s| s.codebase.as_str());
                match codebase {
                    Some(cb) => {
                        let default = first == Some(cb.as_str());
                        self.set_prop(&format!("got_revision.{cb}"), rev.clone())
                            .await;
                        if default {
                            self.set_prop("got_revision", rev).await;
                        }
                    }
                    None => self.set_prop("got_revision", rev).await,
                }
            }
        }
        out
    }
}

/// The variable the ssh private key reaches the script in; the script
/// writes it to a file only its user can read and unsets it.
pub const SSH_KEY_VAR: &str = "BBC_GIT_SSH_KEY";

/// The pause before a fetch is tried again when `retry-delay` is not given.
pub const DEFAULT_RETRY_DELAY_MS: u64 = 10_000;

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// What a git step's script does.
#[derive(Debug, Clone, Copy)]
pub struct GitScript<'a> {
    pub repo: &'a str,
    pub branch: Option<&'a str>,
    pub revision: Option<&'a str>,
    pub workdir: &'a str,
    pub mode: GitMode,
    pub method: GitMethod,
    /// `git fetch --depth N`.
    pub shallow: Option<u32>,
    pub submodules: bool,
    /// Times a failed fetch is tried again.
    pub retry: u32,
    pub retry_delay_ms: u64,
    /// Whether the environment holds the key in [`SSH_KEY_VAR`].
    pub ssh_key: bool,
    pub ssh_known_hosts: Option<&'a str>,
}

/// The shell script a git step runs in the builder directory with the
/// worker's git. Its last output line is `got_revision=SHA`.
pub fn git_script(g: &GitScript) -> String {
    let r = sh_quote(g.repo);
    let wd = sh_quote(g.workdir);
    let fetch_ref = sh_quote(g.branch.unwrap_or("HEAD"));
    let target = match g.revision {
        Some(rev) => sh_quote(rev),
        None => "FETCH_HEAD".to_string(),
    };
    let mut s = String::from("set -e\n");
    if g.ssh_key || g.ssh_known_hosts.is_some() {
        // A directory only this user can enter, removed when the script
        // ends, also on failure or when stopped by a signal.
        s.push_str(
            "bbc_ssh=$(mktemp -d)\n\
             trap 'rm -rf \"$bbc_ssh\"' EXIT\n\
             trap 'exit 129' HUP\ntrap 'exit 130' INT\ntrap 'exit 143' TERM\n",
        );
        let mut ssh = String::from("ssh -o BatchMode=yes");
        if g.ssh_key {
            s.push_str(&format!(
                "(umask 077; printf '%s\\n' \"${SSH_KEY_VAR}\" > \"$bbc_ssh/key\")\n\
                 unset {SSH_KEY_VAR}\n"
            ));
            ssh.push_str(" -i \\\"$bbc_ssh/key\\\" -o IdentitiesOnly=yes");
        }
        if let Some(hosts) = g.ssh_known_hosts {
            s.push_str(&format!(
                "printf '%s\\n' {} > \"$bbc_ssh/known_hosts\"\n",
                sh_quote(hosts)
            ));
            ssh.push_str(
                " -o UserKnownHostsFile=\\\"$bbc_ssh/known_hosts\\\" -o StrictHostKeyChecking=yes",
            );
        }
        s.push_str(&format!("export GIT_SSH_COMMAND=\"{ssh}\"\n"));
    }
    // `try CMD…`: CMD, run again up to `retry` times after a failure.
    let try_ = if g.retry > 0 {
        let delay = g.retry_delay_ms.div_ceil(1000);
        let tries = g.retry + 1;
        s.push_str(&format!(
            "bbc_try() {{\n\
             \x20 bbc_n=1\n\
             \x20 until \"$@\"; do\n\
             \x20   if [ \"$bbc_n\" -ge {tries} ]; then return 1; fi\n\
             \x20   bbc_n=$((bbc_n + 1))\n\
             \x20   echo \"bbc: $1 $2 failed; try $bbc_n of {tries} in {delay}s\" >&2\n\
             \x20   sleep {delay}\n\
             \x20 done\n\
             }}\n"
        ));
        "bbc_try "
    } else {
        ""
    };
    let depth = g
        .shallow
        .map(|n| format!(" --depth {n}"))
        .unwrap_or_default();
    // A shallow fetch brings no tags (each would bring its own history).
    let tags = if g.shallow.is_some() { "" } else { " --tags" };
    let update = |s: &mut String, dir: &str| {
        s.push_str(&format!(
            "if [ ! -d {dir}/.git ]; then rm -rf {dir}; git init -q {dir}; fi\n\
             cd {dir}\n\
             {try_}git fetch -q{tags}{depth} {r} {fetch_ref}\n"
        ));
        if let (Some(_), Some(rev)) = (g.shallow, g.revision) {
            // The branch's last commits may not reach the revision: then
            // fetch the revision itself, as shallow.
            let rev = sh_quote(rev);
            s.push_str(&format!(
                "if ! git cat-file -e {rev}^{{commit}} 2>/dev/null; then\n\
                 \x20 {try_}git fetch -q{depth} {r} {rev}\n\
                 fi\n"
            ));
        }
        s.push_str(&format!("git checkout -q -f {target}\n"));
        if g.submodules {
            s.push_str(&format!(
                "git submodule --quiet sync --recursive\n\
                 {try_}git submodule --quiet update --init --recursive --force{depth}\n"
            ));
        }
    };
    let clean = |s: &mut String, flags: &str| {
        s.push_str(&format!("git clean -q {flags}\n"));
        if g.submodules {
            s.push_str(&format!(
                "git submodule --quiet foreach --recursive git clean -q {flags}\n"
            ));
        }
    };
    match (g.mode, g.method) {
        (GitMode::Incremental, _) => update(&mut s, &wd),
        (GitMode::Full, GitMethod::Clobber) => {
            s.push_str(&format!("rm -rf {wd}\n"));
            update(&mut s, &wd);
        }
        (GitMode::Full, GitMethod::Fresh) => {
            update(&mut s, &wd);
            clean(&mut s, "-f -f -d -x");
        }
        (GitMode::Full, GitMethod::Clean) => {
            update(&mut s, &wd);
            clean(&mut s, "-f -f -d");
        }
        (GitMode::Full, GitMethod::Copy) => {
            update(&mut s, "source");
            s.push_str(&format!("cd ..\nrm -rf {wd}\ncp -R source {wd}\ncd {wd}\n"));
        }
    }
    s.push_str("echo \"got_revision=$(git rev-parse HEAD)\"\n");
    s
}
