//! OpenAPI 3.1 documents built from endpoint declarations ([`EndpointInfo`]): the same
//! declarations the server routes by, so the document cannot list what is not served.

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

use crate::endpoint::{Auth, BodyLimit, EndpointInfo, RateLimitClass};
use crate::error::{ErrCode, ErrorBody};

/// The document's title and introduction.
#[derive(Debug, Clone, Copy)]
pub struct DocumentInfo {
    /// `info.title`.
    pub title: &'static str,
    /// `info.description` (Markdown).
    pub description: &'static str,
}

/// The errcodes an endpoint may answer beyond its own: those of its authentication, body,
/// parameters and rate limit, and `P_UNKNOWN`.
pub fn errcodes(e: &EndpointInfo) -> Vec<ErrCode> {
    let mut codes: Vec<ErrCode> = e.errcodes.to_vec();
    match e.auth {
        Auth::None => {}
        Auth::AccessToken => codes.extend([ErrCode::MissingToken, ErrCode::UnknownToken]),
        Auth::AdminToken => codes.extend([
            ErrCode::MissingToken,
            ErrCode::UnknownToken,
            ErrCode::Forbidden,
        ]),
        Auth::ServerSignature => codes.extend([
            ErrCode::Unauthorized,
            ErrCode::Forbidden,
            ErrCode::LimitExceeded,
        ]),
    }
    if e.body_limit == BodyLimit::Media {
        codes.extend([ErrCode::TooLarge, ErrCode::Timeout]);
    } else if e.method.has_body() {
        codes.extend([
            ErrCode::NotJson,
            ErrCode::BadJson,
            ErrCode::TooLarge,
            ErrCode::Timeout,
        ]);
    } else if !e.path_params().is_empty() || e.method == crate::Method::Get {
        codes.push(ErrCode::BadJson);
    }
    if e.rate_limit != RateLimitClass::None {
        codes.push(ErrCode::LimitExceeded);
    }
    codes.push(ErrCode::Unknown);
    let mut seen = Vec::new();
    codes.retain(|c| {
        let new = !seen.contains(c);
        seen.push(*c);
        new
    });
    codes
}

/// The OpenAPI 3.1 document of `endpoints`.
pub fn document(info: DocumentInfo, endpoints: &[EndpointInfo]) -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let error_schema = generator.subschema_for::<ErrorBody>().to_value();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for e in endpoints {
        let operation = operation(e, &mut generator, &error_schema);
        paths
            .entry(e.path)
            .or_default()
            .insert(e.method.as_str().to_ascii_lowercase(), operation);
    }
    let schemas = generator.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": info.title,
            "version": "v1",
            "description": info.description,
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "accessToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token from register, login or refresh.",
                },
                "serverSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`X-Parley origin=\"…\",destination=\"…\",key=\"ed25519:…\",sig=\"…\"`: the origin server's Ed25519 signature over the canonical JSON of method, uri, origin, destination and content (docs/protocol.md, request signing).",
                },
            },
        },
    })
}

