//! Why a snapshot could not be built: TLS material that cannot be used.
//!
//! Owns [`BuildError`] (one problem: which listener, which file, the cause) and
//! [`BuildErrors`] (every problem of one build, in listener order). The text is
//! `listeners.NAME.tls: ...`; the caller that knows the file adds its name in
//! front (see `reload::ReloadError`). Validation already checked the same files,
//! so these only appear when a file changed in between.

use std::fmt;

use crate::cert::PairError;

/// One listener's TLS material that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A certificate or key file cannot be read or loaded; the error names the file.
    #[error("listeners.{listener}.tls: {source}")]
    Certificate { listener: String, source: PairError },
    /// rustls refused the acceptor or the session resumption set-up.
    #[error("listeners.{listener}.tls: {source}")]
    Tls {
        listener: String,
        source: rustls::Error,
    },
}

/// Every problem of one build; never empty. Display prints one per line.
#[derive(Debug, thiserror::Error)]
pub struct BuildErrors(Vec<BuildError>);

impl BuildErrors {
    /// `None` when there is nothing to report.
    pub(crate) fn new(errors: Vec<BuildError>) -> Option<BuildErrors> {
        (!errors.is_empty()).then_some(BuildErrors(errors))
    }

    pub fn iter(&self) -> std::slice::Iter<'_, BuildError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false; present because clippy pairs it with `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for BuildErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_certificate_names_the_listener_and_the_file() {
        let e = BuildError::Certificate {
            listener: "web".into(),
            source: PairError::Read {
                file: "/etc/tandem/site.pem".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            },
        };
        let all = BuildErrors::new(vec![e]).expect("one error");
        let text = all.to_string();
        assert!(
            text.starts_with("listeners.web.tls: cannot read \"/etc/tandem/site.pem\": "),
            "{text}"
        );
        assert_eq!(all.len(), 1);
        assert!(BuildErrors::new(Vec::new()).is_none());
    }
}
