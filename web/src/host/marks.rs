//! Milestones of a page's start, for reading where its time to first frame
//! went: `window.__telly_marks[name]` is `performance.now()` (ms from the
//! navigation's start) when `name` first happened. Later repeats are ignored.

use wasm_bindgen::JsValue;

/// Records the first time `name` happens in this page.
pub fn mark(name: &str) {
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
    let name = JsValue::from_str(name);
    if js_sys::Reflect::has(&marks, &name).unwrap_or(true) {
        return;
    }
    let _ = js_sys::Reflect::set(&marks, &name, &JsValue::from_f64(now.round()));
}
