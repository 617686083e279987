//! Status badges: `GET /badges/{builder}.svg` (the builder's last finished
//! build) and `GET /badges/tag/{tag}.svg` (the worst of the last finished
//! builds of the builders carrying the tag), drawn in the shape of
//! shields.io's "flat" badges: a grey label, a coloured message.
//!
//! Access: a public master serves them to anyone; on a private one they
//! need `view` like every read of the API (`auth::private_reads` covers
//! `/badges/`), so an anonymous `<img>` gets a 401, not the result.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bbc_graph::BuildResult;

use crate::api_error::{ApiError, ApiResult as R};
use crate::state::Shared;
use crate::store::{BuildFilter, Page, Store};

type S = State<Arc<Shared>>;

/// How many of a builder's newest builds are read to find its last
/// finished one (the newer ones are running).
const LOOK_BACK: usize = 20;

/// The text and colour (shields' palette) of a result.
fn message(r: Option<BuildResult>) -> (&'static str, &'static str) {
    match r {
        Some(BuildResult::Success) => ("passing", "#4c1"),
        Some(BuildResult::Warnings) => ("warnings", "#dfb317"),
        Some(BuildResult::Skipped) => ("skipped", "#9f9f9f"),
        Some(BuildResult::Failure) => ("failing", "#e05d44"),
        Some(BuildResult::Exception) => ("exception", "#a4a"),
        Some(BuildResult::Retry) => ("retry", "#fe7d37"),
        Some(BuildResult::Cancelled) => ("cancelled", "#9f9f9f"),
        None => ("no builds", "#9f9f9f"),
    }
}

/// Width of a text in Verdana 11px, near enough: shields measures each
/// glyph; an average per character class keeps the badge snug.
fn text_width(s: &str) -> u32 {
    s.chars()
        .map(|c| match c {
            'i' | 'l' | 'j' | '.' | ',' | ':' | ';' | '!' | '|' | '\'' => 4,
            'f' | 't' | 'r' | 'I' | ' ' | '-' | '(' | ')' | '/' => 5,
            'm' | 'w' | 'M' | 'W' => 10,
            c if c.is_ascii_uppercase() => 8,
            _ => 7,
        })
        .sum()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG of a flat badge.
pub(crate) fn svg(label: &str, message: &str, color: &str) -> String {
    let (lw, mw) = (text_width(label) + 10, text_width(message) + 10);
    let w = lw + mw;
    let (label, message) = (escape(label), escape(message));
    // Text is drawn at 10x and scaled down, as shields does, for crisp
    // glyph placement; the shadow is the same text 1px lower.
    let (lx, mx) = (lw * 5, lw * 10 + mw * 5);
    let (ltl, mtl) = ((lw - 10) * 10, (mw - 10) * 10);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" aria-label="{label}: {message}"><title>{label}: {message}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{w}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{mw}" height="20" fill="{color}"/><rect width="{w}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" text-rendering="geometricPrecision" font-size="110"><text aria-hidden="true" x="{lx}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)" textLength="{ltl}">{label}</text><text x="{lx}" y="140" transform="scale(.1)" fill="#fff" textLength="{ltl}">{label}</text><text aria-hidden="true" x="{mx}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)" textLength="{mtl}">{message}</text><text x="{mx}" y="140" transform="scale(.1)" fill="#fff" textLength="{mtl}">{message}</text></g></svg>"##
    )
}

fn answer(label: &str, r: Option<BuildResult>) -> Response {
    let (m, c) = message(r);
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"),
            // Forges' image proxies cache hard: a badge must be fetched
            // again to show the next build.
            (header::CACHE_CONTROL, "no-cache, max-age=0"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        svg(label, m, c),
    )
        .into_response()
}

/// `NAME.svg` → `NAME`; anything else is not a badge.
fn stem(file: &str) -> R<&str> {
    file.strip_suffix(".svg")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::not_found("a badge's address ends in `.svg`"))
}

/// The result of a builder's newest finished build among its last few.
fn last_result(st: &dyn Store, builder: &str) -> crate::store::Result<Option<BuildResult>> {
    let f = BuildFilter {
        builder: Some(builder.to_string()),
        ..BuildFilter::default()
    };
    let page = Page {
        before: None,
        limit: LOOK_BACK,
    };
    Ok(st.builds(&f, page)?.iter().find_map(|b| b.result))
}

pub(super) async fn builder(State(s): S, Path(file): Path<String>) -> R<Response> {
    let name = stem(&file)?.to_string();
    if s.graph().builder(&name).is_none() {
        return Err(ApiError::not_found(format!("no builder named `{name}`")));
    }
    let key = name.clone();
    let r = s.db(move |st| last_result(st, &key)).await?;
    Ok(answer(&name, r))
}

pub(super) async fn tag(State(s): S, Path(file): Path<String>) -> R<Response> {
    let tag = stem(&file)?.to_string();
    let g = s.graph();
    let names: Vec<String> = g
        .builders
        .iter()
        .filter(|b| b.tags.contains(&tag))
        .map(|b| b.name.clone())
        .collect();
    if names.is_empty() {
        return Err(ApiError::not_found(format!(
            "no builder has the tag `{tag}`"
        )));
    }
    let results = s
        .db(move |st| {
            names
                .iter()
                .map(|n| last_result(st, n))
                .collect::<crate::store::Result<Vec<_>>>()
        })
        .await?;
    // The worst result wins, as for a build set; builders without a
    // finished build do not count.
    // (`BuildResult` is ordered worst last.)
    let worst = results.into_iter().flatten().max();
    Ok(answer(&tag, worst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badges_escape_names_and_grow_with_their_text() {
        let a = svg("b<&>\"", "passing", "#4c1");
        assert!(a.contains("b&lt;&amp;&gt;&quot;"), "{a}");
        assert!(!a.contains("b<&"));
        let width = |s: &str| -> u32 {
            let rest = &s[s.find("width=\"").unwrap() + 7..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        };
        assert!(width(&svg("a-much-longer-builder", "passing", "#4c1")) > width(&a));
        assert_eq!(stem("x.svg").unwrap(), "x");
        assert!(stem(".svg").is_err());
        assert!(stem("x.png").is_err());
    }
}
