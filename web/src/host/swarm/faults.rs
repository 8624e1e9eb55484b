//! Faults a test peer can be told to commit, from the page's `?fault=` query.
//! Honoured only when the provider's config says `test_faults` (set by
//! `telly serve --test-faults`, never in a real deployment), so a viewer can't
//! be talked into misbehaving by a link.
//!
//! - `corrupt-uploads`: every chunk this tab serves has a byte flipped;
//! - `no-grant`: join signalling without a grant;
//! - `forged-grant`: present peers a grant whose signature is broken;
//! - `grant-of=ID`: present signalling and peers a grant for title `ID`;
//! - `peer-grant-of=ID`: present peers (only) a grant for title `ID`.

#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub corrupt_uploads: bool,
    pub no_grant: bool,
    pub forged_grant: bool,
    pub grant_of: Option<String>,
    pub peer_grant_of: Option<String>,
}

impl Faults {
    /// Parses `?fault=a&fault=b` from a query string (with or without `?`).
    pub fn parse(query: &str) -> Self {
        let mut faults = Self::default();
        for pair in query.trim_start_matches('?').split('&') {
            let Some(value) = pair.strip_prefix("fault=") else {
                continue;
            };
            let value = js_sys::decode_uri_component(value)
                .map(String::from)
                .unwrap_or_else(|_| value.to_owned());
            match value.as_str() {
                "corrupt-uploads" => faults.corrupt_uploads = true,
                "no-grant" => faults.no_grant = true,
                "forged-grant" => faults.forged_grant = true,
                other => {
                    if let Some(id) = other.strip_prefix("grant-of=") {
                        faults.grant_of = Some(id.to_owned());
                    } else if let Some(id) = other.strip_prefix("peer-grant-of=") {
                        faults.peer_grant_of = Some(id.to_owned());
                    }
                }
            }
        }
        faults
    }

    pub fn any(&self) -> bool {
        self.corrupt_uploads
            || self.no_grant
            || self.forged_grant
            || self.grant_of.is_some()
            || self.peer_grant_of.is_some()
    }
}

#[cfg(test)]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;

    use super::Faults;

    wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

    #[wasm_bindgen_test]
    fn faults_come_from_repeated_query_parameters() {
        let faults = Faults::parse("?q=1&fault=corrupt-uploads&fault=peer-grant-of%3Dother-title");
        assert!(faults.corrupt_uploads);
        assert_eq!(faults.peer_grant_of.as_deref(), Some("other-title"));
        assert!(!faults.no_grant && !faults.forged_grant && faults.grant_of.is_none());
        assert!(faults.any());
        assert!(!Faults::parse("").any());
        assert!(!Faults::parse("?fault=&fault=unknown&faults=no-grant").any());
    }
}
