//! The x402 v2 `bazaar` discovery extension, shaped like `@x402/extensions` 2.27.0 produces and
//! reads it.
//!
//! A provider declares a route's input and output ([`DiscoveryDeclaration`]) and sends
//! `{"bazaar": {"info": ..., "schema": ...}}` in the `extensions` of every `PAYMENT-REQUIRED`
//! ([`DiscoveryDeclaration::extensions`]): `info` says how to call the route (method, body type
//! and an example body, or query parameters) and what it answers (an example), `schema` is a
//! JSON Schema 2020-12 document that validates `info` (the route's input schema is embedded at
//! `properties.input.properties.body`, its output schema at
//! `properties.output.properties.example`). The method is fixed in both, as the official
//! resource server's `enrichDeclaration` does.
//!
//! A facilitator reads the extension back from a payment ([`BazaarExtension::from_extensions`],
//! [`BazaarExtension::check`]) and lists what was paid for on `GET /discovery/resources`
//! ([`DiscoveryResourcesResponse`], the official `DiscoveryResourcesResponse` type).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::x402::PaymentRequirements;

/// The extension's key in an `extensions` object.
pub const BAZAAR: &str = "bazaar";

/// The JSON Schema dialect of the extension's `schema`.
pub const JSON_SCHEMA_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// The `type` of an HTTP resource (`info.input.type`, a discovered resource's `type`).
pub const RESOURCE_TYPE_HTTP: &str = "http";

/// An HTTP method a discoverable route is called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `GET` (input in the query string).
    Get,
    /// `HEAD` (input in the query string).
    Head,
    /// `DELETE` (input in the query string).
    Delete,
    /// `POST` (input in the body).
    Post,
    /// `PUT` (input in the body).
    Put,
    /// `PATCH` (input in the body).
    Patch,
}

impl HttpMethod {
    /// The method's name, upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Delete => "DELETE",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
        }
    }

    /// Whether the method carries its input in a body (`POST`, `PUT`, `PATCH`).
    pub fn has_body(self) -> bool {
        matches!(self, Self::Post | Self::Put | Self::Patch)
    }

    /// Parses an upper-case method name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "DELETE" => Self::Delete,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            _ => return None,
        })
    }
}

impl std::fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a body route's input is encoded (`info.input.bodyType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BodyType {
    /// `json`.
    Json,
    /// `form-data`.
    FormData,
    /// `text`.
    Text,
}

impl BodyType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::FormData => "form-data",
            Self::Text => "text",
        }
    }
}

/// Where a route takes its input, with an example and the JSON Schema of that input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryInput {
    /// In the request body (for `POST`, `PUT`, `PATCH`).
    Body {
        /// The body's encoding.
        body_type: BodyType,
        /// An example body (`info.input.body`).
        example: Value,
        /// The JSON Schema of the body.
        schema: Value,
    },
    /// In the query string (for `GET`, `HEAD`, `DELETE`).
    Query {
        /// Example query parameters (`info.input.queryParams`), an object.
        example: Value,
        /// The JSON Schema keywords of the query parameters object (`properties`, `required`,
        /// ...), merged into `{"type": "object"}`.
        schema: Value,
    },
}

/// What a route answers: an example and, optionally, its JSON Schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryOutput {
    /// An example answer (`info.output.example`), an object.
    pub example: Value,
    /// The JSON Schema keywords of the answer, merged into `{"type": "object"}`.
    pub schema: Option<Value>,
}

/// A route's discovery declaration: the `declareDiscoveryExtension` configuration of the
/// official package, with the method fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryDeclaration {
    /// The method the route is called with.
    pub method: HttpMethod,
    /// Its input.
    pub input: DiscoveryInput,
    /// Its output, when declared.
    pub output: Option<DiscoveryOutput>,
}

/// A declaration that cannot be advertised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeclarationError {
    /// A body input on a method without a body, or query input on one with a body.
    #[error("{method} takes its input {expected}, not {got}")]
    MethodMismatch {
        /// The declared method.
        method: HttpMethod,
        /// Where that method takes its input.
        expected: &'static str,
        /// Where the declaration puts it.
        got: &'static str,
    },
    /// An example or schema that must be a JSON object is not one.
    #[error("{field} must be a JSON object")]
    NotAnObject {
        /// The declaration's field.
        field: &'static str,
    },
}

impl DiscoveryDeclaration {
    /// A `POST` route taking a JSON body.
    pub fn post_json(example: Value, schema: Value) -> Self {
        Self {
            method: HttpMethod::Post,
            input: DiscoveryInput::Body {
                body_type: BodyType::Json,
                example,
                schema,
            },
            output: None,
        }
    }

