//! The shared service runtime: every binary's `main` reads the same way.
//!
//! ```text
//! let settings = Settings::from_env(SERVICE)?;          // CDP_* env, errors name the variable
//! let _telemetry = telemetry::init(SERVICE)?;            // logs, OTLP traces when configured
//! let admin = Admin::new(SERVICE);                       // registry + readiness
//! let shutdown = shutdown::on_signal();                  // SIGINT / SIGTERM
//! tokio::spawn(admin.clone().serve(settings.admin_addr, shutdown.clone()));
//! ```

pub mod admin;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use admin::{Admin, Readiness};
pub use settings::{env_or, Settings, SettingsError, StageSettings};
