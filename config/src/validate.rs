//! Semantic checks that run after the file parsed: each problem names the field and the fix.

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field, e.g. `edge.listen` or `tls.certificates[0].cert`.
    pub field: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// Collects every problem so `--check` can report them all at once.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<Problem>);

impl Problems {
    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }
}
