//! The key walker: typed reads of one TOML section that record a [`Problem`] for each
//! missing, mistyped, out-of-range or unknown key and carry on, so that one pass over a
//! file reports every mistake in it.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use toml::{Table, Value};

use super::Problem;

/// The outcome of reading one key.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Field<T> {
    /// The key is not in the file.
    Absent,
    /// The key is present but its value was rejected, and a problem was recorded.
    Invalid,
    Valid(T),
}

impl<T> Field<T> {
    /// Returns the value, `default` when the key is absent, or `None` when it was rejected.
    pub(super) fn or_default(self, default: T) -> Option<T> {
        match self {
            Field::Absent => Some(default),
            Field::Invalid => None,
            Field::Valid(value) => Some(value),
        }
    }
}

/// One `[section]` of the file being read, with the problem list it reports into.
pub(super) struct Section<'a> {
    name: &'static str,
    table: Option<&'a Table>,
    known_keys: &'static [&'static str],
    read_keys: BTreeSet<&'static str>,
    problems: &'a mut Vec<Problem>,
}

impl<'a> Section<'a> {
    /// Starts reading `name` from the root table. A missing section reads as empty, and a
    /// value that is not a table is recorded as a problem and then also reads as empty.
    pub(super) fn open(
        root: &'a Table,
        name: &'static str,
        known_keys: &'static [&'static str],
        problems: &'a mut Vec<Problem>,
    ) -> Self {
        let table = match root.get(name) {
            None => None,
            Some(Value::Table(table)) => Some(table),
            Some(other) => {
                problems.push(Problem::new(
                    name,
                    format!(
                        "expected a table written as [{name}], found {}",
                        describe(other)
                    ),
                ));
                None
            }
        };

        Self {
            name,
            table,
            known_keys,
            read_keys: BTreeSet::new(),
            problems,
        }
    }

    /// Returns the dotted name of `key` in this section, for example `polling.interval_seconds`.
    pub(super) fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.name)
    }

    /// Records a problem on `key` of this section.
    pub(super) fn report(&mut self, key: &str, message: impl Into<String>) {
        let path = self.path(key);
        self.problems.push(Problem::new(path, message));
    }

    /// Looks up `key` and marks it as read, so that [`Section::finish`] does not report it.
    fn value(&mut self, key: &'static str) -> Option<&'a Value> {
        debug_assert!(self.known_keys.contains(&key), "{key} is not a known key");
        self.read_keys.insert(key);
        self.table.and_then(|table| table.get(key))
    }

    /// Reads a string. `expected` describes the accepted form for the type-mismatch message.
    pub(super) fn string(&mut self, key: &'static str, expected: &str) -> Field<String> {
        match self.value(key) {
            None => Field::Absent,
            Some(Value::String(text)) => Field::Valid(text.clone()),
            Some(other) => {
                let message = format!("expected {expected}, found {}", describe(other));
                self.report(key, message);
                Field::Invalid
            }
        }
    }

    /// Reads a table of strings, such as `{ "5cdad4000001" = "report" }`, in key order.
    /// An entry that is not a string is reported and left out, so the caller still
    /// checks the others.
    pub(super) fn string_table(
        &mut self,
        key: &'static str,
        example: &str,
    ) -> Field<Vec<(String, String)>> {
        let table = match self.value(key) {
            None => return Field::Absent,
            Some(Value::Table(table)) => table,
            Some(other) => {
                let message = format!(
                    "expected a table such as {example}, found {}",
                    describe(other)
                );
                self.report(key, message);
                return Field::Invalid;
            }
        };
        let mut entries = Vec::with_capacity(table.len());
        for (name, value) in table {
            match value {
                Value::String(text) => entries.push((name.clone(), text.clone())),
                other => {
                    let message = format!("expected a string, found {}", describe(other));
                    self.report(&format!("{key}.{}", quote(name)), message);
                }
            }
        }
        Field::Valid(entries)
    }

    /// Reads a boolean (`true` or `false`).
    pub(super) fn boolean(&mut self, key: &'static str) -> Field<bool> {
        match self.value(key) {
            None => Field::Absent,
            Some(Value::Boolean(flag)) => Field::Valid(*flag),
            Some(other) => {
                let message = format!("expected true or false, found {}", describe(other));
                self.report(key, message);
                Field::Invalid
            }
        }
    }

    /// Reads a string that must be present.
    pub(super) fn required_string(&mut self, key: &'static str, expected: &str) -> Option<String> {
        match self.string(key, expected) {
            Field::Absent => {
                self.report(key, format!("required key is missing; expected {expected}"));
                None
            }
            Field::Invalid => None,
            Field::Valid(text) => Some(text),
        }
    }

    /// Reads an integer and checks it against `range`. `unit` follows the numbers in
    /// messages, for example "seconds" in "must be between 1 and 3600 seconds, found 0".
    pub(super) fn integer<T: TryFrom<i64>>(
        &mut self,
        key: &'static str,
        range: RangeInclusive<i64>,
        unit: &str,
    ) -> Field<T> {
        let number = match self.value(key) {
            None => return Field::Absent,
            Some(Value::Integer(number)) => *number,
            Some(other) => {
                let message = format!(
                    "expected a whole number{}, found {}",
                    unit_suffix(" of ", unit),
                    describe(other)
                );
                self.report(key, message);
                return Field::Invalid;
            }
        };

        match T::try_from(number) {
            Ok(value) if range.contains(&number) => Field::Valid(value),
            _ => {
                let message = format!(
                    "must be between {} and {}{}, found {number}",
                    range.start(),
                    range.end(),
                    unit_suffix(" ", unit)
                );
                self.report(key, message);
                Field::Invalid
            }
        }
    }

    /// Reads a number, integer or float, and checks it against `range`. `unit` follows
    /// the numbers in messages, as for [`Section::integer`].
    pub(super) fn number(
        &mut self,
        key: &'static str,
        range: RangeInclusive<f64>,
        unit: &str,
    ) -> Field<f64> {
        let number = match self.value(key) {
            None => return Field::Absent,
            Some(Value::Integer(number)) => *number as f64,
            Some(Value::Float(number)) => *number,
            Some(other) => {
                let message = format!(
                    "expected a number{}, found {}",
                    unit_suffix(" in ", unit),
                    describe(other)
                );
                self.report(key, message);
                return Field::Invalid;
            }
        };

        if range.contains(&number) {
            return Field::Valid(number);
        }
        let message = format!(
            "must be between {} and {}{}, found {number}",
            range.start(),
            range.end(),
            unit_suffix(" ", unit)
        );
        self.report(key, message);
        Field::Invalid
    }

    /// Reads an array of strings. `example` is one element written as TOML, for the
    /// messages. Elements of another type are reported one by one, with the index in the
    /// key (`thermostats.addresses[2]`), and left out of the result, which pairs each
    /// string with its index.
    pub(super) fn string_list(
        &mut self,
        key: &'static str,
        example: &str,
    ) -> Field<Vec<(usize, String)>> {
        let items = match self.value(key) {
            None => return Field::Absent,
            Some(Value::Array(items)) => items,
            Some(other) => {
                let message = format!(
                    "expected an array of strings such as [{example}], found {}",
                    describe(other)
                );
                self.report(key, message);
                return Field::Invalid;
            }
        };

        let mut strings = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match item {
                Value::String(text) => strings.push((index, text.clone())),
                other => {
                    let message = format!(
                        "expected a string such as {example}, found {}",
                        describe(other)
                    );
                    self.report(&format!("{key}[{index}]"), message);
                }
            }
        }
        Field::Valid(strings)
    }

    /// Reports every key of the section that was never read, with a suggestion when a
    /// known key is close to it or when the key belongs to another section.
    pub(super) fn finish(self, all_sections: &[(&'static str, &'static [&'static str])]) {
        let Some(table) = self.table else {
            return;
        };

        for key in table.keys() {
            if self.read_keys.contains(key.as_str()) {
                continue;
            }
            let hint = suggest_key(key, self.name, self.known_keys, all_sections);
            self.problems.push(Problem::new(
                format!("{}.{key}", self.name),
                format!("unknown key{hint}"),
            ));
        }
    }
}

/// Reports every top-level entry that is not one of `all_sections`.
pub(super) fn report_unknown_sections(
    root: &Table,
    all_sections: &[(&'static str, &'static [&'static str])],
    problems: &mut Vec<Problem>,
) {
    let section_names: Vec<&str> = all_sections.iter().map(|(name, _)| *name).collect();

    for (key, value) in root {
        if section_names.contains(&key.as_str()) {
            continue;
        }

        let message = if value.is_table() {
            let hint = closest(key, &section_names)
                .map(|name| format!("; did you mean [{name}]?"))
                .unwrap_or_default();
            format!("unknown section{hint}")
        } else {
            let hint = section_of(key, all_sections)
                .map(|section| format!("; did you mean {section}.{key}, under [{section}]?"))
                .unwrap_or_default();
            format!("unknown key outside any section{hint}")
        };
        problems.push(Problem::new(key.clone(), message));
    }
}

/// Builds the "did you mean" part of an unknown-key message, or an empty string.
fn suggest_key(
    key: &str,
    section: &str,
    known_keys: &[&str],
    all_sections: &[(&'static str, &'static [&'static str])],
) -> String {
    if let Some(close) = closest(key, known_keys) {
        return format!("; did you mean {section}.{close}?");
    }

    match section_of(key, all_sections) {
        Some(other) => format!("; {key} belongs under [{other}]"),
        None => String::new(),
    }
}

/// Returns the section whose known keys include `key`.
fn section_of(
    key: &str,
    all_sections: &[(&'static str, &'static [&'static str])],
) -> Option<&'static str> {
    all_sections
        .iter()
        .find(|(_, keys)| keys.contains(&key))
        .map(|(name, _)| *name)
}

/// Returns the candidate closest to `word`: within an edit distance of about a third of
/// its length, or a candidate that adds a unit suffix to it (`interval` for
/// `interval_seconds`).
pub(super) fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let lowered = word.to_ascii_lowercase();
    let limit = (lowered.len() / 3).max(1);

    let by_distance = candidates
        .iter()
        .map(|candidate| (edit_distance(&lowered, candidate), *candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate);

    by_distance.or_else(|| {
        candidates
            .iter()
            .find(|candidate| candidate.starts_with(&format!("{lowered}_")))
            .copied()
    })
}

/// Edit distance over characters, counting an insertion, a deletion, a substitution or a
/// swap of two neighbouring characters as one edit (optimal string alignment distance).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();

    // distances[i][j] is the distance between the first i characters of a and the
    // first j characters of b.
    let mut distances = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in distances.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in distances[0].iter_mut().enumerate() {
        *cell = j;
    }

    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = distances[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let deletion = distances[i - 1][j] + 1;
            let insertion = distances[i][j - 1] + 1;
            let mut best = substitution.min(deletion).min(insertion);

            let swapped = i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1];
            if swapped {
                best = best.min(distances[i - 2][j - 2] + 1);
            }
            distances[i][j] = best;
        }
    }
    distances[a.len()][b.len()]
}

/// Describes a TOML value for a message: its type and a short rendering of it.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::String(text) => format!("the string {}", quote(text)),
        Value::Integer(number) => format!("the integer {number}"),
        Value::Float(number) => format!("the float {number}"),
        Value::Boolean(flag) => format!("the boolean {flag}"),
        Value::Datetime(datetime) => format!("the date-time {datetime}"),
        Value::Array(items) => format!("an array of {} items", items.len()),
        Value::Table(_) => "a table".to_string(),
    }
}

/// Quotes `text` for a message, cut to 60 characters so that a pasted blob stays short.
pub(super) fn quote(text: &str) -> String {
    const MAX_CHARS: usize = 60;

    if text.chars().count() <= MAX_CHARS {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(MAX_CHARS).collect();
    format!("{head:?}...")
}

fn unit_suffix(separator: &str, unit: &str) -> String {
    if unit.is_empty() {
        String::new()
    } else {
        format!("{separator}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        text.parse().expect("test TOML parses")
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("interval", "interval"), 0);
        assert_eq!(edit_distance("intervall", "interval"), 1);
        assert_eq!(edit_distance("levle", "level"), 1);
        assert_eq!(edit_distance("nmae", "name"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn closest_finds_a_typo() {
        let candidates = ["interval_seconds", "request_timeout_seconds"];
        assert_eq!(
            closest("interval_second", &candidates),
            Some("interval_seconds")
        );
    }

    #[test]
    fn closest_finds_a_missing_unit_suffix() {
        let candidates = ["interval_seconds", "request_timeout_seconds"];
        assert_eq!(
            closest("request_timeout", &candidates),
            Some("request_timeout_seconds")
        );
    }

    #[test]
    fn closest_ignores_unrelated_words() {
        let candidates = ["interval_seconds", "request_timeout_seconds"];
        assert_eq!(closest("colour", &candidates), None);
    }

    #[test]
    fn integer_reports_range_with_unit() {
        let root = table("[polling]\ninterval_seconds = 0\n");
        let mut problems = Vec::new();
        let mut section = Section::open(&root, "polling", &["interval_seconds"], &mut problems);

        let field: Field<u64> = section.integer("interval_seconds", 1..=3600, "seconds");

        assert_eq!(field, Field::Invalid);
        assert_eq!(
            problems[0].to_string(),
            "polling.interval_seconds: must be between 1 and 3600 seconds, found 0"
        );
    }

    #[test]
    fn integer_rejects_a_string() {
        let root = table("[polling]\ninterval_seconds = \"5\"\n");
        let mut problems = Vec::new();
        let mut section = Section::open(&root, "polling", &["interval_seconds"], &mut problems);

        let field: Field<u64> = section.integer("interval_seconds", 1..=3600, "seconds");

        assert_eq!(field, Field::Invalid);
        assert_eq!(
            problems[0].message,
            "expected a whole number of seconds, found the string \"5\""
        );
    }

    #[test]
    fn quote_cuts_long_text() {
        let quoted = quote(&"x".repeat(100));
        assert!(quoted.ends_with("\"..."));
    }
}
