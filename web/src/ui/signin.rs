//! The sign-in page: name and password, `POST /api/session`.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::NavigateOptions;
use leptos_router::hooks::use_navigate;

use crate::host::api::{Api, ApiError};

#[component]
pub fn SignInPage() -> impl IntoView {
    let navigate = use_navigate();
    let (name, set_name) = signal(String::new());
    let (password, set_password) = signal(String::new());
    let (error, set_error) = signal(None::<String>);
    let (busy, set_busy) = signal(false);
    let provider = LocalResource::new(|| async { Api::same_origin().config().await.ok() });

    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        let (n, p) = (name.get_untracked(), password.get_untracked());
        if n.trim().is_empty() || p.is_empty() {
            set_error.set(Some("Enter your name and password.".into()));
            return;
        }
        set_busy.set(true);
        set_error.set(None);
        let navigate = navigate.clone();
        spawn_local(async move {
            match Api::same_origin().sign_in(n.trim(), &p).await {
                Ok(_) => navigate("/", NavigateOptions::default()),
                Err(ApiError::Unauthorized) => set_error.set(Some(
                    "That name and password do not match an account.".into(),
                )),
                Err(e) => set_error.set(Some(e.to_string())),
            }
            set_busy.set(false);
        });
    };

    view! {
        <main class="signin-page">
            <form class="signin-card" id="signin-form" on:submit=submit>
                <div class="brand big">"telly"</div>
                <p class="signin-provider">
                    {move || provider.get().flatten().map(|c| format!("Watch {}", c.provider_name))}
                </p>
                <label for="signin-name">"Name"</label>
                <input
                    id="signin-name"
                    name="name"
                    type="text"
                    autocomplete="username"
                    prop:value=name
                    on:input=move |ev| set_name.set(event_target_value(&ev))
                />
                <label for="signin-password">"Password"</label>
                <input
                    id="signin-password"
                    name="password"
                    type="password"
                    autocomplete="current-password"
                    prop:value=password
                    on:input=move |ev| set_password.set(event_target_value(&ev))
                />
                <p class="form-error" id="signin-error" role="alert">
                    {move || error.get()}
                </p>
                <button type="submit" class="primary" id="signin-submit" prop:disabled=busy>
                    {move || if busy.get() { "Signing in…" } else { "Sign in" }}
                </button>
            </form>
        </main>
    }
}
