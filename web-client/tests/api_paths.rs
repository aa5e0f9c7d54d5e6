//! The browser app's endpoints come from the declarations: `app/endpoints.js` is generated
//! from `parley_client_api::endpoints()` and this test fails when it is stale (run it with
//! `PARLEY_REGENERATE=1` to rewrite the file). `app/api.js` takes every method and path from
//! that module and spells none of its own.

use std::fmt::Write as _;

const GENERATED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/app/endpoints.js");
const API_JS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/app/api.js");

/// The module the declarations make.
fn endpoints_js() -> String {
    let mut js = String::from(
        "// Generated from the client API's endpoint declarations (client-api/src/*.rs) by\n\
         // web-client/tests/api_paths.rs: do not edit. `PARLEY_REGENERATE=1 cargo test -p\n\
         // parley-web --test api_paths` rewrites it; the same test fails when it is stale.\n\n\
         /** Each endpoint: its HTTP method, path template (`{name}` parameters) and auth. */\n\
         export const ENDPOINTS = Object.freeze({\n",
    );
    for e in parley_client_api::endpoints() {
        let auth = match e.auth {
            parley_client_api::endpoint::Auth::None => "none",
            parley_client_api::endpoint::Auth::AccessToken => "access_token",
            parley_client_api::endpoint::Auth::AdminToken => "admin_token",
            parley_client_api::endpoint::Auth::ServerSignature => "server_signature",
        };
        let _ = writeln!(
            js,
            "  {}: Object.freeze({{ method: '{}', path: '{}', auth: '{}' }}),",
            e.name,
            e.method.as_str(),
            e.path,
            auth
        );
    }
    js.push_str("});\n");
    js
}

#[test]
fn the_generated_endpoints_module_matches_the_declarations() {
    let fresh = endpoints_js();
    if std::env::var_os("PARLEY_REGENERATE").is_some() {
        std::fs::write(GENERATED, &fresh).expect("write app/endpoints.js");
    }
    let on_disk = std::fs::read_to_string(GENERATED).unwrap_or_default();
    assert!(
        on_disk == fresh,
        "app/endpoints.js is stale: run PARLEY_REGENERATE=1 cargo test -p parley-web --test api_paths"
    );
}

#[test]
fn api_js_spells_no_path_of_its_own() {
    let js = std::fs::read_to_string(API_JS).expect("app/api.js");
    assert!(
        js.contains("from './endpoints.js'"),
        "api.js must take its endpoints from endpoints.js"
    );
    for spelled in ["'/_parley", "`/_parley", "\"/_parley", "PREFIX}/"] {
        assert!(!js.contains(spelled), "api.js spells a path: {spelled}");
    }
    // Every endpoint api.js names exists in the generated module.
    let generated = endpoints_js();
    let named: Vec<&str> = js
        .match_indices("E.")
        .filter_map(|(at, _)| {
            let rest = &js[at + 2..];
            let end = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            let name = &rest[..end];
            name.starts_with(|c: char| c.is_ascii_uppercase())
                .then_some(name)
        })
        .collect();
    assert!(named.len() >= 15, "found only {named:?}");
    for name in named {
        assert!(
            generated.contains(&format!("  {name}: ")),
            "api.js names E.{name}, which no endpoint declares"
        );
    }
}
