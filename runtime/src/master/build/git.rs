//! A git step: the script that checks the source out on the worker (with
//! the worker's git), and the revision it reports.

use bbc_graph::eval::render;
use bbc_graph::{BuildResult, GitMethod, GitMode, Step, Text};

use super::{Ctx, Outcome};
use crate::protocol::WireCommand;

impl Ctx {
    /// Checks the source out, then sets `got_revision` to the commit the
    /// script reports.
    pub(super) async fn git(
        &mut self,
        index: u32,
        step: &Step,
        repo: &Text,
        branch: Option<&Text>,
        mode: GitMode,
        method: GitMethod,
    ) -> Outcome {
        let repo = render(repo, &self.props);
        let branch = branch
            .map(|b| render(b, &self.props))
            .or_else(|| self.prop("branch"))
            .filter(|b| !b.is_empty());
        let revision = self.prop("revision").filter(|r| !r.is_empty());
        let wd = self.workdir(step);
        let script = git_script(
            &repo,
            branch.as_deref(),
            revision.as_deref(),
            &wd,
            mode,
            method,
        );
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
                self.set_prop("got_revision", rev.trim().to_string()).await;
            }
        }
        out
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The shell script a git step runs in the builder directory with the
/// worker's git. Its last output line is `got_revision=SHA`.
pub fn git_script(
    repo: &str,
    branch: Option<&str>,
    revision: Option<&str>,
    workdir: &str,
    mode: GitMode,
    method: GitMethod,
) -> String {
    let r = sh_quote(repo);
    let wd = sh_quote(workdir);
    let fetch_ref = sh_quote(branch.unwrap_or("HEAD"));
    let target = match revision {
        Some(rev) => sh_quote(rev),
        None => "FETCH_HEAD".to_string(),
    };
    let mut s = String::from("set -e\n");
    let update = |s: &mut String, dir: &str| {
        s.push_str(&format!(
            "if [ ! -d {dir}/.git ]; then rm -rf {dir}; git init -q {dir}; fi\n\
             cd {dir}\n\
             git fetch -q --tags {r} {fetch_ref}\n\
             git checkout -q -f {target}\n"
        ));
    };
    match (mode, method) {
        (GitMode::Incremental, _) => update(&mut s, &wd),
        (GitMode::Full, GitMethod::Clobber) => {
            s.push_str(&format!("rm -rf {wd}\n"));
            update(&mut s, &wd);
        }
        (GitMode::Full, GitMethod::Fresh) => {
            update(&mut s, &wd);
            s.push_str("git clean -q -f -f -d -x\n");
        }
        (GitMode::Full, GitMethod::Clean) => {
            update(&mut s, &wd);
            s.push_str("git clean -q -f -f -d\n");
        }
        (GitMode::Full, GitMethod::Copy) => {
            update(&mut s, "source");
            s.push_str(&format!("cd ..\nrm -rf {wd}\ncp -R source {wd}\ncd {wd}\n"));
        }
    }
    s.push_str("echo \"got_revision=$(git rev-parse HEAD)\"\n");
    s
}
