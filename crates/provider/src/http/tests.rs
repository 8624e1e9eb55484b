//! The API of docs/API.md, driven through [`app`] exactly as production builds it.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use serde::de::DeserializeOwned;
use telly_proto::api::{ApiError, ClientConfig, Metrics, NetworkConfig, SessionInfo};
use telly_proto::{ClearKeyResponse, Licence, SignedManifest, TitleSummary};
use tempfile::TempDir;
use tower::ServiceExt;

use super::*;
use crate::accounts;
use crate::blocks::BlockStore;
use crate::catalogue::{self, LicenceWindow, NewTitle};

mod report;
mod swarm;

struct Fixture {
    _tmp: TempDir,
    state: Arc<AppState>,
    titles: Vec<NewTitle>,
}

const PASSWORD: &str = "open sesame";

/// A data directory with two titles ("older", "newer") whose blocks are on disk,
/// a viewer "ada", and a web app of two files.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path().join("data")).unwrap();
    let key = data.provider_key().unwrap();
    let store = BlockStore::new(data.blocks_dir());
    let mut conn = db::open(&data.database_path()).unwrap();
    let mut titles = Vec::new();
    for (n, id) in [(1u8, "older"), (2, "newer")] {
        let blocks: Vec<Vec<u8>> = (0..4)
            .map(|i| vec![n * 16 + i; 100 + usize::from(i)])
            .collect();
        for block in &blocks {
            store
                .put(&telly_proto::Sha256Hash::of(block), block)
                .unwrap();
        }
        let title = catalogue::tests::sample_title(id, &key, &blocks, 1_700_000_000 + u64::from(n));
        catalogue::insert(&mut conn, &title).unwrap();
        std::fs::create_dir_all(data.title_dir(id)).unwrap();
        std::fs::write(data.poster_path(id), format!("jpeg of {id}")).unwrap();
        titles.push(title);
    }
    let hash = accounts::hash_password(PASSWORD).unwrap();
    accounts::add_user(&conn, "ada", &hash, 0).unwrap();

    let web = tmp.path().join("dist");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(
        web.join("index.html"),
        "<!doctype html><title>Telly</title>",
    )
    .unwrap();
    std::fs::write(web.join("telly-web-0123456789abcdef.js"), "console.log(1)").unwrap();

    let state = AppState::open(&ServerConfig {
        data_dir: data.root().to_owned(),
        web_dir: web,
        provider_name: "Test TV".into(),
        network: NetworkConfig::default(),
        test_faults: false,
    })
    .unwrap();
    Fixture {
        _tmp: tmp,
        state,
        titles,
    }
}

impl Fixture {
    fn app(&self) -> Router {
        app(Arc::clone(&self.state))
    }

    async fn send(&self, request: Request<Body>) -> Response {
        self.app().oneshot(request).await.unwrap()
    }

    async fn get(&self, uri: &str, cookie: Option<&str>) -> Response {
        self.send(request(Method::GET, uri, cookie, Body::empty()))
            .await
    }

    async fn sign_in(&self) -> String {
        let response = self
            .send(request(
                Method::POST,
                "/api/session",
                None,
                json_body(&serde_json::json!({"name": "ada", "password": PASSWORD})),
            ))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let set_cookie = response.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_owned();
        set_cookie.split(';').next().unwrap().to_owned()
    }
}

fn request(method: Method, uri: &str, cookie: Option<&str>, body: Body) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    builder.body(body).unwrap()
}

fn json_body(value: &serde_json::Value) -> Body {
    Body::from(serde_json::to_vec(value).unwrap())
}

