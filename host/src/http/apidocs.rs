//! `GET /apidocs/`: a readable API reference, rendered on the server from the
//! host's own OpenAPI document. The original service served Swagger UI at
//! this address; this page needs no script and no external asset, so it
//! works air-gapped and cannot drift from the routes (the document is
//! generated from the handlers).

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
code,pre{font-family:ui-monospace,monospace;font-size:13px}pre{background:#f5f5f5;padding:.5rem;overflow-x:auto}\
.op{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}.m{font-weight:700;text-transform:uppercase;margin-right:.5rem}\
.get{color:#0a6}.post{color:#b60}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eee;text-align:left;padding:.25rem .5rem;vertical-align:top}";

/// The page for an OpenAPI document (as JSON).
pub fn page(doc: &Value) -> Markup {
    let title = doc["info"]["title"].as_str().unwrap_or("API");
    let paths = doc["paths"].as_object();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " API reference" }
                style { (STYLE) }
            }
            body {
                h1 { (title) " API reference" }
                @if let Some(d) = doc["info"]["description"].as_str() { p { (d) } }
                p { "Generated from " a href="/openapi.json" { code { "/openapi.json" } } " (OpenAPI "
                    (doc["openapi"].as_str().unwrap_or("3")) ")." }
                @if let Some(paths) = paths {
                    @for (path, item) in paths {
                        @if let Some(ops) = item.as_object() {
                            @for (method, op) in ops {
                                (operation(path, method, op))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn operation(path: &str, method: &str, op: &Value) -> Markup {
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    let responses = op["responses"].as_object().cloned().unwrap_or_default();
    html! {
        div class="op" id=(format!("{method}-{path}")) {
            h2 { span class={"m " (method)} { (method) } code { (path) } }
            @if let Some(summary) = op["summary"].as_str() { p { strong { (summary) } } }
            @if let Some(description) = op["description"].as_str() { p { (description) } }
            @if !params.is_empty() {
                h3 { "Parameters" }
                table {
                    tr { th { "name" } th { "in" } th { "required" } th { "description" } }
                    @for p in &params {
                        tr {
                            td { code { (p["name"].as_str().unwrap_or_default()) } }
                            td { (p["in"].as_str().unwrap_or_default()) }
                            td { (if p["required"].as_bool().unwrap_or(false) { "yes" } else { "no" }) }
                            td { (p["description"].as_str().unwrap_or_default()) }
                        }
                    }
                }
            }
            @if let Some(body) = op["requestBody"]["content"].as_object() {
                h3 { "Request body" }
                @for (media, content) in body {
                    p { code { (media) } }
                    @if !content["example"].is_null() {
                        pre { (serde_json::to_string_pretty(&content["example"]).unwrap_or_default()) }
                    }
                }
            }
            h3 { "Responses" }
            table {
                tr { th { "status" } th { "description" } }
                @for (status, response) in &responses {
                    tr { td { code { (status) } } td { (response["description"].as_str().unwrap_or_default()) } }
                }
            }
        }
    }
}
