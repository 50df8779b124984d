//! The OpenAPI document at `/openapi.json`: generated from the handlers' annotations, then
//! completed with what the annotations would repeat on every operation (the answers the edge
//! and the extractors give: 401, 408, 413, 415, 422, 429, 503 and the rest, each as
//! `application/problem+json`) and with the text rules the server enforces, written once here
//! as patterns. `.ci/run` holds the server to this document with schemathesis: a request the
//! document allows must not be refused for its shape, one it forbids must be refused.

use serde_json::{Map, Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::config::AuthSettings;

#[derive(OpenApi)]
#[openapi(
    info(title = "orderflow", description = "Event-sourced order processing: the HTTP contract of the web UI and mobile apps.\n\n\
Every error is `application/problem+json` (RFC 9457) with a stable `code`; a 422 lists every bad field in `errors`. \
A method a path does not serve answers 405 with `Allow`. 429 and 503 carry `Retry-After`. \
Request bodies are JSON objects with no unknown fields, no key twice, and no control characters or bidirectional overrides in any text."),
    paths(
        super::orders::place_order, super::orders::get_order, super::orders::list_orders,
        super::orders::cancel_order, super::orders::ship_order, super::orders::deliver_order,
        super::orders::order_events, super::catalog::catalog, super::catalog::restock,
        super::events::list_events, super::analytics::summary,
        super::replays::start_replay, super::replays::replay_status,
        super::dead_letters::list_dead_letters, super::dead_letters::redrive,
        super::dead_letters::discard,
        super::live::stream, super::live::put_installation, super::live::delete_installation,
        super::ops::dev_token, super::ops::auth_config, super::ops::me,
        super::ops::health, super::ops::ready, super::ops::metrics,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document as this server's sign-in makes it: the development login only with
/// development auth, and the provider's `openIdConnect` scheme beside `bearer` when tokens
/// come from one.
pub fn document(auth: &AuthSettings) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    complete(&mut doc);
    if !matches!(auth, AuthSettings::Development)
        && let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut())
    {
        paths.remove("/api/dev/token");
    }
    if let AuthSettings::Oidc(client) = auth
        && let Ok(discovery) = client.verifier.discovery_url()
    {
        doc["components"]["securitySchemes"]["openIdConnect"] =
            json!({"type": "openIdConnect", "openIdConnectUrl": discovery.as_str()});
        for (_, _, operation) in operations(&mut doc) {
            if let Some(security) = operation.get_mut("security").and_then(|s| s.as_array_mut()) {
                // Alternatives: the same bearer token, described either way.
                security.push(json!({"openIdConnect": []}));
            }
        }
    }
    doc
}

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every operation of the document: its path, its method, and the operation object.
fn operations(doc: &mut Value) -> impl Iterator<Item = (String, String, &mut Map<String, Value>)> {
    doc.get_mut("paths")
        .and_then(|p| p.as_object_mut())
        .into_iter()
        .flat_map(|paths| paths.iter_mut())
        .filter_map(|(path, item)| Some((path.clone(), item.as_object_mut()?)))
        .flat_map(|(path, item)| {
            item.iter_mut().filter_map(move |(method, operation)| {
                Some((path.clone(), method.clone(), operation.as_object_mut()?))
            })
        })
}

