//! The web client: `/` (the single page) and `/assets/...`, embedded in the binary so an edge
//! needs nothing beside itself at run time (no CDN, no files on disk, no build step).
//!
//! The files live in `crates/edge/web/` and are listed once in [`ASSETS`] with their content
//! type. Plain `include_bytes!` rather than `include_dir` or `rust-embed`: a dozen files known at
//! compile time need no dependency, and the explicit table says what each is served as; the tests
//! check that the table and the folder agree, so a new file cannot be forgotten.
//!
//! Every answer carries a strict Content-Security-Policy (same origin only; `connect-src` names
//! the same host over `ws:`/`wss:` for the WebSocket, because older browsers do not let `'self'`
//! cover WebSocket schemes), `nosniff`, and an `ETag` so a revalidation costs a 304. `index.html`
//! is `no-cache` (always revalidated, so a deploy shows at once); assets keep a short `max-age`.
//! An unknown asset is 404 in the protocol's error shape.

use crate::error::error_response;
use std::sync::OnceLock;
use warp::http::header::{
    HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, HOST,
    IF_NONE_MATCH, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

/// How long a browser may reuse an asset before it asks again.
const ASSET_CACHE: &str = "public, max-age=300";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const JSON: &str = "application/json";

/// One embedded file.
struct Asset {
    /// The path under `/assets/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../web/assets/", $path)),
        }
    };
}

/// The single page.
const INDEX: &[u8] = include_bytes!("../web/index.html");

/// Everything under `/assets/`.
static ASSETS: &[Asset] = &[
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("live.js", JS),
    asset!("format.js", JS),
    asset!("buyer.js", JS),
    asset!("admin.js", JS),
    asset!("app.css", CSS),
    asset!("favicon.svg", SVG),
    asset!("manifest.json", JSON),
    asset!("cars/sedan.svg", SVG),
    asset!("cars/suv.svg", SVG),
    asset!("cars/pickup.svg", SVG),
    asset!("cars/hatchback.svg", SVG),
    asset!("cars/coupe.svg", SVG),
    asset!("cars/van.svg", SVG),
    asset!("cars/wagon.svg", SVG),
    asset!("cars/convertible.svg", SVG),
];

/// `/` and `/assets/...`; anything else is not ours and falls through to the next route.
pub(crate) fn routes() -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let index = warp::path::end()
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .map(|headers: HeaderMap| file(INDEX, HTML, "no-cache", etag_of(None), &headers));
    let assets = warp::path("assets")
        .and(warp::path::tail())
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .map(|tail: warp::path::Tail, headers: HeaderMap| {
            match ASSETS.iter().position(|a| a.path == tail.as_str()) {
                Some(i) => {
                    let a = &ASSETS[i];
                    file(
                        a.body,
                        a.content_type,
                        ASSET_CACHE,
                        etag_of(Some(i)),
                        &headers,
                    )
                }
                None => with_guards(
                    error_response(StatusCode::NOT_FOUND, "not_found", "no such asset".into()),
                    &headers,
                ),
            }
        });
    index.or(assets).unify()
}

