//! Entry point of the WASM app: panic hook, then the Leptos app on the body.

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(telly_web::App);
}