/// What the annotations leave out because every operation of a kind shares it.
fn complete(doc: &mut Value) {
    contract_rules(doc);
    close_request_bodies(doc);
    links(doc);
    for (_, method, operation) in operations(doc) {
        let secured = operation
            .get("security")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty());
        let body = operation.contains_key("requestBody");
        let parameters: Vec<String> = operation
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("in").and_then(Value::as_str).map(str::to_owned))
            .collect();
        let inputs = body || parameters.iter().any(|at| at == "query" || at == "header");
        let names_a_resource = parameters.iter().any(|at| at == "path");
        let command = !matches!(method.as_str(), "get" | "head");
        let responses = operation
            .entry("responses")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("responses is an object");
        // A problem documented by an annotation is problem+json, whatever utoipa wrote.
        for response in responses.values_mut() {
            let Some(content) = response.get_mut("content").and_then(|c| c.as_object_mut()) else {
                continue;
            };
            if let Some(schema) = content.remove("application/json") {
                let key = if schema.to_string().contains("#/components/schemas/Problem") {
                    PROBLEM_JSON
                } else {
                    "application/json"
                };
                content.insert(key.to_owned(), schema);
            }
        }
        let mut add = |status: &str, description: &str, headers: &[&str]| {
            let response = responses.entry(status).or_insert_with(|| json!({}));
            if response
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                response["description"] = json!(description);
            }
            // Beside what the annotation documents (`/ready`'s checks on 503, say): the
            // edge answers the same status as a problem.
            response["content"][PROBLEM_JSON] =
                json!({"schema": {"$ref": "#/components/schemas/Problem"}});
            for name in headers {
                response["headers"][*name] = header(name);
            }
        };
        if body {
            add("400", "The body is not valid JSON", &[]);
        }
        if secured {
            add(
                "401",
                "No bearer token, or one this server does not accept (the detail says why)",
                &["WWW-Authenticate"],
            );
        }
        if names_a_resource {
            add(
                "404",
                "No such resource, or one the caller may not know of",
                &[],
            );
        }
        add(
            "408",
            "The body did not arrive within the body deadline, or the answer took longer than the request timeout",
            &[],
        );
        if body {
            add("413", "The body is over 64 KiB", &[]);
            add(
                "415",
                "The body is not application/json (or another +json type)",
                &[],
            );
        }
        if inputs {
            add(
                "422",
                "Invalid fields or parameters, all of them listed in `errors`",
                &[],
            );
        }
        if secured && command {
            add(
                "429",
                "Too many commands from this customer; retry after Retry-After seconds",
                &["Retry-After"],
            );
        }
        add(
            "500",
            "A fault of this server's (logged with the request)",
            &[],
        );
        add(
            "503",
            "An engine is down, or a limit of the whole server's is reached (connections, streams, waiters); retry after Retry-After seconds",
            &["Retry-After"],
        );
    }
}

/// Where an answer leads: the order a placement created can be read, cancelled, shipped,
/// delivered and followed; a replay started can be watched. Clients (and schemathesis's
/// stateful phase) follow these from the ids in the answer.
fn links(doc: &mut Value) {
    let order = json!({"id": "$response.body#/order_id"});
    let mut placed = Map::new();
    for (name, operation) in [
        ("ReadOrder", "get_order"),
        ("CancelOrder", "cancel_order"),
        ("ShipOrder", "ship_order"),
        ("DeliverOrder", "deliver_order"),
        ("OrderEvents", "order_events"),
    ] {
        placed.insert(
            name.into(),
            json!({"operationId": operation, "parameters": order}),
        );
    }
    doc["paths"]["/api/orders"]["post"]["responses"]["202"]["links"] = Value::Object(placed);
    doc["paths"]["/api/replays"]["post"]["responses"]["202"]["links"] = json!({
        "ReplayStatus": {"operationId": "replay_status",
            "parameters": {"replay_id": "$response.body#/replay_id"}}
    });
}

/// Request bodies are closed: every object schema a request body reaches gets
/// `additionalProperties: false`, as the server refuses fields it does not know. An optional
/// body (`Option<T>` in an annotation) is a body that may be left out, not a JSON `null`.
fn close_request_bodies(doc: &mut Value) {
    let mut closed = Vec::new();
    for (_, _, operation) in operations(doc) {
        let Some(body) = operation.get_mut("requestBody") else {
            continue;
        };
        let Some(schema) = body.pointer_mut("/content/application~1json/schema") else {
            continue;
        };
        if let Some(ref_only) = schema
            .get("oneOf")
            .and_then(Value::as_array)
            .and_then(|alternatives| {
                alternatives
                    .iter()
                    .find(|a| a.get("$ref").is_some())
                    .filter(|_| alternatives.iter().any(|a| a["type"] == "null"))
            })
            .cloned()
        {
            *schema = ref_only;
            body["required"] = json!(false);
        }
        referenced(&body["content"], &mut closed);
    }
    let mut i = 0;
    while i < closed.len() {
        let name = closed[i].clone();
        let schema = doc["components"]["schemas"][&name].clone();
        referenced(&schema, &mut closed);
        i += 1;
    }
    for name in closed {
        let schema = &mut doc["components"]["schemas"][&name];
        if schema["type"] == "object" {
            schema["additionalProperties"] = json!(false);
        }
    }
}

/// The component schemas `value` refers to, added to `found` once each.
fn referenced(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                && !found.iter().any(|f| f == name)
            {
                found.push(name.to_owned());
            }
            map.values().for_each(|v| referenced(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| referenced(v, found)),
        _ => {}
    }
}

fn header(name: &str) -> Value {
    match name {
        "Retry-After" => json!({
            "description": "Seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 0}
        }),
        _ => json!({
            "description": "`Bearer`: the scheme this API takes",
            "schema": {"type": "string"}
        }),
    }
}

