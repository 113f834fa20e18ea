//! Kubernetes objects from files: `--manifests DIR --check` and tests translate what `kubectl apply -f DIR`
//! would create, without a cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::ByteString;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::ClusterState;

/// Reads every `*.yaml`, `*.yml` and `*.json` file directly in `dir` (in name order) as multi-document
/// YAML and collects the Ingresses, IngressClasses, Services, EndpointSlices and Secrets (also inside
/// `kind: List`). Other kinds are skipped. Objects without a namespace get `default`; a Secret's
/// `stringData` is merged into `data`, as the API server does.
///
/// Every document that cannot be read is reported, as `FILE:LINE:COLUMN: KIND NAMESPACE/NAME: message`
/// where they are known.
pub fn load_dir(dir: &Path) -> Result<ClusterState, Vec<String>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| vec![format!("{}: cannot read directory: {e}", dir.display())])?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    let mut state = ClusterState::default();
    let mut errors = Vec::new();
    for path in files {
        let file = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                if let Err(mut e) = parse_str(&file, &text, &mut state) {
                    errors.append(&mut e);
                }
            }
            Err(e) => errors.push(format!("{file}: cannot read: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(state)
    } else {
        Err(errors)
    }
}

/// Adds the objects in the multi-document YAML `text` to `state`; `file` names it in errors. Documents
/// that parse are added even when others fail.
pub fn parse_str(file: &str, text: &str, state: &mut ClusterState) -> Result<(), Vec<String>> {
    let docs: Vec<Spanned<Value>> = serde_saphyr::from_multiple(text).map_err(|e| {
        let at = match e.location() {
            Some(l) if l.line() > 0 => format!("{file}:{}:{}", l.line(), l.column()),
            _ => file.to_string(),
        };
        vec![format!(
            "{at}: {}",
            first_line(&e.without_snippet().to_string())
        )]
    })?;
    let starts: Vec<Option<usize>> = docs
        .iter()
        .map(|d| {
            d.referenced
                .span()
                .byte_offset()
                .and_then(|o| usize::try_from(o).ok())
        })
        .collect();
    let mut errors = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let doc_text = document_text(text, &starts, i);
        let place = Place {
            file,
            number: i + 1,
            line: doc.referenced.line(),
            column: doc.referenced.column(),
            text: doc_text,
        };
        add(&place, doc.value, state, &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Where a document is: for messages, and its text to point at the exact spot of a type error.
struct Place<'a> {
    file: &'a str,
    number: usize,
    line: u64,
    column: u64,
    text: Option<&'a str>,
}

impl Place<'_> {
    fn at(&self) -> String {
        if self.line > 0 {
            format!("{}:{}:{}", self.file, self.line, self.column)
        } else {
            format!("{}: document {}", self.file, self.number)
        }
    }
}

/// The text of document `i`, from its first node to the `---` line before the next document.
fn document_text<'t>(text: &'t str, starts: &[Option<usize>], i: usize) -> Option<&'t str> {
    let start = (*starts.get(i)?)?;
    let end = match starts.get(i + 1) {
        Some(next) => (*next)?,
        None => text.len(),
    };
    let doc = text.get(start..end)?;
    let mut cut = doc.len();
    let mut offset = 0;
    for line in doc.split_inclusive('\n') {
        if line.starts_with("---") || line.starts_with("...") {
            cut = offset;
            break;
        }
        offset += line.len();
    }
    doc.get(..cut)
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s).trim();
    match line.rfind(" at line ") {
        Some(i) => line[..i].to_string(),
        None => line.to_string(),
    }
}

fn add(place: &Place<'_>, value: Value, state: &mut ClusterState, errors: &mut Vec<String>) {
    let str_at = |ptr: &str| value.pointer(ptr).and_then(Value::as_str).map(String::from);
    let api_version = str_at("/apiVersion").unwrap_or_default();
    let kind = str_at("/kind").unwrap_or_default();
    let what = {
        let name = str_at("/metadata/name").unwrap_or_default();
        match str_at("/metadata/namespace") {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        }
    };
    if !value.is_object() || kind.is_empty() || api_version.is_empty() {
        errors.push(format!(
            "{}: not a Kubernetes object (apiVersion and kind are required)",
            place.at()
        ));
        return;
    }
    match (api_version.as_str(), kind.as_str()) {
        ("networking.k8s.io/v1", "Ingress") => {
            if let Some(mut o) = typed::<Ingress>(place, &what, value, errors) {
                default_namespace(&mut o.metadata.namespace);
                state.ingresses.push(Arc::new(o));
            }
        }
        ("networking.k8s.io/v1", "IngressClass") => {
            if let Some(o) = typed::<IngressClass>(place, &what, value, errors) {
                state.classes.push(Arc::new(o));
            }
        }
        ("v1", "Service") => {
            if let Some(mut o) = typed::<Service>(place, &what, value, errors) {
                default_namespace(&mut o.metadata.namespace);
                state.services.push(Arc::new(o.into()));
            }
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            // Checked against the whole API type, kept as the controller keeps it.
            type Full = k8s_openapi::api::discovery::v1::EndpointSlice;
            if let Some(mut o) = typed::<Full>(place, &what, value, errors) {
                default_namespace(&mut o.metadata.namespace);
                state.slices.push(Arc::new(o.into()));
            }
        }
        ("v1", "Secret") => {
            if let Some(mut o) = typed::<Secret>(place, &what, value, errors) {
                default_namespace(&mut o.metadata.namespace);
                if let Some(strings) = o.string_data.take() {
                    let data = o.data.get_or_insert_with(Default::default);
                    for (k, v) in strings {
                        data.insert(k, ByteString(v.into_bytes()));
                    }
                }
                state.secrets.push(Arc::new(o));
            }
        }
        ("v1", "List") => {
            let items = match value {
                Value::Object(mut map) => map.remove("items"),
                _ => None,
            };
            if let Some(Value::Array(items)) = items {
                let inner = Place {
                    text: None,
                    ..*place
                };
                for item in items {
                    add(&inner, item, state, errors);
                }
            }
        }
        (_, "Ingress" | "IngressClass" | "Service" | "EndpointSlice" | "Secret") => {
            tracing::warn!(at = %place.at(), %api_version, object = %what, "apiVersion not supported; object skipped");
        }
        _ => {
            tracing::debug!(at = %place.at(), %api_version, object = %what, "kind not used; object skipped");
        }
    }
}

