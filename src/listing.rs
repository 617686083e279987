//! `bbc list`: the builders, schedulers or workers a config defines, one
//! per line with tab-separated details (or, `--format json`, one JSON
//! array of objects with the same details), optionally only those of a tag.

use clap::ValueEnum;
use serde_json::{json, Value};

use crate::command_error::CommandError;
use crate::output::{compile_graph, write_output, ColorChoice, OutFormat};

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
    format: OutFormat,
    color: ColorChoice,
) -> Result<(), CommandError> {
    let g = compile_graph(config, color)?;
    let tagged =
        |b: &str| tag.is_none_or(|t| g.builder(b).is_some_and(|x| x.tags.iter().any(|y| y == t)));
    let mut out = String::new();
    let mut items: Vec<Value> = Vec::new();
    match what {
        ListWhat::Builders => {
            for b in g.builders.iter().filter(|b| tagged(&b.name)) {
                items.push(json!({"name": b.name, "workers": b.workers, "tags": b.tags}));
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
                items.push(json!({"name": s.name, "kind": s.kind.name(), "builders": s.builders}));
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
                items.push(json!({"name": w.name, "max_builds": w.max_builds, "builders": used}));
                out.push_str(&format!(
                    "{}\tmax-builds={}\tbuilders={used}\n",
                    w.name, w.max_builds
                ));
            }
        }
    }
    if format == OutFormat::Json {
        out = format!("{}\n", Value::Array(items));
    }
    write_output(None, &out)
}