/// A character of one line of text: anything but control characters and bidirectional
/// overrides and isolates (what `body::parse` refuses everywhere, plus tab and line breaks).
const LINE_CHAR: &str = r"[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]";
/// A character of free text over several lines: tab, CR and LF allowed.
const NOTE_CHAR: &str =
    r"[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]";
/// A line character that is not white space (Unicode White_Space, as Rust's `str::trim`).
const VISIBLE_CHAR: &str = r"[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202a-\u202f\u205f\u2066-\u2069\u3000]";

/// How the server reads a text field (see `domain::values::line_of_text`).
#[derive(Clone, Copy)]
enum Text {
    /// One line, trimmed, something left after trimming.
    Line,
    /// One line or nothing (blank is absent).
    OptionalLine,
    /// Free text over several lines, blank is absent.
    Note,
}

/// The text fields of the request bodies: (schema, property, rule, at most this many
/// characters as sent).
const TEXT_FIELDS: &[(&str, &str, Text, usize)] = &[
    ("AddressBody", "name", Text::Line, domain::values::NAME_MAX),
    ("AddressBody", "line1", Text::Line, domain::values::LINE_MAX),
    (
        "AddressBody",
        "line2",
        Text::OptionalLine,
        domain::values::LINE_MAX,
    ),
    ("AddressBody", "city", Text::Line, domain::values::CITY_MAX),
    (
        "AddressBody",
        "postal_code",
        Text::Line,
        domain::values::POSTAL_CODE_MAX,
    ),
    (
        "RedriveBody",
        "event_type",
        Text::Line,
        super::dead_letters::EVENT_TYPE_MAX,
    ),
    (
        "DiscardBody",
        "event_type",
        Text::Line,
        super::dead_letters::EVENT_TYPE_MAX,
    ),
    (
        "DiscardBody",
        "reason",
        Text::Line,
        super::dead_letters::REASON_MAX,
    ),
    (
        "CancelBody",
        "reason",
        Text::Note,
        domain::order::CANCEL_REASON_MAX,
    ),
    (
        "ShipBody",
        "carrier",
        Text::Line,
        domain::order::SHIPMENT_TEXT_MAX,
    ),
    (
        "ShipBody",
        "tracking_number",
        Text::Line,
        domain::order::SHIPMENT_TEXT_MAX,
    ),
    (
        "InstallationBody",
        "push_channel",
        Text::Line,
        super::live::PUSH_CHANNEL_MAX,
    ),
    (
        "DevTokenRequest",
        "customer_id",
        Text::Line,
        domain::values::CUSTOMER_NAME_MAX,
    ),
];

