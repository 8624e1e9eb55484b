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

/// `performance.now()`: ms from the navigation's start, fractional (0 where
/// the page has no clock).
pub fn page_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
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
    let now = page_ms();
    let Some(marks) = page_object(&window, "__telly_marks") else {
        return;
    };
    let _ = js_sys::Reflect::set(
        &marks,
        &JsValue::from_str(name),
        &JsValue::from_f64(now.round()),
    );
}

/// A block's way from the player's request to its buffer.
#[derive(Clone, Copy, Debug)]
pub enum Stage {
    /// The player asked its source (the swarm, the store or the origin).
    Asked = 0,
    /// The opened block reached the player's loop.
    Got = 1,
    /// `appendBuffer` was called.
    Appending = 2,
    /// Its `updateend` reached the player's loop.
    Appended = 3,
}

/// How many blocks' ways are recorded: the first ones a page plays are
/// where its start and its first seconds of playing are decided.
const TIMED_BLOCKS: usize = 40;

thread_local! {
    static BLOCK_WAYS: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
}

/// Records when block `index` of `track` reached `stage`, for the first
/// [`TIMED_BLOCKS`] blocks of the page: `window.__telly_blocks["track/index"]`
/// is `[asked, got, appending, appended]` in ms from the navigation's start
/// (the latest time for a stage that repeats).
pub fn block_stage(track: usize, index: usize, stage: Stage) {
    let timed = BLOCK_WAYS.with(|ways| {
        let mut ways = ways.borrow_mut();
        if ways.contains(&(track, index)) {
            return true;
        }
        if ways.len() >= TIMED_BLOCKS || !matches!(stage, Stage::Asked) {
            return false;
        }
        ways.push((track, index));
        true
    });
    if !timed {
        return;
    }
    let Some(window) = web_sys::window() else {
        return;
    };
    let now = page_ms().round();
    let Some(blocks) = page_object(&window, "__telly_blocks") else {
        return;
    };
    let key = JsValue::from_str(&format!("{track}/{index}"));
    let way = match js_sys::Reflect::get(&blocks, &key) {
        Ok(way) if way.is_object() => way,
        _ => {
            let way: JsValue = js_sys::Array::of4(
                &JsValue::NULL,
                &JsValue::NULL,
                &JsValue::NULL,
                &JsValue::NULL,
            )
            .into();
            if js_sys::Reflect::set(&blocks, &key, &way).is_err() {
                return;
            }
            way
        }
    };
    let _ = js_sys::Reflect::set_u32(&way, stage as u32, &JsValue::from_f64(now));
}

/// `window[name]`, made an empty object if it is not one.
fn page_object(window: &web_sys::Window, name: &str) -> Option<JsValue> {
    let key = JsValue::from_str(name);
    match js_sys::Reflect::get(window, &key) {
        Ok(object) if object.is_object() => Some(object),
        _ => {
            let object: JsValue = js_sys::Object::new().into();
            js_sys::Reflect::set(window, &key, &object).ok()?;
            Some(object)
        }
    }
}
