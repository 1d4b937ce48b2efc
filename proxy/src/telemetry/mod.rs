//! What the proxy tells its operators: Prometheus metrics, the health and status pages
//! (`/healthz`, `/readyz`, `/status`), and the status table of `pgrepl-proxy status`.

pub mod clock;
pub mod endpoint;
pub mod meters;
pub mod names;
mod render;
mod scrape;
pub mod status;
pub mod table;
pub mod tally;

pub use endpoint::Endpoint;
pub use meters::{install_recorder, BackendMeters, ClientMeters, Finished, ReloadMeters, Timing};
pub use names::Rejection;
pub use status::Status;
pub use tally::Tally;
