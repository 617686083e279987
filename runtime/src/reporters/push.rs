//! HTTP push (`kind="http"`): one POST per reported build. The body is the
//! rendered `template` (sent as `application/json` when it is valid JSON,
//! as `text/plain` otherwise), or the message context as JSON when the
//! reporter has no template.

use serde_json::Value;

use super::delivery::{deliver, post};
use super::message::{Templates, TEMPLATE};

/// The body and its content type.
pub fn body(templates: &Templates, cx: &Value) -> Option<(String, &'static str)> {
    if !templates.has(TEMPLATE) {
        return Some((cx.to_string(), "application/json"));
    }
    let text = templates.render(TEMPLATE, cx)?;
    let ct = if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    Some((text, ct))
}

/// Whether the report was delivered (a template that fails to render
/// delivers nothing).
pub async fn send(reporter: &str, url: &str, templates: &Templates, cx: &Value) -> bool {
    let Some((text, ct)) = body(templates, cx) else {
        return false;
    };
    let what = format!(
        "report of {} #{}",
        cx["builder"].as_str().unwrap_or(""),
        cx["number"]
    );
    deliver(reporter, &what, || post(url, &[], ct, text.clone())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbc_graph::{Reporter, ReporterKind};
    use serde_json::json;

    fn templates(template: Option<&str>) -> Templates {
        Templates::of(&Reporter {
            name: "p".into(),
            builders: vec![],
            kind: ReporterKind::HttpPush {
                url: "http://x/".into(),
                template: template.map(str::to_string),
                when: vec![],
            },
            hash: String::new(),
        })
    }

    #[test]
    fn bodies_and_content_types() {
        let cx = json!({"builder": "b \"q\"", "number": 2, "result": "failure"});
        let (b, ct) = body(&templates(None), &cx).unwrap_or_default();
        assert_eq!(ct, "application/json");
        assert_eq!(serde_json::from_str::<Value>(&b).ok(), Some(cx.clone()));
        let (b, ct) = body(
            &templates(Some("{\"text\": {{json builder}}, \"n\": {{number}}}")),
            &cx,
        )
        .unwrap_or_default();
        assert_eq!(ct, "application/json");
        assert_eq!(b, "{\"text\": \"b \\\"q\\\"\", \"n\": 2}");
        let (b, ct) = body(&templates(Some("{{builder}} {{result}}")), &cx).unwrap_or_default();
        assert_eq!(ct, "text/plain; charset=utf-8");
        assert_eq!(b, "b \"q\" failure");
    }
}
