//! Uploaded files served by the master: `GET /files/{path}` answers a file
//! under `STATE/files` (what upload steps wrote; a build lists its own in
//! `GET /api/v1/builds/{id}` as `uploads`). Never anything outside that
//! directory: the path is joined from plain components only and the file,
//! resolved through any links, must still be inside it. On a private
//! master it needs `view` like the API (`auth::private_reads`).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api_error::{ApiError, ApiResult as R};
use crate::state::Shared;

/// The file `rel` names under `root`, if it is a regular file inside it.
/// Blocking (it reads the file system).
fn locate(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if rel.is_empty()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("`{rel}` is not a path inside the files directory"));
    }
    let real_root = root
        .canonicalize()
        .map_err(|_| "no file has been uploaded yet".to_string())?;
    let real = root
        .join(p)
        .canonicalize()
        .map_err(|_| format!("no uploaded file `{rel}`"))?;
    if !real.starts_with(&real_root) {
        return Err(format!("no uploaded file `{rel}`"));
    }
    if !real.is_file() {
        return Err(format!("`{rel}` is not a file"));
    }
    Ok(real)
}

/// A type browsers show inline for what builds usually upload; anything
/// else downloads (`application/octet-stream`), so an uploaded HTML page
/// never runs script in the master's origin.
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("txt" | "log" | "md" | "csv" | "json" | "xml" | "html" | "htm") => {
            "text/plain; charset=utf-8"
        }
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        _ => "application/octet-stream",
    }
}

pub(super) async fn file(
    State(s): State<Arc<Shared>>,
    UrlPath(rel): UrlPath<String>,
) -> R<Response> {
    let root = s.state_dir.join("files");
    let found = tokio::task::spawn_blocking(move || locate(&root, &rel))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let path = found.map_err(ApiError::not_found)?;
    let f = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::not_found(format!("cannot open the file: {e}")))?;
    let len = f.metadata().await.map(|m| m.len()).ok();
    let mut r = Body::from_stream(tokio_util::io::ReaderStream::new(f)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Nothing uploaded runs in the master's origin, whatever its type.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    if let Some(n) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_inside_the_directory_are_found() {
        let dir = std::env::temp_dir().join(format!("bbc-files-{}", std::process::id()));
        let root = dir.join("files");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/x.txt"), b"x").unwrap();
        std::fs::write(dir.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), root.join("out")).unwrap();
        assert!(locate(&root, "a/x.txt").is_ok());
        assert!(locate(&root, "../secret").is_err());
        assert!(locate(&root, "/etc/passwd").is_err());
        assert!(locate(&root, "out").is_err(), "a link out is refused");
        assert!(locate(&root, "a").is_err(), "a directory is not a file");
        assert!(locate(&root, "").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
