//! Two WebRTC links in one page, connected over loopback candidates only, as the
//! swarm will use them: offer/answer/candidates, binary messages with flow
//! control, and a peer that vanishes.
//! Chromium's flags for loopback WebRTC come from web/webdriver.json.

#![cfg(target_arch = "wasm32")]

mod common;

use std::rc::Rc;

use common::random_bytes;
use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use gloo_timers::future::TimeoutFuture;
use telly_web::host::rtc::{
    Backpressure, HIGH_WATER_BYTES, LinkEvent, PeerLink, RtcOptions, candidate_address,
    is_loopback_candidate, unlock_loopback_candidates,
};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const PATIENCE_MS: u32 = 10_000;
const MESSAGE_BYTES: usize = 64 * 1024;

#[wasm_bindgen_test]
fn candidate_lines_are_read_for_their_address() {
    let host = "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0";
    assert_eq!(candidate_address(host), Some("127.0.0.1"));
    assert!(is_loopback_candidate(host));
    assert!(is_loopback_candidate(
        "a=candidate:2 1 udp 2122262783 ::1 50001 typ host"
    ));
    let lan = "candidate:3 1 udp 2122194687 192.168.1.20 50002 typ host";
    assert!(!is_loopback_candidate(lan));
    let mdns =
        "candidate:4 1 udp 2122129151 3b1f6e2a-0000-4000-8000-000000000000.local 50003 typ host";
    assert!(!is_loopback_candidate(mdns));
    for junk in ["", "candidate:", "candidate:1 1 udp", "hello 127.0.0.1"] {
        assert!(!is_loopback_candidate(junk), "{junk:?}");
    }
}

/// The next event, or a panic naming what was awaited.
async fn next_event(events: &mut UnboundedReceiver<LinkEvent>, what: &str) -> LinkEvent {
    let timeout = TimeoutFuture::new(PATIENCE_MS);
    futures::pin_mut!(timeout);
    match futures::future::select(events.next(), timeout).await {
        futures::future::Either::Left((Some(event), _)) => event,
        futures::future::Either::Left((None, _)) => panic!("events ended while awaiting {what}"),
        futures::future::Either::Right(_) => panic!("no event in time while awaiting {what}"),
    }
}

type Linked = (
    Rc<PeerLink>,
    UnboundedReceiver<LinkEvent>,
    Rc<PeerLink>,
    UnboundedReceiver<LinkEvent>,
);

/// Connects two links through an in-page "signalling" that checks every
/// candidate it passes on is a loopback one.
async fn linked() -> Linked {
    unlock_loopback_candidates()
        .await
        .expect("media permission (fake UI) for loopback candidates");
    let options = RtcOptions {
        ice_servers: vec![],
        loopback_only: true,
    };
    let (a, mut a_events) = PeerLink::new(&options).unwrap();
    let (b, mut b_events) = PeerLink::new(&options).unwrap();
    let (a, b) = (Rc::new(a), Rc::new(b));
    let offer = a.create_offer().await.unwrap();
    let answer = b.accept_offer(&offer).await.unwrap();
    a.accept_answer(&answer).await.unwrap();

    let (mut a_open, mut b_open) = (false, false);
    let mut candidates = 0;
    while !(a_open && b_open) {
        let timeout = TimeoutFuture::new(PATIENCE_MS);
        futures::pin_mut!(timeout);
        let either = futures::future::select(
            futures::future::select(a_events.next(), b_events.next()),
            timeout,
        )
        .await;
        let (event, from_a) = match either {
            futures::future::Either::Left((futures::future::Either::Left((e, _)), _)) => (e, true),
            futures::future::Either::Left((futures::future::Either::Right((e, _)), _)) => {
                (e, false)
            }
            futures::future::Either::Right(_) => {
                panic!("the channel did not open ({candidates} candidates passed)")
            }
        };
        let (to, opened) = if from_a {
            (&b, &mut a_open)
        } else {
            (&a, &mut b_open)
        };
        match event.expect("events ended before the channel opened") {
            LinkEvent::LocalCandidate(candidate) => {
                if let Some(c) = &candidate {
                    assert!(
                        is_loopback_candidate(&c.candidate),
                        "a non-loopback candidate left the link: {}",
                        c.candidate
                    );
                    candidates += 1;
                }
                to.add_candidate(candidate.as_ref()).await.unwrap();
            }
            LinkEvent::Open => *opened = true,
            other => panic!("unexpected {other:?} before the channel opened"),
        }
    }
    assert!(candidates > 0, "opened without candidates?");
    (a, a_events, b, b_events)
}

#[wasm_bindgen_test]
async fn bytes_cross_a_loopback_link_in_order_with_flow_control() {
    let (a, mut a_events, b, mut b_events) = linked().await;
    assert!(a.is_open() && b.is_open());
    let payload = random_bytes(6 * 1024 * 1024);
    let receiving = async {
        let mut got = Vec::with_capacity(payload.len());
        while got.len() < payload.len() {
            match next_event(&mut b_events, "data").await {
                LinkEvent::Message(bytes) => got.extend_from_slice(&bytes),
                LinkEvent::LocalCandidate(_) => {}
                other => panic!("receiver saw {other:?}"),
            }
        }
        got
    };
    let sending = async {
        let mut full_waits = 0;
        for chunk in payload.chunks(MESSAGE_BYTES) {
            if a.send(chunk).unwrap() == Backpressure::Full {
                full_waits += 1;
                assert!(a.buffered_amount() >= HIGH_WATER_BYTES);
                loop {
                    match next_event(&mut a_events, "writable").await {
                        LinkEvent::Writable => break,
                        LinkEvent::LocalCandidate(_) => {}
                        other => panic!("sender saw {other:?}"),
                    }
                }
            }
        }
        full_waits
    };
    let (got, full_waits) = futures::join!(receiving, sending);
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "bytes arrived changed or out of order");
    assert!(
        full_waits > 0,
        "6 MiB sent at once never filled the queue: flow control untested"
    );
}

#[wasm_bindgen_test]
async fn a_peer_that_vanishes_closes_the_link_and_sending_fails() {
    let (a, _a_events, b, mut b_events) = linked().await;
    drop(a);
    loop {
        match next_event(&mut b_events, "the close").await {
            LinkEvent::Closed(_) => break,
            LinkEvent::LocalCandidate(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(!b.is_open());
    assert!(b.send(b"anyone there?").is_err());
}
