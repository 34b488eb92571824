//! The generated part of `docs/reference/api.md`: every CustomResourceDefinition of `crds/*.yaml`
//! (in file-name order) rendered as Markdown, from the YAML alone. `tests/crd.rs` compares it with
//! the checked-in page (`UPDATE_GENERATED=1 cargo test --test crd api_reference` rewrites it).

use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

/// The line of `docs/reference/api.md` after which everything is generated.
pub const MARKER: &str = "<!-- Everything below this line is generated from crds/*.yaml by tests/crd.rs; do not edit it. \
Regenerate with: UPDATE_GENERATED=1 cargo test --test crd api_reference -->\n";

/// The generated Markdown for every CustomResourceDefinition in `crds_dir`'s `*.yaml` files,
/// taken in file-name order; `link_prefix` is the path from the page to `crds_dir`'s parent.
pub fn render(crds_dir: &Path, link_prefix: &str) -> String {
    let mut files: Vec<_> = std::fs::read_dir(crds_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", crds_dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let dir_name = crds_dir
        .file_name()
        .expect("a directory name")
        .to_string_lossy();
    let mut out = String::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a CRD file");
        let file_name = file.file_name().unwrap().to_string_lossy();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let crd =
                Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if crd["kind"] == "CustomResourceDefinition" {
                let link = format!("{link_prefix}{dir_name}/{file_name}");
                render_crd(&mut out, &crd, &format!("[{dir_name}/{file_name}]({link})"));
            }
        }
    }
    out
}

