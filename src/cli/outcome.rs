//! How `exchange-cli` ends, and the exit code each ending gives, so that scripts can tell a
//! refusal from an outage from an unknown outcome:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | refused by the exchange (a reject) |
//! | 2 | usage: bad arguments, or a local file that cannot be used |
//! | 3 | the cluster is unavailable: no node reached, or no leader known |
//! | 4 | the outcome is unknown: sent, but no answer (it may have happened) |
//! | 5 | the cluster answers but is unhealthy: a node reports a divergence |

use std::process::ExitCode;

use crate::gateway::client::ClientError;

#[derive(Debug)]
pub enum CliError {
    Usage(String),
    Refused(String),
    Unavailable(String),
    Unknown(String),
    Unhealthy(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Refused(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unavailable(_) => 3,
            CliError::Unknown(_) => 4,
            CliError::Unhealthy(_) => 5,
        })
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(why) | CliError::Refused(why) | CliError::Unhealthy(why) => {
                f.write_str(why)
            }
            CliError::Unavailable(why) => write!(f, "cluster unavailable: {why}"),
            CliError::Unknown(why) => write!(f, "outcome unknown: {why}"),
        }
    }
}

impl std::error::Error for CliError {}

/// Local trouble (arguments, files) reported as text by the code below the CLI.
impl From<String> for CliError {
    fn from(why: String) -> Self {
        CliError::Usage(why)
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Unavailable(why) => CliError::Unavailable(why),
            ClientError::OutcomeUnknown(why) => CliError::Unknown(why),
            ClientError::Rejected(why) => CliError::Refused(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ending_has_its_code() {
        let code = |e: CliError| format!("{:?}", e.exit_code());
        assert_eq!(
            code(CliError::Refused(String::new())),
            format!("{:?}", ExitCode::from(1))
        );
        assert_eq!(
            code("bad".to_string().into()),
            format!("{:?}", ExitCode::from(2))
        );
        assert_eq!(
            code(ClientError::Unavailable(String::new()).into()),
            format!("{:?}", ExitCode::from(3))
        );
        assert_eq!(
            code(ClientError::OutcomeUnknown(String::new()).into()),
            format!("{:?}", ExitCode::from(4))
        );
        assert_eq!(
            code(CliError::Unhealthy(String::new())),
            format!("{:?}", ExitCode::from(5))
        );
        assert_eq!(
            code(ClientError::Rejected(String::new()).into()),
            format!("{:?}", ExitCode::from(1))
        );
    }
}
