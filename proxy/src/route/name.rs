//! A function or relation as a statement names it, spelled as the catalog spells it, so that
//! it can be matched against what the catalog look-up read from `pg_proc` and `pg_class`.

use std::sync::Arc;

use sqlparser::ast::{Ident, ObjectName};

/// `schema.name` or `name`: unquoted parts lower-cased, quoted parts as written. One
/// allocation, shared with the detail of a classification that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogName {
    /// `schema.name`, or `name` when unqualified.
    text: Arc<str>,
    /// Length of the schema part of `text`, when qualified.
    schema_len: Option<usize>,
}

impl CatalogName {
    /// The schema and name (the last two parts) of a call's or relation's name; None for a
    /// name with a part that is not an identifier.
    pub fn of(name: &ObjectName) -> Option<CatalogName> {
        let mut parts = name.0.iter().rev().map(|part| part.as_ident());
        let last = parts.next()??;
        let schema = match parts.next() {
            None => None,
            Some(schema) => Some(schema?),
        };
        Some(CatalogName::from_idents(schema, last))
    }

    /// From an optional schema and a name, as `TABLE schema.name` gives them.
    pub fn from_idents(schema: Option<&Ident>, name: &Ident) -> CatalogName {
        let name = catalog_spelling(name);
        match schema {
            None => CatalogName {
                text: name.into(),
                schema_len: None,
            },
            Some(schema) => {
                let schema = catalog_spelling(schema);
                CatalogName {
                    text: format!("{schema}.{name}").into(),
                    schema_len: Some(schema.len()),
                }
            }
        }
    }

    /// A `[routing]` list entry: `name` or `schema.name`, as the catalog spells them.
    pub(super) fn parse(entry: &str) -> CatalogName {
        let entry = entry.trim();
        CatalogName {
            text: entry.into(),
            schema_len: entry.find('.'),
        }
    }

    pub fn schema(&self) -> Option<&str> {
        self.schema_len.map(|len| &self.text[..len])
    }

    pub fn name(&self) -> &str {
        self.schema_len
            .map_or(&*self.text, |len| &self.text[len + 1..])
    }

    /// The name as a classification's detail.
    pub fn detail(&self) -> Arc<str> {
        Arc::clone(&self.text)
    }
}

/// PostgreSQL folds unquoted identifiers to lower case (ASCII only, in UTF-8 databases).
fn catalog_spelling(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}
