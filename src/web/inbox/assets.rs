//! Static assets of the web inbox, compiled into the binary and served under names that
//! carry a digest of their content (`/static/bote.<hash>.css`), so that browsers may cache
//! them for a year: a changed file gets a new name.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::Digest;

/// One asset: its fingerprinted name, content type and bytes.
struct Asset {
    name: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

fn asset(stem: &str, ext: &str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
    let digest = sha2::Sha256::digest(bytes);
    Asset {
        name: format!("{stem}.{}.{ext}", &hex::encode(digest)[..16]),
        content_type,
        bytes,
    }
}

static ASSETS: LazyLock<[Asset; 1]> = LazyLock::new(|| {
    [asset(
        "bote",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("static/bote.css"),
    )]
});

/// The path of the style sheet, e.g. `/static/bote.0123456789abcdef.css`.
pub fn css_path() -> String {
    format!("/static/{}", ASSETS[0].name)
}

/// `GET /static/{name}`: an asset by its fingerprinted name, cacheable for a year.
pub async fn serve(Path(name): Path<String>) -> Response {
    let Some(found) = ASSETS.iter().find(|a| a.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = found.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(found.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}