    /// A `GET` route taking query parameters.
    pub fn get_query(example: Value, schema: Value) -> Self {
        Self {
            method: HttpMethod::Get,
            input: DiscoveryInput::Query { example, schema },
            output: None,
        }
    }

    /// The same declaration with a JSON output example and schema.
    pub fn with_output(mut self, example: Value, schema: Option<Value>) -> Self {
        self.output = Some(DiscoveryOutput { example, schema });
        self
    }

    /// Checks what the official package requires of a declaration: body input only on body
    /// methods, query input only on the others, objects where objects are expected.
    pub fn validate(&self) -> Result<(), DeclarationError> {
        let (got, objects): (&'static str, Vec<(&'static str, &Value)>) = match &self.input {
            DiscoveryInput::Body { schema, .. } => ("in the body", vec![("input schema", schema)]),
            DiscoveryInput::Query { example, schema } => (
                "in the query string",
                vec![("query example", example), ("query schema", schema)],
            ),
        };
        let expected = if self.method.has_body() {
            "in the body"
        } else {
            "in the query string"
        };
        if got != expected {
            return Err(DeclarationError::MethodMismatch {
                method: self.method,
                expected,
                got,
            });
        }
        let output = self.output.iter().flat_map(|o| {
            std::iter::once(("output example", &o.example))
                .chain(o.schema.iter().map(|s| ("output schema", s)))
        });
        for (field, value) in objects.into_iter().chain(output) {
            if !value.is_object() {
                return Err(DeclarationError::NotAnObject { field });
            }
        }
        Ok(())
    }

    /// The `bazaar` extension: `info` (the example call) and `schema` (a JSON Schema 2020-12
    /// document validating `info`), as `declareDiscoveryExtension` builds it and the official
    /// resource server's `enrichDeclaration` fixes the method.
    pub fn extension(&self) -> BazaarExtension {
        let method = self.method.as_str();
        let mut input = Map::new();
        input.insert("type".into(), json!(RESOURCE_TYPE_HTTP));
        input.insert("method".into(), json!(method));
        let mut input_props = Map::new();
        input_props.insert(
            "type".into(),
            json!({"type": "string", "const": RESOURCE_TYPE_HTTP}),
        );
        input_props.insert("method".into(), json!({"type": "string", "enum": [method]}));
        let required = match &self.input {
            DiscoveryInput::Body {
                body_type,
                example,
                schema,
            } => {
                input.insert("bodyType".into(), json!(body_type.as_str()));
                input.insert("body".into(), example.clone());
                input_props.insert(
                    "bodyType".into(),
                    json!({"type": "string", "enum": ["json", "form-data", "text"]}),
                );
                input_props.insert("body".into(), schema.clone());
                json!(["type", "method", "bodyType", "body"])
            }
            DiscoveryInput::Query { example, schema } => {
                input.insert("queryParams".into(), example.clone());
                input_props.insert("queryParams".into(), object_schema(schema));
                json!(["type", "method"])
            }
        };
        let mut info = Map::new();
        info.insert("input".into(), Value::Object(input));
        let mut props = Map::new();
        props.insert(
            "input".into(),
            json!({
                "type": "object",
                "properties": input_props,
                "required": required,
                "additionalProperties": false,
            }),
        );
        if let Some(output) = &self.output {
            info.insert(
                "output".into(),
                json!({"type": "json", "example": output.example}),
            );
            let example_schema = output
                .schema
                .as_ref()
                .map_or_else(|| json!({"type": "object"}), object_schema);
            props.insert(
                "output".into(),
                json!({
                    "type": "object",
                    "properties": {"type": {"type": "string"}, "example": example_schema},
                    "required": ["type"],
                }),
            );
        }
        BazaarExtension {
            info: Value::Object(info),
            schema: json!({
                "$schema": JSON_SCHEMA_2020_12,
                "type": "object",
                "properties": props,
                "required": ["input"],
            }),
            route_template: None,
        }
    }

    /// `{"bazaar": extension}`: the `extensions` object of a `PAYMENT-REQUIRED`.
    pub fn extensions(&self) -> Value {
        let mut map = Map::new();
        map.insert(
            BAZAAR.into(),
            serde_json::to_value(self.extension()).unwrap_or(Value::Null),
        );
        Value::Object(map)
    }
}

