//! A title's page: poster, synopsis, facts and the Play button.

use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_params_map};

use super::catalogue::meta_line;
use super::layout::{TopBar, redirect_if_signed_out};
use crate::host::api::Api;

#[component]
pub fn TitlePage() -> impl IntoView {
    let params = use_params_map();
    let navigate = use_navigate();
    let title = LocalResource::new(move || {
        let id = params.read().get("id").unwrap_or_default();
        async move { Api::same_origin().title(&id).await }
    });
    Effect::new(move |_| {
        if let Some(Err(e)) = title.get() {
            redirect_if_signed_out(&e, &navigate);
        }
    });
    view! {
        <TopBar/>
        <main class="page">
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match title.await {
                        Ok(t) => {
                            let poster = Api::same_origin().poster_url(&t);
                            let watch = format!("/watch/{}", t.id);
                            let meta = meta_line(&t);
                            view! {
                                <section class="title-hero" id="title-page" data-title-id=t.id.clone()>
                                    <div
                                        class="hero-backdrop"
                                        style=format!("background-image: url('{poster}')")
                                    ></div>
                                    <img class="hero-poster" src=poster.clone() alt=""/>
                                    <div class="hero-text">
                                        <h1 id="title-name">{t.title.clone()}</h1>
                                        <div class="hero-meta">{meta}</div>
                                        <p class="synopsis" id="title-synopsis">{t.synopsis.clone()}</p>
                                        <a class="primary play-button" id="play-button" href=watch>
                                            "▶ Play"
                                        </a>
                                    </div>
                                </section>
                            }
                                .into_any()
                        }
                        Err(e) => view! { <p class="error-text">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </main>
    }
}
