//! `POST /api/titles/{id}/report`: the tabs' swarm traffic, summed per title in
//! `GET /api/metrics`; and the test-only `test_faults` switch of `/api/config`.

use telly_proto::api::SwarmReport;

use super::*;

fn report_body(from_peers: u64, from_origin: u64, uploaded: u64) -> serde_json::Value {
    serde_json::json!({
        "bytes_from_peers": from_peers,
        "bytes_from_origin": from_origin,
        "bytes_uploaded": uploaded,
    })
}

async fn send_report(f: &Fixture, cookie: Option<&str>, title: &str, body: Body) -> Response {
    f.send(request(
        Method::POST,
        &format!("/api/titles/{title}/report"),
        cookie,
        body,
    ))
    .await
}

async fn metrics(f: &Fixture) -> Metrics {
    json(f.get("/api/metrics", None).await).await
}

#[tokio::test]
async fn reports_are_summed_per_title_in_the_metrics() {
    let f = fixture();
    let cookie = f.sign_in().await;
    for (title, body) in [
        ("older", report_body(1000, 200, 30)),
        ("older", report_body(5, 0, 7)),
        ("newer", report_body(0, 0, 0)),
    ] {
        let response = send_report(&f, Some(&cookie), title, json_body(&body)).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{title} {body}");
        assert!(body_bytes(response).await.is_empty());
    }

    let metrics = metrics(&f).await;
    let older = &metrics.titles["older"];
    assert_eq!(
        (
            older.peer_bytes_reported,
            older.origin_bytes_reported,
            older.uploaded_bytes_reported,
            older.reports
        ),
        (1005, 200, 37, 2)
    );
    // What the tabs claim is kept apart from what the origin counted itself.
    assert_eq!((older.origin_bytes, older.origin_blocks), (0, 0));
    let newer = &metrics.titles["newer"];
    assert_eq!((newer.reports, newer.peer_bytes_reported), (1, 0));
}

#[tokio::test]
async fn reports_at_the_limit_are_counted_and_the_sums_saturate() {
    let f = fixture();
    let cookie = f.sign_in().await;
    let max = SwarmReport::MAX_BYTES;
    let response = send_report(
        &f,
        Some(&cookie),
        "older",
        json_body(&report_body(max, max, max)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(metrics(&f).await.titles["older"].peer_bytes_reported, max);

    f.state.metrics.record_report(
        "older",
        &SwarmReport {
            bytes_from_peers: u64::MAX,
            ..SwarmReport::default()
        },
    );
    let response = send_report(
        &f,
        Some(&cookie),
        "older",
        json_body(&report_body(max, 0, 0)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let older = &metrics(&f).await.titles["older"];
    assert_eq!((older.peer_bytes_reported, older.reports), (u64::MAX, 3));
}

#[tokio::test]
async fn reports_need_a_session() {
    let f = fixture();
    let body = report_body(1, 2, 3);
    for cookie in [None, Some("telly_session=garbage")] {
        let response = send_report(&f, cookie, "older", json_body(&body)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{cookie:?}");
        let _: ApiError = json(response).await;
    }
    assert!(!metrics(&f).await.titles.contains_key("older"));
}

#[tokio::test]
async fn reports_for_unknown_titles_are_404() {
    let f = fixture();
    let cookie = f.sign_in().await;
    for title in ["no-such-title", "NOPE", "..%2Fetc"] {
        let response =
            send_report(&f, Some(&cookie), title, json_body(&report_body(1, 2, 3))).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{title}");
        let _: ApiError = json(response).await;
    }
    assert!(metrics(&f).await.titles.is_empty());
}

#[tokio::test]
async fn oversized_unknown_or_malformed_reports_are_400() {
    let f = fixture();
    let cookie = f.sign_in().await;
    let over = SwarmReport::MAX_BYTES + 1;
    for (body, field) in [
        (report_body(over, 0, 0), "bytes_from_peers"),
        (report_body(0, over, 0), "bytes_from_origin"),
        (report_body(0, 0, u64::MAX), "bytes_uploaded"),
    ] {
        let response = send_report(&f, Some(&cookie), "older", json_body(&body)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: ApiError = json(response).await;
        assert!(
            error.error.contains(field) && error.error.contains("4 GiB"),
            "{}",
            error.error
        );
    }

    let mut with_extra = report_body(1, 2, 3);
    with_extra["viewer"] = "someone else".into();
    for body in [
        serde_json::to_vec(&with_extra).unwrap(),
        serde_json::to_vec(&serde_json::json!({"bytes_from_peers": 1})).unwrap(),
        br#"{"bytes_from_peers": -1, "bytes_from_origin": 2, "bytes_uploaded": 3}"#.to_vec(),
        // One past u64::MAX: not even representable.
        br#"{"bytes_from_peers": 18446744073709551616, "bytes_from_origin": 0, "bytes_uploaded": 0}"#
            .to_vec(),
        br#"{"bytes_from_peers": "1", "bytes_from_origin": 2, "bytes_uploaded": 3}"#.to_vec(),
        b"{not json".to_vec(),
        Vec::new(),
    ] {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let response = send_report(&f, Some(&cookie), "older", Body::from(body)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{shown}");
        let error: ApiError = json(response).await;
        assert!(!error.error.is_empty());
    }
    assert!(!metrics(&f).await.titles.contains_key("older"));
}

#[tokio::test]
async fn config_has_test_faults_off_unless_the_server_turns_them_on() {
    let f = fixture();
    let config: ClientConfig = json(f.get("/api/config", None).await).await;
    assert!(!config.test_faults);

    let state = AppState::open(&ServerConfig {
        data_dir: f.state.data_dir().root().to_owned(),
        web_dir: f._tmp.path().join("dist"),
        provider_name: "Test TV".into(),
        network: NetworkConfig::default(),
        test_faults: true,
    })
    .unwrap();
    let response = app(state)
        .oneshot(request(Method::GET, "/api/config", None, Body::empty()))
        .await
        .unwrap();
    assert!(json::<ClientConfig>(response).await.test_faults);
}
