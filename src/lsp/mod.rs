//! `bbc lsp`: a Language Server Protocol server over standard input and
//! output, so editors show the checker's findings while a config is typed.
//!
//! What it answers (docs/editors.md):
//! - diagnostics, published for every file of a compilation after the
//!   text has been quiet for [`DEBOUNCE`], with related locations and the
//!   code; a quick fix for each "did you mean `X`?";
//! - formatting (`bbc fmt`), document symbols (the outline), go to
//!   definition and find references for entities, templates and variables
//!   across imported files (`index.rs`); hover on a name says what it is,
//!   on a node or property name its language reference (`reference.rs`),
//!   on a diagnostic code its explanation;
//! - completion of node, property and value names and references
//!   (`complete.rs`, from the schema the compiler records while decoding).
//!
//! Architecture invariant: the server reads files (the ones an editor has
//! open come from the editor, the rest from disk) and never writes any,
//! and never touches the network; the compiler is pure.

mod complete;
mod index;
mod reference;
mod reuse;
mod text;
mod workspace;

use std::time::{Duration, Instant};

use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types::notification::Notification as _;
use lsp_types::request::Request as _;
use lsp_types::{
    notification, request, CodeActionProviderCapability, HoverProviderCapability, OneOf,
    ServerCapabilities, TextDocumentSyncCapability, TextDocumentSyncKind,
};

use crate::command_error::CommandError;
use workspace::Workspace;

/// How long the text must stay unchanged before it is checked again: a
/// burst of keystrokes is one compilation.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

pub fn run() -> Result<(), CommandError> {
    let (conn, io) = Connection::stdio();
    let caps = ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        document_formatting_provider: Some(OneOf::Left(true)),
        document_symbol_provider: Some(OneOf::Left(true)),
        definition_provider: Some(OneOf::Left(true)),
        references_provider: Some(OneOf::Left(true)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        completion_provider: Some(lsp_types::CompletionOptions {
            trigger_characters: Some(vec!["=".into(), "\"".into()]),
            ..Default::default()
        }),
        code_action_provider: Some(CodeActionProviderCapability::Simple(true)),
        ..Default::default()
    };
    let caps = serde_json::to_value(caps).map_err(|e| CommandError::Usage(e.to_string()))?;
    let init = conn
        .initialize(caps)
        .map_err(|e| CommandError::Usage(format!("LSP initialize failed: {e}")))?;
    let params: lsp_types::InitializeParams = serde_json::from_value(init).unwrap_or_default();
    let mut ws = Workspace::new(&params);
    serve(&conn, &mut ws)?;
    drop(conn);
    io.join()
        .map_err(|e| CommandError::Usage(format!("LSP connection failed: {e}")))
}

fn serve(conn: &Connection, ws: &mut Workspace) -> Result<(), CommandError> {
    let mut due: Option<Instant> = None;
    loop {
        let msg = match due {
            Some(at) => match conn
                .receiver
                .recv_timeout(at.saturating_duration_since(Instant::now()))
            {
                Ok(m) => Some(m),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
            },
            None => match conn.receiver.recv() {
                Ok(m) => Some(m),
                Err(_) => return Ok(()),
            },
        };
        let Some(msg) = msg else {
            // Quiet long enough: check what changed and publish.
            due = None;
            for (uri, diags, version) in ws.check_dirty() {
                let params = lsp_types::PublishDiagnosticsParams {
                    uri,
                    diagnostics: diags,
                    version,
                };
                send_notification::<notification::PublishDiagnostics>(conn, params);
            }
            continue;
        };
        match msg {
            Message::Request(req) => {
                if conn.handle_shutdown(&req).unwrap_or(true) {
                    return Ok(());
                }
                let resp = handle_request(ws, req);
                let _ = conn.sender.send(Message::Response(resp));
            }
            Message::Notification(n) => {
                if n.method == notification::Exit::METHOD {
                    return Ok(());
                }
                if handle_notification(ws, n) {
                    due = Some(Instant::now() + DEBOUNCE);
                }
            }
            Message::Response(_) => {}
        }
    }
}

fn send_notification<N: lsp_types::notification::Notification>(
    conn: &Connection,
    params: N::Params,
) {
    if let Ok(v) = serde_json::to_value(params) {
        let _ = conn.sender.send(Message::Notification(Notification {
            method: N::METHOD.to_string(),
            params: v,
        }));
    }
}

/// Applies a document notification; whether a check is now due.
fn handle_notification(ws: &mut Workspace, n: Notification) -> bool {
    match n.method.as_str() {
        notification::DidOpenTextDocument::METHOD => {
            match serde_json::from_value::<lsp_types::DidOpenTextDocumentParams>(n.params) {
                Ok(p) => {
                    let d = p.text_document;
                    ws.open(d.uri, d.text, d.version);
                    true
                }
                Err(_) => false,
            }
        }
        notification::DidChangeTextDocument::METHOD => {
            match serde_json::from_value::<lsp_types::DidChangeTextDocumentParams>(n.params) {
                // Full sync: the last change holds the whole text.
                Ok(p) => match p.content_changes.into_iter().last() {
                    Some(c) => {
                        ws.change(p.text_document.uri, c.text, p.text_document.version);
                        true
                    }
                    None => false,
                },
                Err(_) => false,
            }
        }
        notification::DidCloseTextDocument::METHOD => {
            match serde_json::from_value::<lsp_types::DidCloseTextDocumentParams>(n.params) {
                Ok(p) => {
                    ws.close(&p.text_document.uri);
                    true
                }
                Err(_) => false,
            }
        }
        notification::DidSaveTextDocument::METHOD => false,
        _ => false,
    }
}

fn handle_request(ws: &mut Workspace, req: Request) -> Response {
    let id = req.id.clone();
    let result = match req.method.as_str() {
        request::Formatting::METHOD => params(req).map(|p| to_json(ws.format(&p))),
        request::DocumentSymbolRequest::METHOD => params(req).map(|p| to_json(ws.symbols(&p))),
        request::GotoDefinition::METHOD => params(req).map(|p| to_json(ws.definition(&p))),
        request::References::METHOD => params(req).map(|p| to_json(ws.references(&p))),
        request::Completion::METHOD => params(req).map(|p| to_json(ws.completion(&p))),
        request::HoverRequest::METHOD => params(req).map(|p| to_json(ws.hover(&p))),
        request::CodeActionRequest::METHOD => params(req).map(|p| to_json(ws.code_actions(&p))),
        other => Err((
            ErrorCode::MethodNotFound,
            format!("bbc lsp does not answer `{other}`"),
        )),
    };
    match result {
        Ok(v) => Response::new_ok(id, v),
        Err((code, msg)) => Response::new_err(id, code as i32, msg),
    }
}

fn params<P: serde::de::DeserializeOwned>(req: Request) -> Result<P, (ErrorCode, String)> {
    serde_json::from_value(req.params)
        .map_err(|e| (ErrorCode::InvalidParams, format!("invalid params: {e}")))
}

fn to_json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
