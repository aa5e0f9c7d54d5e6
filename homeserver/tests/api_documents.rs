//! A running server serves both APIs' OpenAPI documents and the reference page, and routes
//! every operation the documents list.

mod common;

use common::{Db, TestServer};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_routed_and_the_reference_page_has_the_csp() {
    let server = TestServer::start(Db::Sqlite, "docs.example", "").await;
    let http = reqwest::Client::new();
    let mut operations = 0;
    for document in [
        "/_parley/client/v1/openapi.json",
        "/_parley/federation/v1/openapi.json",
    ] {
        let answer = http
            .get(format!("{}{document}", server.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200, "{document}");
        let doc: Value = answer.json().await.unwrap();
        assert_eq!(doc["openapi"], "3.1.0", "{document}");
        for (path, methods) in doc["paths"].as_object().unwrap() {
            for method in methods.as_object().unwrap().keys() {
                let concrete = path.replace('{', "x").replace('}', "");
                let method =
                    reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
                let reply = http
                    .request(method.clone(), format!("{}{concrete}", server.base_url))
                    .send()
                    .await
                    .unwrap();
                let status = reply.status().as_u16();
                let body: Value = reply.json().await.unwrap_or(Value::Null);
                assert!(
                    body["errcode"] != "P_UNRECOGNIZED",
                    "{method} {path} is documented but not routed ({status} {body})"
                );
                operations += 1;
            }
        }
    }
    assert!(operations > 25, "{operations} operations");
    let page = http
        .get(format!("{}/_parley/docs", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<code>PUT /_parley/client/v1/groups/{group_id}/send/{txn_id}</code>"));
    assert!(html.contains("<code>PUT /_parley/federation/v1/send/{txn_id}</code>"));
    // An undeclared path stays unrecognized.
    let unknown = http
        .get(format!("{}/_parley/client/v1/nope", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
}