/// `{"type": "object", ...keywords}` (the official package's way of merging a schema given for
/// an object).
fn object_schema(keywords: &Value) -> Value {
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    if let Some(keywords) = keywords.as_object() {
        schema.extend(keywords.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Value::Object(schema)
}

/// The `bazaar` extension as sent: what to call and the schema that validates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BazaarExtension {
    /// The example call: `{"input": {...}, "output": {...}}`.
    pub info: Value,
    /// A JSON Schema 2020-12 document validating `info`.
    pub schema: Value,
    /// A dynamic route's template (`/users/:id`), when the server sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_template: Option<String>,
}

/// A `bazaar` extension a facilitator does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BazaarError {
    /// Not `{"info": object, "schema": object}`.
    #[error("the bazaar extension is malformed: {0}")]
    Malformed(String),
    /// `info.input` breaks a rule of the official `validateDiscoveryExtensionSpec`.
    #[error("the bazaar extension's info is invalid: {0}")]
    InvalidInfo(String),
    /// The schema refers outside itself (`$ref` / `$id` not starting with `#`), which the
    /// official validator refuses.
    #[error("the bazaar extension's schema must not contain external $ref/$id references")]
    ExternalReference,
}

impl BazaarExtension {
    /// The `bazaar` entry of an `extensions` object: `None` when there is none, an error when it
    /// does not parse.
    pub fn from_extensions(extensions: Option<&Value>) -> Option<Result<Self, BazaarError>> {
        let raw = extensions?.get(BAZAAR)?;
        Some(
            serde_json::from_value::<Self>(raw.clone())
                .map_err(|e| BazaarError::Malformed(e.to_string()))
                .and_then(|ext| ext.check().map(|()| ext)),
        )
    }

    /// The checks of the official `validateDiscoveryExtensionSpec` and of the external-reference
    /// rule of `validateDiscoveryExtension` (the schema itself is not evaluated here; the
    /// official package's Ajv check of our own extension is in the interop tests).
    pub fn check(&self) -> Result<(), BazaarError> {
        if !self.schema.is_object() {
            return Err(BazaarError::Malformed("schema is not an object".into()));
        }
        if has_external_reference(&self.schema) {
            return Err(BazaarError::ExternalReference);
        }
        let input = self
            .info
            .get("input")
            .and_then(Value::as_object)
            .ok_or_else(|| BazaarError::InvalidInfo("missing or invalid info.input".into()))?;
        match input.get("type").and_then(Value::as_str) {
            Some(RESOURCE_TYPE_HTTP) => {
                let method = match input.get("method") {
                    None => None,
                    Some(m) => Some(m.as_str().and_then(HttpMethod::parse).ok_or_else(|| {
                        BazaarError::InvalidInfo(format!(
                            "info.input.method must be one of GET, HEAD, DELETE, POST, PUT, \
                             PATCH, got {m}"
                        ))
                    })?),
                };
                if let Some(body_type) = input.get("bodyType") {
                    serde_json::from_value::<BodyType>(body_type.clone()).map_err(|_| {
                        BazaarError::InvalidInfo(format!(
                            "info.input.bodyType must be one of json, form-data, text, got \
                             {body_type}"
                        ))
                    })?;
                    if let Some(method) = method.filter(|m| !m.has_body()) {
                        return Err(BazaarError::InvalidInfo(format!(
                            "info.input.bodyType is set but method {method} is not a body \
                             method (POST, PUT, PATCH)"
                        )));
                    }
                }
                Ok(())
            }
            Some("mcp") => {
                let named = input
                    .get("toolName")
                    .and_then(Value::as_str)
                    .is_some_and(|name| !name.is_empty());
                if !named || !input.get("inputSchema").is_some_and(Value::is_object) {
                    return Err(BazaarError::InvalidInfo(
                        "an mcp input needs a toolName and an inputSchema object".into(),
                    ));
                }
                Ok(())
            }
            other => Err(BazaarError::InvalidInfo(format!(
                "info.input.type must be \"http\" or \"mcp\", got {}",
                other.map_or_else(|| "nothing".to_owned(), |t| format!("{t:?}"))
            ))),
        }
    }

    /// `info.input.type` (`http` or `mcp`).
    pub fn input_type(&self) -> Option<&str> {
        self.info.pointer("/input/type").and_then(Value::as_str)
    }

    /// `info.input.method`, for an HTTP resource.
    pub fn method(&self) -> Option<&str> {
        self.info.pointer("/input/method").and_then(Value::as_str)
    }
}

fn has_external_reference(node: &Value) -> bool {
    match node {
        Value::Array(items) => items.iter().any(has_external_reference),
        Value::Object(map) => map.iter().any(|(key, value)| {
            ((key == "$ref" || key == "$id") && !value.as_str().is_some_and(|s| s.starts_with('#')))
                || has_external_reference(value)
        }),
        _ => false,
    }
}

/// One resource in a facilitator's catalog (the official `DiscoveryResource`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryResource {
    /// The resource URL (origin and path, no query).
    pub resource: String,
    /// The protocol type (`http`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The x402 version the resource was paid with.
    pub x402_version: u8,
    /// The ways it was paid for.
    pub accepts: Vec<PaymentRequirements>,
    /// When it was last paid for, ISO 8601 (UTC).
    pub last_updated: String,
    /// Its description, from the payment's resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its MIME type, from the payment's resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Extension payloads echoed from the payment (`{"bazaar": {...}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