/// A file's answer: 304 when the browser holds this very version, else the bytes.
fn file(
    body: &'static [u8],
    content_type: &'static str,
    cache: &'static str,
    etag: &'static str,
    headers: &HeaderMap,
) -> Response {
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if fresh {
        let mut r = Response::new(Vec::<u8>::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(body.into());
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = res.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(ETAG, HeaderValue::from_static(etag));
    with_guards(res, headers)
}

/// The headers every answer of ours carries (an SVG opened on its own is a document too).
fn with_guards(mut res: Response, request: &HeaderMap) -> Response {
    let csp = csp(request.get(HOST).and_then(|v| v.to_str().ok()));
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(CONTENT_SECURITY_POLICY, v);
    }
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// Same origin only. The WebSocket is allowed to the host the page was loaded from; a `Host`
/// that is not a plain host name, IP literal and port is not echoed (then only `'self'`).
fn csp(host: Option<&str>) -> String {
    let plain = |h: &&str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    };
    let ws = host
        .filter(plain)
        .map(|h| format!(" ws://{h} wss://{h}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         font-src 'self'; manifest-src 'self'; connect-src 'self'{ws}; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'; object-src 'none'"
    )
}

/// A strong validator per file (FNV-1a of its bytes), computed once: `None` is `index.html`.
fn etag_of(asset: Option<usize>) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        std::iter::once(INDEX)
            .chain(ASSETS.iter().map(|a| a.body))
            .map(|b| format!("\"{:016x}\"", fnv1a(b)))
            .collect()
    });
    &tags[asset.map_or(0, |i| i + 1)]
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    async fn get(path: &str) -> warp::http::Response<bytes::Bytes> {
        warp::test::request()
            .method("GET")
            .path(path)
            .header("host", "gavel.test:8080")
            .reply(&routes())
            .await
    }

    fn header<'a>(res: &'a warp::http::Response<bytes::Bytes>, name: &str) -> &'a str {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    /// The paths a text references under `/assets/` (`src="/assets/..."`, `href="/assets/..."`).
    fn asset_refs(text: &str) -> Vec<String> {
        let mut refs = Vec::new();
        for attr in ["src=\"", "href=\""] {
            for (i, _) in text.match_indices(attr) {
                let rest = &text[i + attr.len()..];
                let value = &rest[..rest.find('"').expect("a closed attribute")];
                if !value.starts_with('#') {
                    refs.push(value.to_owned());
                }
            }
        }
        refs
    }

    #[tokio::test]
    async fn every_embedded_asset_is_served_with_its_type() {
        for a in ASSETS {
            let res = get(&format!("/assets/{}", a.path)).await;
            assert_eq!(res.status(), StatusCode::OK, "{}", a.path);
            assert_eq!(header(&res, "content-type"), a.content_type, "{}", a.path);
            assert_eq!(header(&res, "cache-control"), ASSET_CACHE);
            assert_eq!(res.body().as_ref(), a.body, "{}", a.path);
            assert!(!a.body.is_empty(), "{} is empty", a.path);
            assert_eq!(header(&res, "x-content-type-options"), "nosniff");
            assert!(header(&res, "content-security-policy").contains("default-src 'none'"));
        }
    }

    #[tokio::test]
    async fn index_is_revalidated_and_locked_to_its_origin() {
        let res = get("/").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "content-type"), HTML);
        assert_eq!(header(&res, "cache-control"), "no-cache");
        let csp = header(&res, "content-security-policy");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(
            csp.contains("connect-src 'self' ws://gavel.test:8080 wss://gavel.test:8080;"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");

        let etag = header(&res, "etag").to_owned();
        let again = warp::test::request()
            .path("/")
            .header("if-none-match", &etag)
            .reply(&routes())
            .await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(again.body().is_empty());
    }

    #[test]
    fn a_host_that_is_not_plain_is_not_echoed() {
        assert!(!csp(Some("evil; script-src *")).contains("evil"));
        assert!(!csp(Some("")).contains("ws://"));
        assert!(csp(Some("[::1]:8080")).contains("ws://[::1]:8080 wss://[::1]:8080"));
        assert!(csp(None).contains("connect-src 'self';"));
    }

    #[tokio::test]
    async fn unknown_assets_are_404_in_the_protocol_shape() {
        for path in [
            "/assets/nope.js",
            "/assets/",
            "/assets/cars/../app.js",
            "/assets/APP.JS",
        ] {
            let res = get(path).await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
            let body: serde_json::Value = serde_json::from_slice(res.body()).expect("json");
            assert_eq!(body["error"]["code"], "not_found", "{path}");
            assert!(body["error"]["message"].is_string());
        }
        // Not ours at all: left to the rest of the route table.
        let res = warp::test::request()
            .path("/elsewhere")
            .filter(&routes())
            .await;
        assert!(res.is_err());
    }

    #[tokio::test]
    async fn index_references_only_assets_that_exist() {
        let index = std::str::from_utf8(INDEX).expect("utf-8");
        let refs = asset_refs(index);
        assert!(refs.iter().any(|r| r == "/assets/app.js"), "{refs:?}");
        for r in refs {
            assert!(
                r.starts_with("/assets/"),
                "index.html points off the origin: {r}"
            );
            let res = get(&r).await;
            assert_eq!(res.status(), StatusCode::OK, "index.html references {r}");
        }
    }

    #[test]
    fn modules_import_only_modules_that_exist() {
        let names: BTreeSet<&str> = ASSETS.iter().map(|a| a.path).collect();
        let mut checked = 0;
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(a.body).expect("utf-8");
            // `import { a } from './x.js';` and the last line of a multi-line import.
            for line in text.lines().map(str::trim_start) {
                if !(line.starts_with("import ") || line.starts_with('}')) {
                    continue;
                }
                let Some(from) = line.split("from ").nth(1) else {
                    continue;
                };
                let target = from.trim_matches(|c| c == '\'' || c == '"' || c == ';');
                let target = target.strip_prefix("./").unwrap_or_else(|| {
                    panic!("{} imports {target}: only same-folder modules", a.path)
                });
                assert!(
                    names.contains(target),
                    "{} imports a missing {target}",
                    a.path
                );
                checked += 1;
            }
        }
        assert!(
            checked >= 5,
            "only {checked} imports found: is the scan still right?"
        );
    }

    #[test]
    fn the_table_and_the_folder_agree() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/assets");
        let mut on_disk = BTreeSet::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("the assets folder") {
                let path = entry.expect("an entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let rel = path.strip_prefix(&root).expect("under the root");
                    on_disk.insert(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let listed: BTreeSet<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        assert_eq!(listed, on_disk, "list every file of web/assets in ASSETS");
        for car in [
            "sedan",
            "suv",
            "pickup",
            "hatchback",
            "coupe",
            "van",
            "wagon",
            "convertible",
        ] {
            assert!(listed.contains(&format!("cars/{car}.svg")), "{car}");
        }
    }
}
