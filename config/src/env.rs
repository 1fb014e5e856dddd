//! Environment overrides: `CASCADE_<SECTION>__<FIELD>[__<SUBFIELD>]=value` replaces one field.
//!
//! A value is typed by the field it replaces: where the default is a string the value is taken
//! verbatim, elsewhere it is read as a TOML value (`8`, `true`, `["a:9092"]`) and, failing
//! that, as a string (so `CASCADE_EDGE__SHUTDOWN_GRACE=5s` works).

use toml::{Table, Value};

const PREFIX: &str = "CASCADE_";

/// One `CASCADE_A__B=value` variable.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Override {
    pub(crate) var: String,
    pub(crate) path: Vec<String>,
    pub(crate) raw: String,
}

impl Override {
    pub(crate) fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// Picks the override variables out of an environment. Variables with the prefix but no `__`
/// (e.g. `CASCADE_CACHE`) belong to scripts, not to the config, and are left alone.
pub(crate) fn collect(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, String> {
    let mut out = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!(
                "environment {var}: empty name between '__' separators (write CASCADE_<SECTION>__<FIELD>)"
            ));
        }
        out.push(Override { var, path, raw });
    }
    out.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(out)
}

/// Writes the overrides into the parsed file, typing each value by `defaults`.
pub(crate) fn apply(
    mut doc: Table,
    overrides: &[Override],
    defaults: &Table,
) -> Result<Table, String> {
    for o in overrides {
        let value = if lookup(defaults, &o.path).is_some_and(Value::is_str) {
            Value::String(o.raw.clone())
        } else {
            parse_value(&o.raw)
        };
        let (last, parents) = o
            .path
            .split_last()
            .ok_or_else(|| format!("environment {}: no field named", o.var))?;
        let mut table = &mut doc;
        for key in parents {
            let entry = table
                .entry(key.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            table = entry.as_table_mut().ok_or_else(|| {
                format!(
                    "environment {}: {} is not a section, it cannot have fields",
                    o.var, key
                )
            })?;
        }
        table.insert(last.clone(), value);
    }
    Ok(doc)
}

fn lookup<'a>(table: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(first)?;
    if rest.is_empty() {
        Some(value)
    } else {
        lookup(value.as_table()?, rest)
    }
}

fn parse_value(raw: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_double_underscore_variables_are_overrides() {
        let o = collect(vars(&[
            ("CASCADE_CACHE", "/x"),
            ("CASCADE_PURGE_BUS__LISTEN", "1.2.3.4:5"),
            ("HOME", "/"),
        ]))
        .unwrap();
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].path, ["purge_bus", "listen"]);
    }

    #[test]
    fn empty_segment_is_an_error() {
        assert!(
            collect(vars(&[("CASCADE_EDGE____LISTEN", "x")]))
                .unwrap_err()
                .contains("CASCADE_EDGE____LISTEN")
        );
    }

    #[test]
    fn values_are_typed_by_the_default() {
        let defaults: Table = toml::from_str("[s]\nname = \"x\"\ncount = 1\n").unwrap();
        let o = collect(vars(&[
            ("CASCADE_S__NAME", "true"),
            ("CASCADE_S__COUNT", "7"),
            ("CASCADE_S__LIST", "[\"a\", \"b\"]"),
            ("CASCADE_S__GRACE", "5s"),
        ]))
        .unwrap();
        let t = apply(Table::new(), &o, &defaults).unwrap();
        let s = t["s"].as_table().unwrap();
        assert_eq!(s["name"], Value::String("true".into()));
        assert_eq!(s["count"], Value::Integer(7));
        assert_eq!(s["list"].as_array().unwrap().len(), 2);
        assert_eq!(s["grace"], Value::String("5s".into()));
    }

    #[test]
    fn a_field_cannot_become_a_section() {
        let doc: Table = toml::from_str("[s]\nname = \"x\"\n").unwrap();
        let o = collect(vars(&[("CASCADE_S__NAME__INNER", "1")])).unwrap();
        assert!(
            apply(doc, &o, &Table::new())
                .unwrap_err()
                .contains("not a section")
        );
    }
}
