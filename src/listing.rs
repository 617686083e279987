//! `bbc list`: the builders, schedulers or workers a config defines, one
//! per line with tab-separated details, optionally only those of a tag.

use clap::ValueEnum;

use crate::command_error::CommandError;
use crate::output::{compile_graph, write_output, ColorChoice};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListWhat {
    Builders,
    Schedulers,
    Workers,
}

pub fn list(
    what: ListWhat,
    config: &str,
    tag: Option<&str>,
    color: ColorChoice,
) -> Result<(), CommandError> {
    let g = compile_graph(config, color)?;
    let tagged =
        |b: &str| tag.is_none_or(|t| g.builder(b).is_some_and(|x| x.tags.iter().any(|y| y == t)));
    let mut out = String::new();
    match what {
        ListWhat::Builders => {
            for b in g.builders.iter().filter(|b| tagged(&b.name)) {
                out.push_str(&format!(
                    "{}\tworkers={}\ttags={}\n",
                    b.name,
                    b.workers.join(","),
                    b.tags.join(",")
                ));
            }
        }
        ListWhat::Schedulers => {
            for s in g
                .schedulers
                .iter()
                .filter(|s| tag.is_none() || s.builders.iter().any(|b| tagged(b)))
            {
                out.push_str(&format!(
                    "{}\t{}\tbuilders={}\n",
                    s.name,
                    s.kind.name(),
                    s.builders.len()
                ));
            }
        }
        ListWhat::Workers => {
            for w in g.workers.iter().filter(|w| {
                tag.is_none()
                    || g.builders
                        .iter()
                        .any(|b| tagged(&b.name) && b.workers.contains(&w.name))
            }) {
                let used = g
                    .builders
                    .iter()
                    .filter(|b| b.workers.contains(&w.name))
                    .count();
                out.push_str(&format!(
                    "{}\tmax-builds={}\tbuilders={used}\n",
                    w.name, w.max_builds
                ));
            }
        }
    }
    write_output(None, &out)
}
