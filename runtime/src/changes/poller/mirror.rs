//! The poller's bare mirror and the git commands run on it: create, fetch,
//! read the heads, list and describe new commits. Every command is a child
//! process awaited by tokio, with a timeout and no terminal prompt.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::store::NewChange;

/// At most this many changes per branch and poll: a new branch or a
/// force-push onto unrelated history must not flood the schedulers.
pub const MAX_CHANGES_PER_BRANCH: usize = 100;

/// What the configuration says about one poller.
#[derive(Debug, Clone, PartialEq)]
pub struct PollerConfig {
    pub repo: String,
    pub branches: Vec<String>,
    pub poll_interval_ms: u64,
    pub only_tags: bool,
    /// The codebase its changes carry (`""`: none).
    pub codebase: String,
}

/// A fetch slower than this is abandoned (and counts as a failed poll).
const FETCH_TIMEOUT: Duration = Duration::from_secs(600);
/// Local git commands on the mirror.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs git on the mirror and returns its stdout, or git's last lines of
/// stderr as the error.
pub(super) async fn git(
    git_dir: Option<&Path>,
    args: &[&str],
    stdin: Option<String>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("git");
    if let Some(d) = git_dir {
        cmd.arg("--git-dir").arg(d);
    }
    cmd.args(args)
        // Never wait for a password nobody will type.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
        // ssh would otherwise ask for a passphrase or host confirmation.
        cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    let what = args.first().copied().unwrap_or("git");
    let run = async {
        let mut child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // rev-list reads all its input before writing anything, so
            // writing first cannot deadlock.
            pipe.write_all(input.as_bytes())
                .await
                .map_err(|e| format!("git {what}: writing its input: {e}"))?;
            drop(pipe);
        }
        child
            .wait_with_output()
            .await
            .map_err(|e| format!("git {what}: {e}"))
    };
    let out = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("git {what} took longer than {}s", timeout.as_secs()))??;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
        Err(format!("git {what} failed ({}): {tail}", out.status))
    }
}

pub(super) async fn ensure_mirror(mirror: &Path) -> Result<(), String> {
    if mirror.join("HEAD").is_file() {
        return Ok(());
    }
    tokio::fs::create_dir_all(mirror)
        .await
        .map_err(|e| format!("cannot create {}: {e}", mirror.display()))?;
    let path = mirror.to_string_lossy().into_owned();
    // Re-running init on a half-made directory is safe.
    git(
        None,
        &["init", "--bare", "--quiet", &path],
        None,
        LOCAL_TIMEOUT,
    )
    .await?;
    Ok(())
}

