//! Glob patterns as the language reference defines them (`*` and `?`
//! within one path segment, `**` across segments, `[abc]`, `{a,b}`),
//! compiled once into one matcher for a whole list.

/// A list of globs, any of which may match. Empty matches nothing; callers
/// decide what an empty list means ("no filter", "every branch").
#[derive(Debug, Clone)]
pub struct Globs {
    set: globset::GlobSet,
    empty: bool,
}

impl Globs {
    pub fn new(patterns: &[String]) -> Globs {
        let mut b = globset::GlobSetBuilder::new();
        for p in patterns {
            // The compiler rejected invalid globs (E0108); one that still
            // fails here (a graph from elsewhere) matches literally rather
            // than failing the scheduler or poller.
            let glob = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .or_else(|_| globset::Glob::new(&globset::escape(p)));
            if let Ok(g) = glob {
                b.add(g);
            }
        }
        Globs {
            set: b.build().unwrap_or_else(|_| globset::GlobSet::empty()),
            empty: patterns.is_empty(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.empty
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.set.is_match(text)
    }
}

#[cfg(test)]
mod tests {
    use super::Globs;

    fn g(p: &[&str]) -> Globs {
        Globs::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_star_stays_within_one_segment() {
        let rel = g(&["release/*"]);
        assert!(rel.is_match("release/1.0"));
        assert!(!rel.is_match("release/1.0/hotfix"));
        let src = g(&["src/*.rs"]);
        assert!(src.is_match("src/main.rs"));
        assert!(!src.is_match("src/net/tcp.rs"));
        let deep = g(&["src/**"]);
        assert!(deep.is_match("src/net/tcp.rs"));
        assert!(g(&["{main,dev}", "v?.[0-9]"]).is_match("v1.2"));
        assert!(!g(&[]).is_match("anything"));
    }
}
