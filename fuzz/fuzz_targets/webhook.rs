//! The webhook payload parsers (GitHub, Gitea, GitLab, Bitbucket Cloud
//! and Server, generic JSON) on arbitrary bodies: the first byte picks the
//! forge (its low 3 bits) and event (the rest), the remaining bytes are
//! the body, read as `POST /change_hook/{name}` reads it. A malformed
//! delivery must be an error (a 400), never a panic.
#![no_main]

use bbc_runtime::changes::webhook::{
    bitbucket_cloud, bitbucket_server, gitea, github, gitlab, json_changes,
};
use libfuzzer_sys::fuzz_target;

const GITHUB: &[&str] = &["push", "pull_request", "ping", "create"];
const GITEA: &[&str] = &[
    "push",
    "pull_request",
    "pull_request_sync",
    "pull_request_label",
    "create",
];
const GITLAB: &[&str] = &[
    "Push Hook",
    "Tag Push Hook",
    "Merge Request Hook",
    "Note Hook",
];
const BITBUCKET_CLOUD: &[&str] = &[
    "repo:push",
    "pullrequest:created",
    "pullrequest:updated",
    "pullrequest:fulfilled",
];
const BITBUCKET_SERVER: &[&str] = &[
    "repo:refs_changed",
    "pr:opened",
    "pr:from_ref_updated",
    "diagnostics:ping",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let ev = |events: &[&'static str]| events[(pick >> 3) as usize % events.len()];
    let _ = match pick % 8 {
        0 => github(ev(GITHUB), &v),
        1 => gitea(ev(GITEA), &v),
        2 => gitlab(ev(GITLAB), &v),
        4 => bitbucket_cloud(ev(BITBUCKET_CLOUD), &v),
        5 => bitbucket_server(ev(BITBUCKET_SERVER), &v),
        _ => json_changes(&v),
    };
});
