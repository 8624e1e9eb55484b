//! Pages and components. They hold no media logic: the player page starts a
//! `host::player::Player` and renders the snapshots it sends.

mod catalogue;
mod controls;
mod format;
mod icons;
mod layout;
mod player_page;
mod signin;
mod stats_panel;
mod title;

use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;

pub use format::{format_clock, format_runtime};

#[component]
pub fn App() -> impl IntoView {
    // The tab shares what it holds from the moment it opens, not only while
    // a player is on screen.
    crate::host::swarm::SwarmHub::for_this_tab();
    view! {
        <Router>
            <Routes fallback=|| view! { <layout::NotFound/> }>
                <Route path=path!("/") view=catalogue::CataloguePage/>
                <Route path=path!("/signin") view=signin::SignInPage/>
                <Route path=path!("/title/:id") view=title::TitlePage/>
                <Route path=path!("/watch/:id") view=player_page::PlayerPage/>
            </Routes>
        </Router>
    }
}
