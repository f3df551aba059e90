//! What a replica does: consume, serve the API, or both.

/// What a replica does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    All,
    Api,
    Ingest,
}

impl Role {
    pub fn consumes(self) -> bool {
        self != Role::Api
    }

    pub fn serves_api(self) -> bool {
        self != Role::Ingest
    }
}