fn default_namespace(ns: &mut Option<String>) {
    if ns.as_deref().is_none_or(str::is_empty) {
        *ns = Some("default".to_string());
    }
}

/// Converts `value` to `T`; on failure, parses the document text as `T` again to point at the exact
/// line and column.
fn typed<T: DeserializeOwned>(
    place: &Place<'_>,
    what: &str,
    value: Value,
    errors: &mut Vec<String>,
) -> Option<T> {
    match serde_json::from_value::<T>(value) {
        Ok(o) => Some(o),
        Err(e) => {
            let precise = place
                .text
                .and_then(|text| serde_saphyr::from_str::<T>(text).err())
                .and_then(|err| {
                    let l = err.location()?;
                    if l.line() == 0 || place.line == 0 {
                        return None;
                    }
                    let line = place.line + l.line() - 1;
                    let column = if l.line() == 1 {
                        place.column + l.column() - 1
                    } else {
                        l.column()
                    };
                    Some((
                        format!("{}:{line}:{column}", place.file),
                        first_line(&err.without_snippet().to_string()),
                    ))
                });
            let (at, message) = precise.unwrap_or_else(|| (place.at(), e.to_string()));
            errors.push(format!("{at}: {what}: {message}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_and_skips_unknown_ones() {
        let text = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: dualstack}
spec: {controller: dualstack-ingress.io/controller}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec: {ports: [{port: 80}]}
  - apiVersion: v1
    kind: Secret
    metadata: {name: s, namespace: other}
    stringData: {tls.crt: "text"}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
endpoints: [{addresses: ["fd00::1"]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
"#;
        let mut state = ClusterState::default();
        assert_eq!(parse_str("t.yaml", text, &mut state), Ok(()));
        assert_eq!(state.classes.len(), 1);
        assert_eq!(state.services.len(), 1);
        assert_eq!(state.slices.len(), 1);
        assert_eq!(state.ingresses.len(), 1);
        assert_eq!(state.secrets.len(), 1);
        assert_eq!(
            state.services[0].metadata.namespace.as_deref(),
            Some("default")
        );
        let data = state.secrets[0]
            .data
            .as_ref()
            .and_then(|d| d.get("tls.crt"));
        assert_eq!(data.map(|b| b.0.as_slice()), Some(&b"text"[..]));
    }

    #[test]
    fn type_error_names_file_line_column_kind_and_object() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: prod\nspec:\n  ports:\n    - port: eighty\n";
        let mut state = ClusterState::default();
        let errors = parse_str("dir/svc.yaml", text, &mut state)
            .err()
            .unwrap_or_default();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("dir/svc.yaml:12:"), "{}", errors[0]);
        assert!(errors[0].contains("Service prod/web"), "{}", errors[0]);
        // The good document is still read.
        assert_eq!(state.services.len(), 1);
    }

    #[test]
    fn syntax_error_names_file_line_column() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n";
        let mut state = ClusterState::default();
        let errors = parse_str("bad.yaml", text, &mut state)
            .err()
            .unwrap_or_default();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("bad.yaml:"), "{}", errors[0]);
        let loc: Vec<&str> = errors[0].splitn(4, ':').collect();
        assert!(
            loc.len() == 4 && loc[1].parse::<u64>().is_ok(),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn document_without_kind_is_an_error() {
        let mut state = ClusterState::default();
        let errors = parse_str("x.yaml", "metadata: {name: a}\n", &mut state)
            .err()
            .unwrap_or_default();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("x.yaml:1:1"), "{}", errors[0]);
    }

    #[test]
    fn load_dir_reads_yaml_yml_json_in_name_order_and_reports_all_files() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        let svc =
            |name: &str| format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n");
        let write = |file: &str, text: &str| std::fs::write(dir.path().join(file), text);
        assert!(write("b.yml", &svc("b")).is_ok());
        assert!(write("a.yaml", &svc("a")).is_ok());
        assert!(write(
            "c.json",
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"c"}}"#
        )
        .is_ok());
        assert!(write("notes.txt", "not: read").is_ok());
        let state = load_dir(dir.path()).unwrap_or_default();
        let names: Vec<_> = state
            .services
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);

        assert!(write(
            "d.yaml",
            "apiVersion: v1\nkind: Service\nspec: {ports: 1}\n"
        )
        .is_ok());
        assert!(write("e.yaml", "a: [").is_ok());
        let errors = load_dir(dir.path()).err().unwrap_or_default();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("d.yaml:3:"), "{}", errors[0]);
        assert!(errors[1].contains("e.yaml"), "{}", errors[1]);
        assert!(load_dir(&dir.path().join("missing")).is_err());
    }
}
