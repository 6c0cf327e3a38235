//! Session settings that travel to a cluster.
//!
//! A Ballista client sends its session's settings to the scheduler as the key-value pairs
//! of `ConfigOptions::entries()`, and the scheduler and the executors set them again by
//! key. DataFusion's `extensions_options!` lists an extension's entries without its
//! prefix (`device`, not `onnx.device`), so they cannot be set again there: a `SET
//! onnx.*` on the client never reached the executors. framefusion's settings are written
//! with `config_namespace!` and made an extension by [`prefixed_extension!`](crate::prefixed_extension), whose
//! entries carry the full key.

use datafusion_common::config::{ConfigEntry, ConfigField, Visit};

/// The entries of `options` under `prefix` (`onnx.device`, ...).
pub fn prefixed_entries<T: ConfigField>(options: &T, prefix: &str) -> Vec<ConfigEntry> {
    struct Entries(Vec<ConfigEntry>);

    impl Visit for Entries {
        fn some<V: std::fmt::Display>(&mut self, key: &str, value: V, description: &'static str) {
            self.0.push(ConfigEntry {
                key: key.to_owned(),
                value: Some(value.to_string()),
                description,
            });
        }

        fn none(&mut self, key: &str, description: &'static str) {
            self.0.push(ConfigEntry {
                key: key.to_owned(),
                value: None,
                description,
            });
        }
    }

    let mut entries = Entries(Vec::new());
    options.visit(&mut entries, prefix, "");
    entries.0
}

/// Makes a `config_namespace!` struct with a `ConfigExtension` prefix a session
/// extension whose entries carry their full keys (see the module docs).
#[macro_export]
macro_rules! prefixed_extension {
    ($name:ty) => {
        impl $crate::datafusion_common::config::ExtensionOptions for $name {
            fn as_any(&self) -> &dyn ::std::any::Any {
                self
            }

            fn as_any_mut(&mut self) -> &mut dyn ::std::any::Any {
                self
            }

            fn cloned(&self) -> Box<dyn $crate::datafusion_common::config::ExtensionOptions> {
                Box::new(self.clone())
            }

            fn set(&mut self, key: &str, value: &str) -> $crate::datafusion_common::Result<()> {
                let prefix = <$name as $crate::datafusion_common::config::ConfigExtension>::PREFIX;
                let key = key
                    .strip_prefix(prefix)
                    .and_then(|k| k.strip_prefix('.'))
                    .unwrap_or(key);
                $crate::datafusion_common::config::ConfigField::set(self, key, value)
            }

            fn entries(&self) -> Vec<$crate::datafusion_common::config::ConfigEntry> {
                $crate::settings::prefixed_entries(
                    self,
                    <$name as $crate::datafusion_common::config::ConfigExtension>::PREFIX,
                )
            }
        }
    };
}
