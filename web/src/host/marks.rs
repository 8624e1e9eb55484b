//! Milestones of a page's start, for reading where its time to first frame
//! went: `window.__telly_marks[name]` is `performance.now()` (ms from the
//! navigation's start) when `name` first happened. Later repeats are ignored.

use std::cell::RefCell;
use std::collections::HashSet;

use wasm_bindgen::JsValue;

thread_local! {
    /// Names already recorded: some marks sit on hot paths (every chunk,
    /// every append), where a repeat must cost a lookup, not JS calls.
    static RECORDED: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// Records the first time `name` happens in this page.
pub fn mark(name: &str) {
    let first = RECORDED.with(|recorded| {
        let mut recorded = recorded.borrow_mut();
        !recorded.contains(name) && recorded.insert(name.to_string())
    });
    if !first {
        return;
    }
    let Some(window) = web_sys::window() else {
        return;
    };
    let now = window.performance().map_or(0.0, |p| p.now());
    let key = JsValue::from_str("__telly_marks");
    let marks = match js_sys::Reflect::get(&window, &key) {
        Ok(marks) if marks.is_object() => marks,
        _ => {
            let marks: JsValue = js_sys::Object::new().into();
            if js_sys::Reflect::set(&window, &key, &marks).is_err() {
                return;
            }
            marks
        }
    };
    let _ = js_sys::Reflect::set(
        &marks,
        &JsValue::from_str(name),
        &JsValue::from_f64(now.round()),
    );
}
