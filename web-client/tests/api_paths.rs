//! The browser app's API calls (`app/api.js`) name only declared client endpoints, with the
//! declared method: a path or method changed on one side fails here.

use std::collections::BTreeSet;

/// `(METHOD, path)` with every `{param}` written `{}`.
fn declared() -> BTreeSet<(String, String)> {
    parley_client_api::endpoints()
        .iter()
        .map(|e| (e.method.as_str().to_owned(), placeholders(e.path)))
        .collect()
}

/// `/a/{x}/b` and `/a/${enc(x)}/b` both become `/a/{}/b`.
fn placeholders(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find(['{', '$']) {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push_str("{}");
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// Every `call('METHOD', `${PREFIX}/…`)` and `raw('METHOD', '…')` of `api.js`.
fn called(js: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for marker in ["call('", "raw('"] {
        for (at, _) in js.match_indices(marker) {
            let rest = &js[at + marker.len()..];
            let Some((method, rest)) = rest.split_once('\'') else {
                continue;
            };
            let rest = rest.trim_start_matches([',', ' ']);
            let quote = rest.chars().next().unwrap_or(' ');
            let Some(end) = rest[1..].find(quote) else {
                continue;
            };
            let path = rest[1..1 + end]
                .replace("${PREFIX}", "/_parley/client/v1")
                .split('?')
                .next()
                .unwrap_or("")
                .to_owned();
            if method.chars().all(|c| c.is_ascii_uppercase()) && path.starts_with('/') {
                found.push((method.to_owned(), placeholders(&path)));
            }
        }
    }
    found
}

#[test]
fn every_call_of_the_web_app_is_a_declared_endpoint() {
    let js = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/app/api.js"))
        .expect("app/api.js");
    assert!(
        js.contains("PREFIX = '/_parley/client/v1'"),
        "the prefix changed"
    );
    let declared = declared();
    let calls = called(&js);
    assert!(calls.len() >= 15, "found only {calls:?}");
    for call in &calls {
        assert!(
            declared.contains(call),
            "api.js calls {call:?}, which no endpoint declares"
        );
    }
    assert!(
        js.contains("}${PREFIX}/ws`"),
        "the WebSocket path changed in api.js"
    );
}

#[test]
fn the_scanner_reads_template_and_plain_paths() {
    let js =
        "a() { return this.call('PUT', `${PREFIX}/groups/${enc(g)}/send/${enc(t)}`, { m }); }\n\
              b() { return this.raw('GET', '/_parley/client/versions'); }";
    assert_eq!(
        called(js),
        vec![
            (
                "PUT".to_owned(),
                "/_parley/client/v1/groups/{}/send/{}".to_owned()
            ),
            ("GET".to_owned(), "/_parley/client/versions".to_owned())
        ]
    );
}
