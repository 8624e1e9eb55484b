//! The frame around pages: the top bar, the not-found page, and sending a
//! signed-out viewer to the sign-in page.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::NavigateOptions;
use leptos_router::hooks::use_navigate;

use crate::host::api::{Api, ApiError};

/// Sends the viewer to the sign-in page when `error` says they are signed out.
/// Returns whether it did.
pub fn redirect_if_signed_out(error: &ApiError, navigate: &impl Fn(&str, NavigateOptions)) -> bool {
    if matches!(error, ApiError::Unauthorized) {
        navigate("/signin", NavigateOptions::default());
        true
    } else {
        false
    }
}

/// The top bar: brand, the provider's name, the viewer and sign-out.
#[component]
pub fn TopBar() -> impl IntoView {
    let navigate = use_navigate();
    let config = LocalResource::new(|| async { Api::same_origin().config().await.ok() });
    let session = LocalResource::new(|| async { Api::same_origin().session().await.ok() });
    let sign_out = move |_: leptos::ev::MouseEvent| {
        let navigate = navigate.clone();
        spawn_local(async move {
            let _ = Api::same_origin().sign_out().await;
            navigate("/signin", NavigateOptions::default());
        });
    };
    view! {
        <header class="topbar">
            <a class="brand" href="/">"telly"</a>
            <span class="provider">
                {move || config.get().flatten().map(|c| c.provider_name)}
            </span>
            <span class="spacer"></span>
            {move || {
                session
                    .get()
                    .flatten()
                    .map(|s| {
                        view! {
                            <span class="viewer" id="viewer-name">{s.viewer}</span>
                            <button class="link-button" id="sign-out" on:click=sign_out.clone()>
                                "Sign out"
                            </button>
                        }
                    })
            }}
        </header>
    }
}

#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <TopBar/>
        <main class="page message-page">
            <h1>"Nothing here"</h1>
            <p>"This page does not exist. " <a href="/">"Back to the catalogue"</a></p>
        </main>
    }
}
