//! What the daemon tells its operators besides answers: Prometheus [`metrics`] and the
//! size-rotated JSON-lines files ([`logfile`]) the daemon log and the plugin audit log are
//! written to.

pub mod logfile;
pub mod metrics;
