//! Where a value sits in the TOML text: the byte span of the value at a key
//! path, found by walking the parsed document.
//!
//! The serde types keep only a few values [`toml::Spanned`]; every other
//! check names its value by path (`upstreams.web.retry.retries`) and this
//! module finds it. A key that is absent (a default that is out of range, a
//! missing section) gives the header of the deepest table that is there.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a path into the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key<'a> {
    /// A key of a table.
    Name(&'a str),
    /// An element of an array (of tables).
    Index(usize),
}

/// The span of the value at `path` in `text`, or of the deepest table on
/// the way that exists (its header, or the key that opened it); `0..0` when
/// not even the first key is there, or the text does not parse.
pub(super) fn span_of(text: &str, path: &[Key<'_>]) -> Range<usize> {
    let Ok(root) = DeTable::parse(text) else {
        return 0..0;
    };
    let span = root.span();
    let root = Spanned::new(span, DeValue::Table(root.into_inner()));
    let mut here = &root;
    for key in path {
        match child(here.get_ref(), *key) {
            Some(next) => here = next,
            None => break,
        }
    }
    here.span()
}

fn child<'v, 'i>(value: &'v DeValue<'i>, key: Key<'_>) -> Option<&'v Spanned<DeValue<'i>>> {
    match (value, key) {
        (DeValue::Table(table), Key::Name(name)) => table.get(name),
        (DeValue::Array(array), Key::Index(index)) => array.get(index),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::Key::{Index, Name};
    use super::*;

    const TEXT: &str = "[a]\nx = 1\ny.z = 2\n[[a.list]]\nv = 3\n[[a.list]]\nv = 4\n";

    fn at(path: &[Key<'_>]) -> &'static str {
        &TEXT[span_of(TEXT, path)]
    }

    #[test]
    fn finds_values_tables_and_array_elements() {
        assert_eq!(at(&[Name("a"), Name("x")]), "1");
        assert_eq!(at(&[Name("a"), Name("y"), Name("z")]), "2");
        assert_eq!(at(&[Name("a"), Name("list"), Index(1), Name("v")]), "4");
        assert_eq!(at(&[Name("a"), Name("list"), Index(0)]), "[[a.list]]");
    }

    #[test]
    fn a_missing_key_gives_the_deepest_table_there() {
        assert_eq!(at(&[Name("a"), Name("nope")]), "[a]");
        assert_eq!(
            at(&[Name("a"), Name("list"), Index(9), Name("v")]),
            "[[a.list]]"
        );
        assert_eq!(at(&[Name("a"), Name("x"), Name("deeper")]), "1");
        assert_eq!(span_of(TEXT, &[Name("b")]), 0..0);
        assert_eq!(span_of("not toml ===", &[Name("a")]), 0..0);
    }
}