impl DiscoveryResource {
    /// The resource's `bazaar` extension, when it carries a valid one.
    pub fn bazaar(&self) -> Option<BazaarExtension> {
        BazaarExtension::from_extensions(self.extensions.as_ref())?.ok()
    }
}

/// The `pagination` of a [`DiscoveryResourcesResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pagination {
    /// The most items this page could hold.
    pub limit: u64,
    /// Items skipped before this page.
    pub offset: u64,
    /// Items matching the query, all pages together.
    pub total: u64,
}

/// The answer of `GET /discovery/resources` (the official `DiscoveryResourcesResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryResourcesResponse {
    /// 2.
    pub x402_version: u8,
    /// This page of resources.
    pub items: Vec<DiscoveryResource>,
    /// Where the page is.
    pub pagination: Pagination,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    fn declaration() -> DiscoveryDeclaration {
        DiscoveryDeclaration::post_json(
            json!({"prompt": "hi"}),
            json!({"type": "object", "properties": {"prompt": {"type": "string"}},
                   "required": ["prompt"]}),
        )
        .with_output(json!({"completion": "x"}), None)
    }

    #[test]
    fn a_post_declaration_builds_the_official_body_shape_with_the_method_fixed() {
        let ext = declaration().extension();
        assert_eq!(
            ext.info,
            json!({"input": {"type": "http", "method": "POST", "bodyType": "json",
                             "body": {"prompt": "hi"}},
                   "output": {"type": "json", "example": {"completion": "x"}}})
        );
        assert_eq!(ext.schema["$schema"], JSON_SCHEMA_2020_12);
        let input = &ext.schema["properties"]["input"];
        assert_eq!(input["properties"]["method"]["enum"], json!(["POST"]));
        assert_eq!(input["properties"]["body"]["required"], json!(["prompt"]));
        assert_eq!(input["additionalProperties"], json!(false));
        assert_eq!(ext.check(), Ok(()));
        let extensions = declaration().extensions();
        assert_eq!(
            BazaarExtension::from_extensions(Some(&extensions)),
            Some(Ok(ext))
        );
    }

    #[test]
    fn a_get_declaration_puts_its_input_in_query_params() {
        let ext = DiscoveryDeclaration::get_query(
            json!({"city": "Paris"}),
            json!({"properties": {"city": {"type": "string"}}}),
        )
        .extension();
        assert_eq!(
            ext.info,
            json!({"input": {"type": "http", "method": "GET", "queryParams": {"city": "Paris"}}})
        );
        let params = &ext.schema["properties"]["input"]["properties"]["queryParams"];
        assert_eq!(params["type"], "object");
        assert_eq!(params["properties"]["city"]["type"], "string");
        assert_eq!(ext.check(), Ok(()));
    }

    #[test]
    fn a_declaration_whose_input_does_not_fit_its_method_is_refused() {
        let mut get_with_body = declaration();
        get_with_body.method = HttpMethod::Get;
        assert!(matches!(
            get_with_body.validate(),
            Err(DeclarationError::MethodMismatch { .. })
        ));
        let non_object = DiscoveryDeclaration::get_query(json!([1]), json!({}));
        assert_eq!(
            non_object.validate(),
            Err(DeclarationError::NotAnObject {
                field: "query example"
            })
        );
        assert_eq!(declaration().validate(), Ok(()));
    }

    #[test]
    fn extensions_that_break_the_official_rules_are_refused_with_the_reason() {
        let bad = |ext: Value| BazaarExtension::from_extensions(Some(&json!({"bazaar": ext})));
        assert!(matches!(
            bad(json!({"info": {}})),
            Some(Err(BazaarError::Malformed(_)))
        ));
        assert!(matches!(
            bad(json!({"info": {"input": {"type": "ftp"}}, "schema": {}})),
            Some(Err(BazaarError::InvalidInfo(_)))
        ));
        assert!(matches!(
            bad(
                json!({"info": {"input": {"type": "http", "method": "GET", "bodyType": "json"}},
                       "schema": {}})
            ),
            Some(Err(BazaarError::InvalidInfo(_)))
        ));
        assert_eq!(
            bad(json!({"info": {"input": {"type": "http"}},
                       "schema": {"properties": {"a": {"$ref": "https://evil/x"}}}})),
            Some(Err(BazaarError::ExternalReference))
        );
        assert_eq!(BazaarExtension::from_extensions(Some(&json!({}))), None);
        assert_eq!(BazaarExtension::from_extensions(None), None);
    }
}
