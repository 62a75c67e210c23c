//! r1-config: the typed configuration of r1.
//!
//! Each component owns its config struct; the job config composes them (torchtitan style). The TOML
//! schema, validation and examples arrive with the daemon; until then this crate holds only the
//! engine-independent pieces that exist.
