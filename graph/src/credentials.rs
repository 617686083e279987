//! Every credential a graph holds, visited in one place: the master
//! resolves them, `GET /api/v1/config` masks the plain ones, and a new
//! kind of entity with a credential is added here once.

use crate::{ChangeSourceKind, Credential, Graph, ReporterKind};

/// Generates the shared and the mutable visitor from one list of places.
macro_rules! visitor {
    ($name:ident, $($mut_:ident)?) => {
        pub fn $name(g: & $($mut_)? Graph, mut f: impl FnMut(& $($mut_)? Credential)) {
            for w in & $($mut_)? g.workers {
                f(& $($mut_)? w.password);
            }
            for b in & $($mut_)? g.builders {
                for c in & $($mut_)? b.env_secrets {
                    f(c.1);
                }
                for s in & $($mut_)? b.steps {
                    for c in & $($mut_)? s.env_secrets {
                        f(c.1);
                    }
                    if let crate::StepKind::Git { ssh_key: Some(k), .. } = & $($mut_)? s.kind {
                        f(k);
                    }
                }
            }
            for c in & $($mut_)? g.change_sources {
                match & $($mut_)? c.kind {
                    ChangeSourceKind::GithubWebhook { secret }
                    | ChangeSourceKind::GitlabWebhook { secret }
                    | ChangeSourceKind::GiteaWebhook { secret }
                    | ChangeSourceKind::BitbucketCloudWebhook { secret }
                    | ChangeSourceKind::BitbucketServerWebhook { secret }
                    | ChangeSourceKind::JsonWebhook { secret } => {
                        if let Some(s) = secret {
                            f(s);
                        }
                    }
                    ChangeSourceKind::GitPoller { .. } => {}
                }
            }
            for r in & $($mut_)? g.reporters {
                match & $($mut_)? r.kind {
                    ReporterKind::Mail { password, .. } | ReporterKind::Irc { password, .. } => {
                        if let Some(p) = password {
                            f(p);
                        }
                    }
                    ReporterKind::GithubStatus { token, .. }
                    | ReporterKind::GitlabStatus { token, .. }
                    | ReporterKind::GiteaStatus { token, .. }
                    | ReporterKind::BitbucketCloudStatus { token, .. }
                    | ReporterKind::BitbucketServerStatus { token, .. } => f(token),
                    ReporterKind::HttpPush { .. } => {}
                }
            }
            for u in & $($mut_)? g.master.access.users {
                if let Some(t) = & $($mut_)? u.token {
                    f(t);
                }
                if let Some(p) = & $($mut_)? u.password {
                    f(p);
                }
            }
            for p in & $($mut_)? g.master.access.oauth {
                f(& $($mut_)? p.client_secret);
            }
            if let Some(pg) = & $($mut_)? g.master.postgres {
                if let Some(p) = & $($mut_)? pg.password {
                    f(p);
                }
            }
        }
    };
}

visitor!(for_each,);
visitor!(for_each_mut, mut);

/// Every secret name the graph refers to.
pub fn secret_names(g: &Graph) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for_each(g, |c| {
        if let Credential::Secret { secret } = c {
            out.insert(secret.clone());
        }
    });
    out
}

/// Whether the graph holds a plain-text credential.
pub fn has_plain(g: &Graph) -> bool {
    let mut any = false;
    for_each(g, |c| any |= matches!(c, Credential::Plain(_)));
    any
}

/// Replaces every plain-text credential with `********` (secret references
/// are names, not values, and stay). Entity hashes are left as they were,
/// so diffs by hash still work.
pub fn mask_plain(g: &mut Graph) {
    for_each_mut(g, |c| {
        if let Credential::Plain(p) = c {
            *p = "********".into();
        }
    });
}