fn render_crd(out: &mut String, crd: &Value, source: &str) {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let kind = str_of(&names["kind"]);
    let group = str_of(&spec["group"]);
    let versions = spec["versions"].as_array().expect("spec.versions");
    let _ = writeln!(out, "\n## {kind}\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| group | `{group}` |");
    let _ = writeln!(out, "| kind | `{kind}` |");
    let version_list = versions
        .iter()
        .map(|v| {
            let mut flags = Vec::new();
            if v["served"] == true {
                flags.push("served");
            }
            if v["storage"] == true {
                flags.push("storage");
            }
            if v["deprecated"] == true {
                flags.push("deprecated");
            }
            format!("`{}` ({})", str_of(&v["name"]), flags.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(out, "| versions | {version_list} |");
    let _ = writeln!(out, "| scope | {} |", str_of(&spec["scope"]));
    let _ = writeln!(
        out,
        "| resource | `{}` (singular `{}`) |",
        str_of(&names["plural"]),
        names["singular"]
            .as_str()
            .map_or_else(|| kind.to_lowercase(), str::to_owned)
    );
    let _ = writeln!(out, "| short names | {} |", code_list(&names["shortNames"]));
    let _ = writeln!(out, "| categories | {} |", code_list(&names["categories"]));
    let _ = writeln!(out, "| source | {source} |");
    for version in versions {
        render_version(out, kind, group, version, versions.len() > 1);
    }
}

fn render_version(out: &mut String, kind: &str, group: &str, version: &Value, several: bool) {
    let name = str_of(&version["name"]);
    // With one version the headings name the kind only, so that links to them survive a version's
    // rename; with several each heading names its version.
    let title = |path: &str| -> String {
        let path = if path.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{path}")
        };
        if several {
            format!("`{path}` ({name})")
        } else {
            format!("`{path}`")
        }
    };
    let _ = writeln!(out, "\n### {kind} {group}/{name}\n");
    let subresources: Vec<&str> = version["subresources"]
        .as_object()
        .map(|s| s.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "`apiVersion: {group}/{name}`, `kind: {kind}`. Subresources: {}.",
        if subresources.is_empty() {
            "none".to_owned()
        } else {
            subresources
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    if let Some(warning) = version["deprecationWarning"].as_str() {
        let _ = writeln!(out, "\nDeprecated: {}", cell(warning));
    }
    if let Some(columns) = version["additionalPrinterColumns"].as_array() {
        let _ = writeln!(
            out,
            "\nColumns of `kubectl get` (those marked wide only with `-o wide`):\n"
        );
        // The description column only when a column has a description.
        let described = columns.iter().any(|c| c["description"].is_string());
        let _ = writeln!(
            out,
            "| column | type | JSON path | shown |{}\n|---|---|---|---|{}",
            if described { " description |" } else { "" },
            if described { "---|" } else { "" }
        );
        for column in columns {
            let shown = if column["priority"].as_i64().unwrap_or(0) > 0 {
                "wide"
            } else {
                "always"
            };
            let description = column["description"].as_str().map(cell);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {shown} |{}",
                str_of(&column["name"]),
                str_of(&column["type"]),
                tcode(str_of(&column["jsonPath"])),
                if described {
                    format!(" {} |", description.unwrap_or_default())
                } else {
                    String::new()
                }
            );
        }
    }
    let schema = &version["schema"]["openAPIV3Schema"];
    let mut levels = Vec::new();
    collect_levels(schema, String::new(), &mut levels);
    for (path, object) in levels {
        let _ = writeln!(out, "\n#### {}\n", title(&path));
        if let Some(description) = object["description"].as_str() {
            let _ = writeln!(out, "{}\n", paragraph(description));
        }
        let required: Vec<&str> = object["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut rules = rules_of(object, None);
        let _ = writeln!(
            out,
            "| field | type | required | description |\n|---|---|---|---|"
        );
        for (field, schema) in object["properties"].as_object().expect("properties") {
            let field_path = join(&path, field);
            let level = level_of(schema).map(|(suffix, _)| title(&format!("{field_path}{suffix}")));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                tcode(&field_path),
                type_cell(schema, level.as_deref()),
                if required.contains(&field.as_str()) {
                    "yes"
                } else {
                    "no"
                },
                schema["description"].as_str().map(cell).unwrap_or_default()
            );
            // Rules on a field that has no section of its own are listed with its object's.
            if level.is_none() {
                rules.extend(rules_of(schema, Some(field)));
                if let Some(items) = schema.get("items") {
                    rules.extend(rules_of(items, Some(&format!("{field}[]"))));
                }
            }
        }
        if !rules.is_empty() {
            let _ = writeln!(
                out,
                "\nValidation rules (CEL, checked at admission; the message is what the API server answers):\n"
            );
            for rule in rules {
                let _ = writeln!(out, "- {rule}");
            }
        }
    }
}

/// The object with properties a field's schema is, or holds as its items: (path suffix, object).
fn level_of(schema: &Value) -> Option<(&'static str, &Value)> {
    if schema["properties"].is_object() {
        Some(("", schema))
    } else if schema["items"]["properties"].is_object() {
        Some(("[]", &schema["items"]))
    } else {
        None
    }
}

/// Every object level of a schema with its path, depth first in field order.
fn collect_levels<'a>(schema: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    out.push((path.clone(), schema));
    for (field, property) in schema["properties"].as_object().expect("properties") {
        if let Some((suffix, object)) = level_of(property) {
            collect_levels(object, format!("{}{suffix}", join(&path, field)), out);
        }
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// The `x-kubernetes-validations` of a schema as list items: the message (or how it is computed),
/// prefixed with the field it is on when that has no section of its own.
fn rules_of(schema: &Value, field: Option<&str>) -> Vec<String> {
    let Some(rules) = schema["x-kubernetes-validations"].as_array() else {
        return Vec::new();
    };
    rules
        .iter()
        .map(|rule| {
            let message = if let Some(message) = rule["message"].as_str() {
                paragraph(message)
            } else if let Some(expression) = rule["messageExpression"].as_str() {
                format!("(message computed by {})", code(expression))
            } else {
                format!("failed rule: {}", code(str_of(&rule["rule"])))
            };
            match field {
                Some(field) => format!("{}: {message}", code(field)),
                None => message,
            }
        })
        .collect()
}

/// A field's type with everything the schema constrains it by.
fn type_cell(schema: &Value, level: Option<&str>) -> String {
    let mut parts = vec![type_name(schema)];
    if let Some(title) = level {
        parts[0] = format!("{} ([{title}](#{}))", parts[0], anchor(title));
    }
    if let Some(values) = schema["enum"].as_array() {
        parts.push(format!(
            "one of {}",
            values
                .iter()
                .map(|v| tcode(&scalar(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(default) = schema.get("default") {
        parts.push(format!("default {}", tcode(&scalar(default))));
    }
    for (key, label) in [
        ("minimum", "minimum"),
        ("maximum", "maximum"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("minProperties", "min properties"),
        ("maxProperties", "max properties"),
        ("multipleOf", "multiple of"),
    ] {
        if let Some(value) = schema.get(key) {
            let exclusive = match key {
                "minimum" if schema["exclusiveMinimum"] == true => " (exclusive)",
                "maximum" if schema["exclusiveMaximum"] == true => " (exclusive)",
                _ => "",
            };
            parts.push(format!("{label} {value}{exclusive}"));
        }
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        parts.push(format!("pattern {}", tcode(pattern)));
    }
    if let Some(list_type) = schema["x-kubernetes-list-type"].as_str() {
        let mut part = format!("list-type {}", tcode(list_type));
        if let Some(keys) = schema["x-kubernetes-list-map-keys"].as_array() {
            let _ = write!(part, ", keys {}", code_list(&Value::Array(keys.clone())));
        }
        parts.push(part);
    }
    if let Some(map_type) = schema["x-kubernetes-map-type"].as_str() {
        parts.push(format!("map-type {}", tcode(map_type)));
    }
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        parts.push("unknown fields kept".to_owned());
    }
    if schema["x-kubernetes-embedded-resource"] == true {
        parts.push("an embedded object".to_owned());
    }
    parts.join("; ")
}

/// `string`, `string (date-time)`, `integer (int64)`, `array of string`, `map of string`, ...
fn type_name(schema: &Value) -> String {
    if schema["x-kubernetes-int-or-string"] == true {
        return "integer or string".to_owned();
    }
    let base = schema["type"].as_str().unwrap_or("any");
    let name = match base {
        "array" => format!("array of {}", type_name(&schema["items"])),
        "object" if schema["additionalProperties"].is_object() => {
            format!("map of {}", type_name(&schema["additionalProperties"]))
        }
        other => other.to_owned(),
    };
    match schema["format"].as_str() {
        Some(format) => format!("{name} ({format})"),
        None => name,
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, found {v}"))
}

fn code_list(v: &Value) -> String {
    match v.as_array() {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|i| tcode(&scalar(i)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".to_owned(),
    }
}

/// Inline code: a backtick in the text lengthens the fence.
fn code(text: &str) -> String {
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

/// Inline code in a table cell: `|` escaped (GitHub reads `\|` in a table's code span as `|`).
fn tcode(text: &str) -> String {
    code(text).replace('|', "\\|")
}

/// A description as one line of Markdown: lines joined, `|` escaped, and `<` outside code spans
/// written as `&lt;` so that `<name>` is text, not HTML.
fn paragraph(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(joined.len());
    let mut in_code = false;
    for c in joined.chars() {
        match c {
            '`' => {
                in_code = !in_code;
                out.push(c);
            }
            '<' if !in_code => out.push_str("&lt;"),
            _ => out.push(c),
        }
    }
    out
}

fn cell(text: &str) -> String {
    paragraph(text).replace('|', "\\|")
}

/// GitHub's anchor of a heading (`tests/docs_yaml.rs` checks every link with it): code marks
/// dropped, lower case, punctuation other than `-` and `_` dropped, spaces as `-`.
pub fn anchor(heading: &str) -> String {
    heading
        .replace('`', "")
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}