/// Branch (or tag) name → commit, as the mirror has them now.
pub(super) async fn read_heads(
    mirror: &Path,
    only_tags: bool,
) -> Result<BTreeMap<String, String>, String> {
    let prefix = if only_tags {
        "refs/tags/"
    } else {
        "refs/heads/"
    };
    let out = git(
        Some(mirror),
        &[
            "for-each-ref",
            "--format=%(objectname) %(*objectname) %(refname)",
            prefix,
        ],
        None,
        LOCAL_TIMEOUT,
    )
    .await?;
    let mut heads = BTreeMap::new();
    for line in String::from_utf8_lossy(&out).lines() {
        // "<object> <peeled or empty> <refname>": an annotated tag names
        // the commit it points to as its peeled object.
        let mut it = line.splitn(3, ' ');
        let (Some(obj), Some(peeled), Some(refname)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Some(short) = refname.strip_prefix(prefix) else {
            continue;
        };
        let sha = if peeled.is_empty() { obj } else { peeled };
        heads.insert(short.to_string(), sha.to_string());
    }
    Ok(heads)
}

pub(super) async fn fetch(mirror: &Path, cfg: &PollerConfig) -> Result<(), String> {
    let refspec = if cfg.only_tags {
        "+refs/tags/*:refs/tags/*"
    } else {
        "+refs/heads/*:refs/heads/*"
    };
    git(
        Some(mirror),
        &[
            "fetch",
            "--quiet",
            "--prune",
            "--no-tags",
            "--no-write-fetch-head",
            "--end-of-options",
            &cfg.repo,
            refspec,
        ],
        None,
        FETCH_TIMEOUT,
    )
    .await
    .map(|_| ())
}

pub(super) async fn commit_exists(mirror: &Path, sha: &str) -> bool {
    let spec = format!("{sha}^{{commit}}");
    git(
        Some(mirror),
        &["cat-file", "-e", &spec],
        None,
        LOCAL_TIMEOUT,
    )
    .await
    .is_ok()
}

/// Commits to report for a branch now at `new`, oldest first, at most
/// [`MAX_CHANGES_PER_BRANCH`] (the newest ones). `exclude` are commits
/// already reported: the branch's old head when it still exists,
/// otherwise every head known before this poll.
pub(super) async fn new_commits(
    mirror: &Path,
    new: &str,
    exclude: &[String],
    branch: &str,
) -> Result<Vec<String>, String> {
    let mut input = format!("{new}\n");
    for e in exclude {
        if e != new {
            input.push('^');
            input.push_str(e);
            input.push('\n');
        }
    }
    let max = format!("--max-count={}", MAX_CHANGES_PER_BRANCH + 1);
    // --topo-order puts parents before children once reversed, so a head
    // advanced to any listed commit never skips an unlisted ancestor.
    let out = git(
        Some(mirror),
        &[
            "rev-list",
            "--reverse",
            "--topo-order",
            &max,
            "--ignore-missing",
            "--stdin",
        ],
        Some(input),
        LOCAL_TIMEOUT,
    )
    .await?;
    let mut shas: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if shas.len() > MAX_CHANGES_PER_BRANCH {
        let dropped = shas.len() - MAX_CHANGES_PER_BRANCH;
        shas.drain(..dropped);
        tracing::info!(
            branch,
            "more than {MAX_CHANGES_PER_BRANCH} new commits; only the newest {MAX_CHANGES_PER_BRANCH} become changes"
        );
    }
    Ok(shas)
}

/// Author, committer, message, time and files of one commit.
pub(super) async fn describe_commit(mirror: &Path, sha: &str) -> Result<NewChange, String> {
    let spec = format!("{sha}^{{commit}}");
    let out = git(
        Some(mirror),
        &[
            "show",
            "-s",
            "--format=%an%x00%ae%x00%cn%x00%ce%x00%ct%x00%B",
            &spec,
            "--",
        ],
        None,
        LOCAL_TIMEOUT,
    )
    .await?;
    let text = String::from_utf8_lossy(&out);
    let parts: Vec<&str> = text.splitn(6, '\0').collect();
    let get = |i: usize| parts.get(i).copied().unwrap_or("");
    let person = |n: &str, e: &str| {
        if e.is_empty() {
            n.to_string()
        } else {
            format!("{n} <{e}>")
        }
    };
    let when = get(4).trim().parse::<i64>().map(|s| s * 1000).unwrap_or(0);
    let files_out = git(
        Some(mirror),
        &[
            "diff-tree",
            "--no-commit-id",
            "--name-only",
            "-r",
            "-m",
            "--root",
            "-z",
            sha,
        ],
        None,
        LOCAL_TIMEOUT,
    )
    .await?;
    let mut files: Vec<String> = Vec::new();
    for f in String::from_utf8_lossy(&files_out).split('\0') {
        // -m lists a merge's files once per parent.
        if !f.is_empty() && !files.iter().any(|x| x == f) {
            files.push(f.to_string());
        }
    }
    Ok(NewChange {
        author: person(get(0), get(1)),
        committer: person(get(2), get(3)),
        when,
        comments: get(5).trim_end().to_string(),
        files,
        revision: sha.to_string(),
        ..NewChange::default()
    })
}
