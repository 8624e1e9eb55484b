//! Time the page's thread spends in Telly's own loops, for telling a tab
//! starved by its own work from one starved by the machine (the tab-swarm
//! benchmark reads it): `window.__telly_busy` is `{ loop: [runs, total ms,
//! longest ms] }`, republished at most every [`PUBLISH_EVERY_MS`].

use std::cell::RefCell;
use std::collections::BTreeMap;

use wasm_bindgen::JsValue;

use crate::host::marks;

const PUBLISH_EVERY_MS: f64 = 250.0;

#[derive(Default)]
struct Totals {
    by_loop: BTreeMap<&'static str, (u64, f64, f64)>,
    published_at: f64,
}

thread_local! {
    static TOTALS: RefCell<Totals> = RefCell::new(Totals::default());
}

/// Runs `work`, counting its time against `name`.
pub fn timed<R>(name: &'static str, work: impl FnOnce() -> R) -> R {
    let started = marks::page_ms();
    let result = work();
    let ended = marks::page_ms();
    let publish = TOTALS.with(|totals| {
        let mut totals = totals.borrow_mut();
        let entry = totals.by_loop.entry(name).or_default();
        let took = ended - started;
        entry.0 += 1;
        entry.1 += took;
        entry.2 = entry.2.max(took);
        let due = ended - totals.published_at >= PUBLISH_EVERY_MS;
        if due {
            totals.published_at = ended;
        }
        due.then(|| {
            totals
                .by_loop
                .iter()
                .map(|(name, &(runs, total, longest))| {
                    (*name, [runs as f64, total.round(), longest.round()])
                })
                .collect::<BTreeMap<_, _>>()
        })
    });
    if let Some(totals) = publish
        && let (Some(window), Ok(json)) = (web_sys::window(), serde_json::to_string(&totals))
        && let Ok(value) = js_sys::JSON::parse(&json)
    {
        let _ = js_sys::Reflect::set(&window, &JsValue::from_str("__telly_busy"), &value);
    }
    result
}