async fn body_bytes(response: Response) -> Vec<u8> {
    to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

async fn json<T: DeserializeOwned>(response: Response) -> T {
    let bytes = body_bytes(response).await;
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

fn header_of(response: &Response, name: header::HeaderName) -> &str {
    response
        .headers()
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn sign_in_with_the_right_password_only() {
    let f = fixture();
    let response = f
        .send(request(
            Method::POST,
            "/api/session",
            None,
            json_body(&serde_json::json!({"name": "ada", "password": PASSWORD})),
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = header_of(&response, header::SET_COOKIE).to_owned();
    for attribute in ["telly_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let info: SessionInfo = json(response).await;
    assert_eq!(info.viewer, "ada");

    for (name, password) in [("ada", "open sesamE"), ("bob", PASSWORD), ("ada", "")] {
        let response = f
            .send(request(
                Method::POST,
                "/api/session",
                None,
                json_body(&serde_json::json!({"name": name, "password": password})),
            ))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{name}/{password}"
        );
        assert!(response.headers().get(header::SET_COOKIE).is_none());
        let error: ApiError = json(response).await;
        assert!(!error.error.is_empty());
    }

    let response = f
        .send(request(
            Method::POST,
            "/api/session",
            None,
            Body::from("{not json"),
        ))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let _: ApiError = json(response).await;
}

#[tokio::test]
async fn session_lasts_until_sign_out() {
    let f = fixture();
    let cookie = f.sign_in().await;
    let response = f.get("/api/session", Some(&cookie)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json::<SessionInfo>(response).await.viewer, "ada");

    let response = f
        .send(request(
            Method::DELETE,
            "/api/session",
            Some(&cookie),
            Body::empty(),
        ))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(header_of(&response, header::SET_COOKIE).contains("Max-Age=0"));
    assert_eq!(
        f.get("/api/session", Some(&cookie)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        f.get("/api/titles", Some(&cookie)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn every_session_route_answers_401_without_a_valid_session() {
    let f = fixture();
    let kid = f.titles[0].keys.key_id.to_base64url();
    let routes = [
        (Method::GET, "/api/session"),
        (Method::DELETE, "/api/session"),
        (Method::GET, "/api/titles"),
        (Method::GET, "/api/titles/older"),
        (Method::GET, "/api/titles/older/manifest"),
        (Method::POST, "/api/titles/older/licence"),
        (Method::POST, "/api/titles/older/clearkey"),
        (Method::POST, "/api/titles/older/grant"),
        (Method::POST, "/api/titles/older/report"),
    ];
    let forged = format!("{SESSION_COOKIE}={}", "ab".repeat(32));
    for cookie in [None, Some("telly_session=garbage"), Some(forged.as_str())] {
        for (method, uri) in &routes {
            let body = json_body(&serde_json::json!({"kids": [kid], "type": "temporary"}));
            let response = f.send(request(method.clone(), uri, cookie, body)).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with {cookie:?}"
            );
            let error: ApiError = json(response).await;
            assert!(!error.error.is_empty());
        }
    }
}

#[tokio::test]
async fn catalogue_newest_first_and_unknown_titles() {
    let f = fixture();
    let cookie = f.sign_in().await;
    let response = f.get("/api/titles", Some(&cookie)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-store");
    let titles: Vec<TitleSummary> = json(response).await;
    let ids: Vec<&str> = titles.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["newer", "older"]);
    assert_eq!(titles[1].swarm_id, f.titles[0].signed.swarm_id());
    assert_eq!(titles[1].duration_ms, f.titles[0].manifest.duration_ms);

    let one: TitleSummary = json(f.get("/api/titles/older", Some(&cookie)).await).await;
    assert_eq!(one, titles[1]);
    for missing in [
        "/api/titles/nope",
        "/api/titles/NOPE",
        "/api/titles/nope/manifest",
        "/api/nothing/here",
    ] {
        let response = f.get(missing, Some(&cookie)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{missing}");
        let _: ApiError = json(response).await;
    }
}

#[tokio::test]
async fn the_manifest_verifies_with_the_served_provider_key() {
    let f = fixture();
    let cookie = f.sign_in().await;
    let config: ClientConfig = json(f.get("/api/config", None).await).await;
    assert_eq!(config.provider_name, "Test TV");
    let signed: SignedManifest =
        json(f.get("/api/titles/older/manifest", Some(&cookie)).await).await;
    let manifest = signed.verify(&config.provider_key).unwrap();
    assert_eq!(manifest, f.titles[0].manifest);

    let mut tampered = signed.clone();
    tampered.body = tampered.body.replacen("older", "olden", 1);
    assert!(tampered.verify(&config.provider_key).is_err());
}

#[tokio::test]
async fn licence_gives_this_titles_block_key() {
    let f = fixture();
    let cookie = f.sign_in().await;
    let response = f
        .send(request(
            Method::POST,
            "/api/titles/newer/licence",
            Some(&cookie),
            Body::empty(),
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let licence: Licence = json(response).await;
    assert_eq!(licence.title_id, "newer");
    assert_eq!(licence.block_key, f.titles[1].keys.block_key);
    assert_eq!(licence.key_id, f.titles[1].keys.key_id);
    assert_eq!(licence.expires_at, None);

    let response = f
        .send(request(
            Method::POST,
            "/api/titles/gone/licence",
            Some(&cookie),
            Body::empty(),
        ))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn licence_is_refused_outside_its_window() {
    let f = fixture();
    let cookie = f.sign_in().await;
    let now = crate::unix_now();
    for (from, until, status) in [
        (Some(now + 3600), None, StatusCode::FORBIDDEN),
        (None, Some(now - 1), StatusCode::FORBIDDEN),
        (Some(now - 10), Some(now + 3600), StatusCode::OK),
    ] {
        let window = LicenceWindow { from, until };
        {
            let conn = f.state.db.lock().unwrap();
            conn.execute(
                "UPDATE titles SET licence_from = ?1, licence_until = ?2 WHERE id = 'older'",
                rusqlite::params![
                    window.from.map(|t| t as i64),
                    window.until.map(|t| t as i64)
                ],
            )
            .unwrap();
        }
        for route in ["licence", "clearkey"] {
            let body = json_body(&serde_json::json!({"kids": [], "type": "temporary"}));
            let uri = format!("/api/titles/older/{route}");
            let response = f
                .send(request(Method::POST, &uri, Some(&cookie), body))
                .await;
            assert_eq!(response.status(), status, "{route} {window:?}");
            if route == "licence" && status == StatusCode::OK {
                assert_eq!(json::<Licence>(response).await.expires_at, until);
            }
        }
    }
}

#[tokio::test]
async fn clear_key_answers_only_requested_keys_of_this_title() {
    let f = fixture();
    let cookie = f.sign_in().await;
    let older = f.titles[0].keys.clone();
    let newer = f.titles[1].keys.clone();
    let ask = |uri: &'static str, kids: Vec<String>| {
        let cookie = cookie.clone();
        let f = &f;
        async move {
            let body = json_body(&serde_json::json!({"kids": kids, "type": "temporary"}));
            let response = f
                .send(request(Method::POST, uri, Some(&cookie), body))
                .await;
            assert_eq!(response.status(), StatusCode::OK);
            json::<ClearKeyResponse>(response).await
        }
    };
    let both = vec![older.key_id.to_base64url(), newer.key_id.to_base64url()];
    let answer = ask("/api/titles/older/clearkey", both).await;
    assert_eq!(answer.keys.len(), 1);
    assert_eq!(answer.keys[0].kid, older.key_id.to_base64url());
    let expected_k = base64_url(&older.content_key);
    assert_eq!(answer.keys[0].k, expected_k);
    assert_eq!(answer.keys[0].kty, "oct");
    assert_eq!(answer.session_type, "temporary");

    let other_titles_key = ask(
        "/api/titles/older/clearkey",
        vec![newer.key_id.to_base64url()],
    )
    .await;
    assert!(other_titles_key.keys.is_empty());
    let nothing_asked = ask("/api/titles/newer/clearkey", vec![]).await;
    assert!(nothing_asked.keys.is_empty());

    let response = f
        .send(request(
            Method::POST,
            "/api/titles/older/clearkey",
            Some(&cookie),
            Body::from("kids"),
        ))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn blocks_are_served_immutable_with_an_etag() {
    let f = fixture();
    let entry = f.titles[0].manifest.tracks[0].blocks[1].clone();
    let hex = entry.sha256.to_hex();
    let uri = format!("/blocks/{hex}");
    let response = f.get(&uri, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_of(&response, header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header_of(&response, header::ETAG), format!("\"{hex}\""));
    assert_eq!(
        header_of(&response, header::CONTENT_TYPE),
        "application/octet-stream"
    );
    let bytes = body_bytes(response).await;
    assert_eq!(bytes.len() as u64, entry.size);
    assert_eq!(telly_proto::Sha256Hash::of(&bytes), entry.sha256);

    let revalidate = Request::get(&uri)
        .header(header::IF_NONE_MATCH, format!("\"{hex}\""))
        .body(Body::empty())
        .unwrap();
    let response = f.send(revalidate).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert!(body_bytes(response).await.is_empty());
}

#[tokio::test]
async fn malformed_hashes_are_400_and_unknown_ones_404() {
    let f = fixture();
    let known = f.titles[0].manifest.tracks[0].init.sha256.to_hex();
    for bad in [
        known.to_uppercase(),
        known[..63].to_string(),
        format!("{known}00"),
        "xyz".into(),
        "..%2F..%2Fprovider.key".into(),
    ] {
        let response = f.get(&format!("/blocks/{bad}"), None).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let _: ApiError = json(response).await;
    }
    let unknown = telly_proto::Sha256Hash::of(b"never stored").to_hex();
    let response = f.get(&format!("/blocks/{unknown}"), None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let _: ApiError = json(response).await;
}

#[tokio::test]
async fn metrics_count_bytes_and_responses_per_title_and_block() {
    let f = fixture();
    let older = &f.titles[0].manifest.tracks[0];
    let newer = &f.titles[1].manifest.tracks[0];
    for entry in [
        &older.init,
        &older.blocks[0],
        &older.blocks[0],
        &newer.blocks[2],
    ] {
        let response = f.get(&format!("/blocks/{}", entry.sha256), None).await;
        assert_eq!(response.status(), StatusCode::OK);
        body_bytes(response).await;
    }
    // Neither a revalidation nor a HEAD sends the block.
    let hex = older.init.sha256.to_hex();
    let revalidate = Request::get(format!("/blocks/{hex}"))
        .header(header::IF_NONE_MATCH, format!("\"{hex}\""))
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.send(revalidate).await.status(), StatusCode::NOT_MODIFIED);
    let head = request(Method::HEAD, &format!("/blocks/{hex}"), None, Body::empty());
    assert_eq!(f.send(head).await.status(), StatusCode::OK);

    let metrics: Metrics = json(f.get("/api/metrics", None).await).await;
    let o = &metrics.titles["older"];
    assert_eq!(o.origin_blocks, 3);
    assert_eq!(o.origin_bytes, older.init.size + 2 * older.blocks[0].size);
    assert_eq!(o.block_fetches[&older.blocks[0].sha256.to_hex()], 2);
    assert_eq!(o.block_fetches[&older.init.sha256.to_hex()], 1);
    let n = &metrics.titles["newer"];
    assert_eq!((n.origin_blocks, n.origin_bytes), (1, newer.blocks[2].size));
    assert_eq!(f.state.metrics(), metrics);
}

#[tokio::test]
async fn blocks_of_a_title_published_while_serving_are_counted() {
    let f = fixture();
    let data = f.state.data_dir().clone();
    let blocks: Vec<Vec<u8>> = (0..2).map(|i| vec![0xE0 + i; 64]).collect();
    let store = BlockStore::new(data.blocks_dir());
    for block in &blocks {
        store
            .put(&telly_proto::Sha256Hash::of(block), block)
            .unwrap();
    }
    let late = catalogue::tests::sample_title(
        "late",
        &data.provider_key().unwrap(),
        &blocks,
        1_800_000_000,
    );
    // Another connection, as `telly publish` in another process would use.
    catalogue::insert(&mut db::open(&data.database_path()).unwrap(), &late).unwrap();

    let entry = &late.manifest.tracks[0].blocks[0];
    let response = f.get(&format!("/blocks/{}", entry.sha256), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let metrics: Metrics = json(f.get("/api/metrics", None).await).await;
    assert_eq!(metrics.titles["late"].origin_bytes, entry.size);
}

#[tokio::test]
async fn posters_are_public_and_cached_for_a_day() {
    let f = fixture();
    let response = f.get("/api/titles/older/poster.jpg", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, header::CONTENT_TYPE), "image/jpeg");
    assert_eq!(
        header_of(&response, header::CACHE_CONTROL),
        "public, max-age=86400"
    );
    assert_eq!(body_bytes(response).await, b"jpeg of older");
    for missing in [
        "/api/titles/nope/poster.jpg",
        "/api/titles/..%2F..%2Fprovider.key/poster.jpg",
    ] {
        assert_eq!(
            f.get(missing, None).await.status(),
            StatusCode::NOT_FOUND,
            "{missing}"
        );
    }
}

#[tokio::test]
async fn the_web_app_falls_back_to_index_html() {
    let f = fixture();
    for path in ["/", "/watch/older", "/titles"] {
        let response = f.get(path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache");
        assert!(
            String::from_utf8(body_bytes(response).await)
                .unwrap()
                .contains("<title>Telly</title>")
        );
    }
    let response = f.get("/telly-web-0123456789abcdef.js", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_of(&response, header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(body_bytes(response).await, b"console.log(1)");
}

#[tokio::test]
async fn a_missing_web_app_is_explained_and_the_api_still_works() {
    let f = fixture();
    let state = AppState::open(&ServerConfig {
        data_dir: f.state.data_dir().root().to_owned(),
        web_dir: f._tmp.path().join("not-built"),
        provider_name: "Test TV".into(),
        network: NetworkConfig::default(),
        test_faults: false,
    })
    .unwrap();
    let app = app(state);
    let response = app
        .clone()
        .oneshot(request(Method::GET, "/watch/older", None, Body::empty()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let text = String::from_utf8(body_bytes(response).await).unwrap();
    assert!(text.contains("not built"), "{text}");
    let response = app
        .oneshot(request(Method::GET, "/api/config", None, Body::empty()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let f = fixture();
    let huge = serde_json::json!({"name": "ada", "password": "x".repeat(MAX_REQUEST_BODY + 1)});
    let response = f
        .send(request(
            Method::POST,
            "/api/session",
            None,
            json_body(&huge),
        ))
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let _: ApiError = json(response).await;

    let cookie = f.sign_in().await;
    let kids: Vec<String> = (0..2000).map(|i| format!("kid{i:020}")).collect();
    let body = json_body(&serde_json::json!({"kids": kids}));
    let response = f
        .send(request(
            Method::POST,
            "/api/titles/older/clearkey",
            Some(&cookie),
            body,
        ))
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// The same app on a real socket, as a browser would use it: cookies kept by the
/// client, blocks over TCP, and a graceful shutdown.
#[tokio::test]
async fn a_real_listener_serves_a_signed_in_client_and_shuts_down() {
    let f = fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, Arc::clone(&f.state), async {
        let _ = stopped.await;
    }));
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();

    let denied = client
        .get(format!("{base}/api/titles"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), reqwest::StatusCode::UNAUTHORIZED);
    let signed_in = client
        .post(format!("{base}/api/session"))
        .json(&serde_json::json!({"name": "ada", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), reqwest::StatusCode::OK);
    let titles: Vec<TitleSummary> = client
        .get(format!("{base}/api/titles"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(titles.len(), 2);
    let entry = &f.titles[1].manifest.tracks[0].blocks[0];
    let block = client
        .get(format!("{base}/blocks/{}", entry.sha256))
        .send()
        .await
        .unwrap();
    assert_eq!(block.status(), reqwest::StatusCode::OK);
    assert_eq!(
        telly_proto::Sha256Hash::of(&block.bytes().await.unwrap()),
        entry.sha256
    );

    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("the server stops after the shutdown signal")
        .unwrap()
        .unwrap();
    assert!(reqwest::get(format!("{base}/api/config")).await.is_err());
}
