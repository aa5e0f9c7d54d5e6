//! The API documents: each API's OpenAPI 3.1 document, built from the endpoint declarations
//! the router serves, and a human-readable reference page generated from both, served under
//! the same strict CSP as the web client (no scripts, no inline styles).

use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use parley_client_api::endpoint::NoQuery;
use parley_client_api::openapi::{self, DocumentInfo};
use parley_client_api::versions::{ApiReference, GetClientApiDocument};
use parley_federation::endpoints::GetFederationApiDocument;
use serde_json::Value;

use crate::api::errors::ApiResult;
use crate::api::route::Routes;
use crate::state::AppState;

/// The documents' endpoints.
pub fn routes() -> Routes {
    Routes::new()
        .serve::<GetClientApiDocument, _, _>(client_document)
        .serve::<GetFederationApiDocument, _, _>(federation_document)
        .serve_raw::<ApiReference>(axum::routing::get(reference_page))
}

/// The client–server API's document (built once: the declarations are compiled in).
pub fn client_api_document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        openapi::document(
            DocumentInfo {
                title: "Parley client–server API",
                description: "Accounts, devices, key packages, groups and delivery, under \
                              `/_parley/client/v1`. The protocol, with the hub's rules and the \
                              wire details, is docs/protocol.md in the Parley repository; \
                              `GET /_parley/docs` renders this document.",
            },
            &parley_client_api::endpoints(),
        )
    })
}

/// The server–server API's document.
pub fn federation_api_document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        openapi::document(
            DocumentInfo {
                title: "Parley server–server API",
                description: "The key document and the signed federation endpoints under \
                              `/_parley/federation/v1`: transactions from hubs, key claims, \
                              device lists, follower submissions and catch-up. Request signing \
                              and destination resolution are in docs/protocol.md in the Parley \
                              repository.",
            },
            &parley_federation::endpoints::endpoints(),
        )
    })
}

async fn client_document(_: AppState, _: (), _: (), _: NoQuery) -> ApiResult<Value> {
    Ok(client_api_document().clone())
}

async fn federation_document(_: AppState, _: (), _: (), _: NoQuery) -> ApiResult<Value> {
    Ok(federation_api_document().clone())
}

async fn reference_page() -> Response {
    static PAGE: OnceLock<String> = OnceLock::new();
    let page =
        PAGE.get_or_init(|| reference_html(&[client_api_document(), federation_api_document()]));
    let mut response = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.clone(),
    )
        .into_response();
    crate::api::web_client::add_page_headers(&mut response);
    response
}

/// The reference page of `documents`: every operation with its parameters, body, answers
/// and errcodes, then every schema.
pub fn reference_html(documents: &[&Value]) -> String {
    let mut html = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Parley API reference</title></head><body>\n<h1>Parley API reference</h1>\n",
    );
    for doc in documents {
        let title = doc["info"]["title"].as_str().unwrap_or("API");
        let _ = write!(
            html,
            "<section><h2>{}</h2>\n<p>{}</p>\n",
            escape(title),
            escape(doc["info"]["description"].as_str().unwrap_or(""))
        );
        for (path, operations) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in operations.as_object().into_iter().flatten() {
                operation_html(&mut html, path, method, op);
            }
        }
        html.push_str("<h3>Schemas</h3>\n");
        for (name, schema) in doc["components"]["schemas"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let pretty = serde_json::to_string_pretty(schema).unwrap_or_default();
            let _ = write!(
                html,
                "<h4 id=\"{0}\">{0}</h4>\n<pre>{1}</pre>\n",
                escape(name),
                escape(&pretty)
            );
        }
        html.push_str("</section>\n");
    }
    html.push_str("</body></html>\n");
    html
}

fn operation_html(html: &mut String, path: &str, method: &str, op: &Value) {
    let _ = writeln!(
        html,
        "<article><h3><code>{} {}</code></h3>",
        escape(&method.to_ascii_uppercase()),
        escape(path)
    );
    for paragraph in op["description"].as_str().unwrap_or("").split("\n\n") {
        let _ = writeln!(html, "<p>{}</p>", escape(paragraph));
    }
    let auth = match op["security"].as_array().and_then(|s| s.first()) {
        Some(s) if s.get("accessToken").is_some() => "access token",
        Some(s) if s.get("serverSignature").is_some() => "server signature",
        _ => "none",
    };
    let _ = writeln!(html, "<p>Authentication: {auth}.</p>");
    if let Some(params) = op["parameters"].as_array() {
        html.push_str("<table><tr><th>parameter</th><th>in</th><th>required</th></tr>\n");
        for p in params {
            let _ = writeln!(
                html,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                escape(p["name"].as_str().unwrap_or("")),
                escape(p["in"].as_str().unwrap_or("")),
                p["required"].as_bool().unwrap_or(false)
            );
        }
        html.push_str("</table>\n");
    }
    if let Some(body) = op["requestBody"]["content"]["application/json"]["schema"].as_object() {
        let _ = writeln!(html, "<p>Body: {}</p>", schema_link(body));
    }
    for (status, answer) in op["responses"].as_object().into_iter().flatten() {
        let schema = answer["content"]["application/json"]["schema"].as_object();
        let _ = writeln!(
            html,
            "<p>{}: {}{}</p>",
            escape(status),
            escape(answer["description"].as_str().unwrap_or("")),
            schema
                .map(|s| format!(" ({})", schema_link(s)))
                .unwrap_or_default()
        );
    }
    html.push_str("</article>\n");
}

/// A link to a named schema, or the inline schema's type.
fn schema_link(schema: &serde_json::Map<String, Value>) -> String {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap_or(reference);
            format!("<a href=\"#{0}\">{0}</a>", escape(name))
        }
        None => escape(
            schema
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("any JSON"),
        ),
    }
}

/// Text made safe inside HTML elements and attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// `(METHOD, path)` of every operation of `doc`.
    fn operations(doc: &Value) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, methods) in doc["paths"].as_object().into_iter().flatten() {
            for method in methods.as_object().into_iter().flatten().map(|(m, _)| m) {
                ops.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        ops
    }

    #[test]
    fn the_router_serves_exactly_what_the_documents_list() {
        let routed: BTreeSet<(String, String)> = crate::api::routes()
            .table()
            .iter()
            .map(|e| (e.method.as_str().to_owned(), e.path.to_owned()))
            .collect();
        let mut documented = operations(client_api_document());
        documented.extend(operations(federation_api_document()));
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        assert!(
            unrouted.is_empty() && undocumented.is_empty(),
            "documented but not routed: {unrouted:?}; routed but not documented: {undocumented:?}"
        );
        assert!(routed.len() > 25, "{} routes", routed.len());
    }

    #[test]
    fn the_reference_page_names_every_operation_and_escapes_text() {
        let page = reference_html(&[client_api_document(), federation_api_document()]);
        for (method, path) in operations(client_api_document())
            .into_iter()
            .chain(operations(federation_api_document()))
        {
            assert!(
                page.contains(&format!("<code>{method} {}</code>", escape(&path))),
                "{method} {path}"
            );
        }
        assert!(!page.contains("<script"));
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
