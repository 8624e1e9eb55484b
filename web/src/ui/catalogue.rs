//! The catalogue: every title as a poster card.

use leptos::prelude::*;
use leptos_router::hooks::use_navigate;
use telly_proto::TitleSummary;

use super::format::format_runtime;
use super::layout::{TopBar, redirect_if_signed_out};
use crate::host::api::Api;

/// Year, genre and running time, joined with dots; absent parts left out.
pub fn meta_line(title: &TitleSummary) -> String {
    let mut parts = Vec::new();
    if let Some(year) = title.year {
        parts.push(year.to_string());
    }
    if let Some(genre) = &title.genre {
        parts.push(genre.clone());
    }
    parts.push(format_runtime(title.duration_ms));
    parts.join(" · ")
}

#[component]
pub fn CataloguePage() -> impl IntoView {
    let navigate = use_navigate();
    let titles = LocalResource::new(|| async { Api::same_origin().titles().await });
    Effect::new(move |_| {
        if let Some(Err(e)) = titles.get() {
            redirect_if_signed_out(&e, &navigate);
        }
    });
    view! {
        <TopBar/>
        <main class="page">
            <h1 class="section-title">"Catalogue"</h1>
            <Suspense fallback=|| view! { <p class="loading">"Loading the catalogue…"</p> }>
                {move || Suspend::new(async move {
                    match titles.await {
                        Ok(list) if list.is_empty() => {
                            view! { <p class="empty">"No titles have been published yet."</p> }.into_any()
                        }
                        Ok(list) => {
                            view! {
                                <div class="grid" id="catalogue">
                                    {list.into_iter().map(|t| view! { <TitleCard title=t/> }).collect_view()}
                                </div>
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

/// One poster in the grid; links to the title page.
#[component]
fn TitleCard(title: TitleSummary) -> impl IntoView {
    let href = format!("/title/{}", title.id);
    let poster = Api::same_origin().poster_url(&title);
    let meta = meta_line(&title);
    view! {
        <a class="card title-card" href=href data-title-id=title.id.clone()>
            <div class="poster">
                <img src=poster alt="" loading="lazy"/>
            </div>
            <div class="card-text">
                <div class="card-title">{title.title.clone()}</div>
                <div class="card-meta">{meta}</div>
            </div>
        </a>
    }
}