fn operation(e: &EndpointInfo, generator: &mut SchemaGenerator, error_schema: &Value) -> Value {
    let doc = e.doc.trim();
    let summary = doc.split("\n").next().unwrap_or("").trim();
    let mut op = Map::new();
    op.insert("operationId".into(), json!(e.name));
    op.insert("summary".into(), json!(summary));
    op.insert(
        "description".into(),
        json!(format!(
            "{}\n\nRate limit: `{}`. Largest body: `{}`.",
            doc.lines().map(str::trim).collect::<Vec<_>>().join("\n"),
            e.rate_limit.as_str(),
            e.body_limit.as_str()
        )),
    );
    op.insert(
        "security".into(),
        match e.auth {
            Auth::None => json!([]),
            Auth::AccessToken | Auth::AdminToken => json!([{"accessToken": []}]),
            Auth::ServerSignature => json!([{"serverSignature": []}]),
        },
    );
    let path_schema = (e.path_schema)(generator).to_value();
    let path_props = properties(&path_schema, generator);
    let mut parameters: Vec<Value> = e
        .path_params()
        .into_iter()
        .map(|name| {
            let described = path_props
                .get(name)
                .cloned()
                .unwrap_or_else(|| json!({"type": "string"}));
            json!({"name": name, "in": "path", "required": true, "schema": described})
        })
        .collect();
    let request = (e.request_schema)(generator).to_value();
    if e.body_limit == BodyLimit::Media {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/octet-stream": {"schema": request}}}),
        );
    } else if e.method.has_body() {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": request}}}),
        );
    } else {
        let required = required(&request, generator);
        for (name, schema) in properties(&request, generator) {
            parameters.push(json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name),
                "schema": schema,
            }));
        }
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    let mut responses = Map::new();
    let response = (e.response_schema)(generator).to_value();
    if e.name == "WebSocket" {
        responses.insert(
            "101".into(),
            json!({"description": "Switching Protocols: the socket is open."}),
        );
    } else if response.get("format").and_then(Value::as_str) == Some("binary")
        || resolve(&response, generator)
            .and_then(|s| s.get("format"))
            .and_then(Value::as_str)
            == Some("binary")
    {
        let bytes = json!({"application/octet-stream": {"schema": response}});
        responses.insert(
            "200".into(),
            json!({"description": "The bytes.", "content": bytes}),
        );
        responses.insert(
            "206".into(),
            json!({"description": "The part asked for by `Range`.", "content": bytes}),
        );
    } else if e.name == "ApiReference" {
        responses.insert(
            "200".into(),
            json!({"description": "The reference page.", "content": {"text/html": {"schema": {"type": "string"}}}}),
        );
    } else {
        responses.insert(
            "200".into(),
            json!({"description": "Success.", "content": {"application/json": {"schema": response}}}),
        );
    }
    let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    let codes = errcodes(e);
    for code in &codes {
        by_status
            .entry(code.http_status())
            .or_default()
            .push(code.as_str());
    }
    for (status, names) in by_status {
        responses.insert(
            status.to_string(),
            json!({
                "description": names.join(", "),
                "content": {"application/json": {"schema": error_schema}},
            }),
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    op.insert(
        "x-parley-errcodes".into(),
        json!(codes.iter().map(|c| c.as_str()).collect::<Vec<_>>()),
    );
    op.insert("x-parley-rate-limit".into(), json!(e.rate_limit.as_str()));
    Value::Object(op)
}

/// The object schema a `$ref` (or inline schema) points at.
fn resolve<'a>(schema: &'a Value, generator: &'a SchemaGenerator) -> Option<&'a Value> {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.rsplit('/').next()?;
            generator.definitions().get(name)
        }
        None => Some(schema),
    }
}

/// The properties of an object schema, by name.
fn properties(schema: &Value, generator: &SchemaGenerator) -> BTreeMap<String, Value> {
    resolve(schema, generator)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// The required property names of an object schema.
fn required(schema: &Value, generator: &SchemaGenerator) -> Vec<String> {
    resolve(schema, generator)
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_document() -> Value {
        document(
            DocumentInfo {
                title: "t",
                description: "d",
            },
            &crate::endpoints(),
        )
    }

    #[test]
    fn every_declared_endpoint_is_an_operation_with_its_parameters() {
        let doc = client_document();
        for e in crate::endpoints() {
            let op = &doc["paths"][e.path][e.method.as_str().to_ascii_lowercase()];
            assert_eq!(op["operationId"], e.name, "{e:?}");
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            assert_eq!(declared, e.path_params(), "{e:?}");
        }
    }

    #[test]
    fn path_parameter_types_name_exactly_the_template_placeholders() {
        let mut generator = SchemaGenerator::default();
        for e in crate::endpoints() {
            let schema = (e.path_schema)(&mut generator).to_value();
            let mut fields: Vec<String> = properties(&schema, &generator).into_keys().collect();
            let mut names: Vec<String> = e.path_params().iter().map(|s| s.to_string()).collect();
            fields.sort();
            names.sort();
            assert_eq!(fields, names, "{e:?}");
        }
    }

    #[test]
    fn query_parameters_come_from_the_request_of_a_get() {
        let doc = client_document();
        let sync = &doc["paths"]["/_parley/client/v1/sync"]["get"];
        let names: Vec<&str> = sync["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names, ["since", "timeout_ms"]);
        assert!(sync.get("requestBody").is_none());
    }

    #[test]
    fn errors_are_grouped_by_status_with_the_error_body() {
        let doc = client_document();
        let commit = &doc["paths"]["/_parley/client/v1/groups/{group_id}/commit"]["post"];
        assert!(commit["responses"]["409"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("P_STALE_EPOCH")));
        assert!(commit["responses"]["401"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("P_MISSING_TOKEN")));
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
        assert!(doc["components"]["schemas"]["CommitRequest"].is_object());
    }
}