/// The rules the server checks that annotations cannot take from its code: the text fields'
/// patterns and lengths, and the enums of the lists the handlers check against.
fn contract_rules(doc: &mut Value) {
    let statuses: Vec<&str> = domain::order::OrderStatus::ALL
        .map(domain::order::OrderStatus::as_str)
        .to_vec();
    if let Some(status) = doc
        .pointer_mut("/paths/~1api~1orders/get/parameters")
        .and_then(Value::as_array_mut)
        .and_then(|parameters| parameters.iter_mut().find(|p| p["name"] == "status"))
    {
        status["schema"] = json!({"type": "string", "enum": statuses});
    }
    let schemas = &mut doc["components"]["schemas"];
    for (schema, property, text, max) in TEXT_FIELDS {
        let field = &mut schemas[*schema]["properties"][*property];
        let pattern = match text {
            Text::Line => format!("^{LINE_CHAR}*{VISIBLE_CHAR}{LINE_CHAR}*$"),
            Text::OptionalLine => format!("^{LINE_CHAR}*$"),
            Text::Note => format!("^{NOTE_CHAR}*$"),
        };
        field["pattern"] = json!(pattern);
        field["maxLength"] = json!(max);
    }
    // Enums from the lists the server checks against.
    let subscriptions = json!(crate::system::SUBSCRIPTIONS);
    // Optional in the body: `null` is as good as leaving it out.
    let mut or_null = crate::system::SUBSCRIPTIONS.map(|s| json!(s)).to_vec();
    or_null.push(Value::Null);
    for body in ["RedriveBody", "DiscardBody"] {
        schemas[body]["properties"]["subscription"]["enum"] = json!(or_null);
    }
    if let Some(parameter) = doc
        .pointer_mut("/paths/~1api~1dead-letters/get/parameters")
        .and_then(Value::as_array_mut)
        .and_then(|parameters| parameters.iter_mut().find(|p| p["name"] == "subscription"))
    {
        parameter["schema"] = json!({"type": "string", "enum": subscriptions});
    }
    let schemas = &mut doc["components"]["schemas"];
    schemas["InstallationBody"]["properties"]["platform"]["enum"] = json!(super::live::PLATFORMS);
    let projections: Vec<&str> = std::iter::once("all")
        .chain(projections::Projection::ALL.map(projections::Projection::as_str))
        .collect();
    schemas["StartReplay"]["properties"]["projections"]["items"]["enum"] = json!(projections);
    schemas["InstallationBody"]["properties"]["tags"]["items"]["pattern"] =
        json!(super::live::HUB_TAG_PATTERN);
    // Counts from the constants the server checks with.
    schemas["PlaceOrderBody"]["properties"]["lines"]["maxItems"] = json!(domain::order::MAX_LINES);
    schemas["LineBody"]["properties"]["quantity"]["maximum"] = json!(domain::values::Quantity::MAX);
    schemas["RestockBody"]["properties"]["quantity"]["maximum"] =
        json!(domain::inventory::MAX_RESTOCK);
    for body in ["RedriveBody", "DiscardBody"] {
        schemas[body]["properties"]["event_ids"]["maxItems"] =
            json!(super::dead_letters::MAX_EVENT_IDS);
    }
    schemas["AddressBody"]["properties"]["country"]["enum"] = json!(
        domain::values::COUNTRY_CODES
            .split_ascii_whitespace()
            .collect::<Vec<_>>()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        document(&AuthSettings::Development)
    }

    #[test]
    fn every_problem_is_problem_json_and_every_operation_answers_the_edge_statuses() {
        let mut doc = doc();
        let mut checked = 0;
        for (path, method, operation) in operations(&mut doc) {
            let responses = operation["responses"].as_object().unwrap();
            for status in ["408", "500", "503"] {
                assert!(responses.contains_key(status), "{method} {path}: {status}");
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let content = &response["content"];
                    assert!(
                        content[PROBLEM_JSON]["schema"]["$ref"] == "#/components/schemas/Problem",
                        "{method} {path} {status}: {content}"
                    );
                    if path != "/ready" {
                        assert_eq!(
                            content.as_object().unwrap().len(),
                            1,
                            "{method} {path} {status}"
                        );
                    }
                }
            }
            if operation.contains_key("requestBody") {
                for status in ["400", "413", "415", "422"] {
                    assert!(responses.contains_key(status), "{method} {path}: {status}");
                }
            }
            if operation.contains_key("security") {
                assert!(responses.contains_key("401"), "{method} {path}: 401");
            }
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} operations");
    }

    #[test]
    fn query_parameters_are_in_the_query() {
        let doc = doc();
        let list = &doc["paths"]["/api/orders"]["get"]["parameters"];
        let limit = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["in"], "query");
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], 100);
    }

    /// Counts come from the constants the server checks with, not from literals.
    #[test]
    fn counts_carry_the_servers_constants() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        let at = |schema: &str, property: &str, rule: &str| {
            schemas[schema]["properties"][property][rule].clone()
        };
        assert_eq!(
            at("LineBody", "quantity", "maximum"),
            domain::values::Quantity::MAX
        );
        assert_eq!(at("LineBody", "quantity", "minimum"), 1);
        assert_eq!(
            at("RestockBody", "quantity", "maximum"),
            domain::inventory::MAX_RESTOCK
        );
        assert_eq!(
            at("PlaceOrderBody", "lines", "maxItems"),
            domain::order::MAX_LINES
        );
        assert_eq!(
            at("DiscardBody", "event_ids", "maxItems"),
            super::super::dead_letters::MAX_EVENT_IDS
        );
    }

    #[test]
    fn text_fields_carry_the_servers_rules() {
        let doc = doc();
        let name = &doc["components"]["schemas"]["AddressBody"]["properties"]["name"];
        assert_eq!(name["maxLength"], domain::values::NAME_MAX);
        assert!(name["pattern"].as_str().unwrap().starts_with('^'));
        let countries =
            doc["components"]["schemas"]["AddressBody"]["properties"]["country"]["enum"]
                .as_array()
                .unwrap()
                .len();
        assert_eq!(countries, 249);
        let enum_of = |pointer: &str| {
            let values = doc.pointer(pointer).unwrap_or_else(|| panic!("{pointer}"));
            values.as_array().unwrap().len()
        };
        assert_eq!(
            enum_of("/components/schemas/InstallationBody/properties/platform/enum"),
            3
        );
        assert_eq!(
            enum_of("/components/schemas/StartReplay/properties/projections/items/enum"),
            4
        );
        let status = doc["paths"]["/api/orders"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "status")
            .unwrap();
        assert_eq!(status["in"], "query");
        assert_eq!(status["schema"]["enum"].as_array().unwrap().len(), 6);
    }
}
