//! The registry of losses: every loss registers itself with one line
//! ([`register_loss!`](crate::register_loss)); the registry is built once, lazily, sorted by
//! name, and refuses duplicate names.

use std::{collections::BTreeMap, fmt, sync::OnceLock};

use serde_json::{Map, Value};

use crate::{
    error::{ConfigError, closest},
    loss::Loss,
    spec::parse_spec,
};

/// The family a loss belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Class scores against class labels.
    Classification,
    /// Dense per-pixel (or per-voxel) predictions against masks.
    Segmentation,
    /// Real-valued predictions against real-valued targets.
    Regression,
    /// Combinations of other losses.
    Composite,
}

impl Category {
    /// Every category, in display order.
    pub const ALL: [Category; 4] = [
        Category::Classification,
        Category::Segmentation,
        Category::Regression,
        Category::Composite,
    ];

    /// The category's lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Classification => "classification",
            Category::Segmentation => "segmentation",
            Category::Regression => "regression",
            Category::Composite => "composite",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Category {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|category| category.as_str() == text)
            .ok_or_else(|| {
                format!("unknown category `{text}`; expected classification, segmentation, regression or composite")
            })
    }
}

/// Builds a loss named by the first argument from its options (the config without `name`).
pub type BuildFn = fn(&str, &Map<String, Value>) -> Result<Box<dyn Loss>, ConfigError>;

/// One registered loss. Made by [`register_loss!`](crate::register_loss); never by hand.
pub struct LossRegistration {
    /// The loss's name, snake_case.
    pub name: &'static str,
    /// Other names it answers to.
    pub aliases: &'static [&'static str],
    /// Its family.
    pub category: Category,
    /// One line: what it computes.
    pub summary: &'static str,
    /// Its documentation: the loss type's doc comment.
    pub docs: &'static str,
    /// Builds the loss from options (the config object without `name`).
    pub build: BuildFn,
    /// The options of a complete, valid config (defaults, example values for required ones).
    pub example: fn() -> Value,
    /// Options without default, with a description of a valid value.
    pub required: &'static [(&'static str, &'static str)],
    /// The crate that registered it.
    pub crate_name: &'static str,
}

impl fmt::Debug for LossRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LossRegistration")
            .field("name", &self.name)
            .field("aliases", &self.aliases)
            .field("category", &self.category)
            .field("crate_name", &self.crate_name)
            .finish_non_exhaustive()
    }
}

inventory::collect!(LossRegistration);

impl LossRegistration {
    /// The documentation as plain text (doc-comment indentation removed).
    pub fn documentation(&self) -> String {
        self.docs
            .lines()
            .map(|line| line.strip_prefix(' ').unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n")
            .trim()
            .to_string()
    }

    /// A complete example config, `name` first.
    pub fn example_config(&self) -> Value {
        let mut object = Map::new();
        object.insert("name".into(), Value::String(self.name.into()));
        if let Value::Object(options) = (self.example)() {
            object.extend(options);
        }
        Value::Object(object)
    }

    /// Builds this loss with all options at their defaults (plus example values for required
    /// options).
    pub fn build_example(&self) -> Result<Box<dyn Loss>, ConfigError> {
        let Value::Object(options) = (self.example)() else {
            return Err(ConfigError::InvalidSpec(format!(
                "loss `{}`: example is not an object",
                self.name
            )));
        };
        (self.build)(self.name, &options)
    }
}

/// Every registered loss, by name.
#[derive(Debug)]
pub struct Registry {
    entries: BTreeMap<&'static str, &'static LossRegistration>,
    aliases: BTreeMap<&'static str, &'static str>,
}

static REGISTRY: OnceLock<Result<Registry, ConfigError>> = OnceLock::new();

impl Registry {
    /// The registry of every loss linked into this program.
    ///
    /// Fails if two registrations claim one name or alias.
    pub fn global() -> Result<&'static Registry, ConfigError> {
        REGISTRY
            .get_or_init(|| Registry::from_registrations(inventory::iter::<LossRegistration>))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A registry of the given registrations.
    pub fn from_registrations(
        registrations: impl IntoIterator<Item = &'static LossRegistration>,
    ) -> Result<Registry, ConfigError> {
        let mut entries: BTreeMap<&'static str, &'static LossRegistration> = BTreeMap::new();
        let mut owners: BTreeMap<&'static str, &'static str> = BTreeMap::new();
        let mut aliases = BTreeMap::new();
        let mut all: Vec<&'static LossRegistration> = registrations.into_iter().collect();
        all.sort_by_key(|registration| (registration.name, registration.crate_name));
        for registration in all {
            for claimed in
                std::iter::once(registration.name).chain(registration.aliases.iter().copied())
            {
                if let Some(first) = owners.insert(claimed, registration.name) {
                    return Err(ConfigError::DuplicateName {
                        name: claimed.to_string(),
                        first: first.to_string(),
                        second: registration.name.to_string(),
                    });
                }
            }
            entries.insert(registration.name, registration);
            for alias in registration.aliases {
                aliases.insert(*alias, registration.name);
            }
        }
        Ok(Registry { entries, aliases })
    }

    /// Every registration, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &'static LossRegistration> + '_ {
        self.entries.values().copied()
    }

    /// The number of registered losses.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no loss is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The registration named `name` (or aliased so).
    pub fn get(&self, name: &str) -> Result<&'static LossRegistration, ConfigError> {
        let canonical = self.aliases.get(name).copied().unwrap_or(name);
        self.entries
            .get(canonical)
            .copied()
            .ok_or_else(|| ConfigError::UnknownLoss {
                name: name.to_string(),
                suggestions: closest(
                    name,
                    self.entries
                        .keys()
                        .copied()
                        .chain(self.aliases.keys().copied()),
                ),
            })
    }

    /// Builds a loss from a config object `{"name": ..., options...}`.
    pub fn build(&self, config: &Map<String, Value>) -> Result<Box<dyn Loss>, ConfigError> {
        let name = match config.get("name") {
            Some(Value::String(name)) => name.as_str(),
            Some(other) => {
                return Err(ConfigError::InvalidSpec(format!(
                    "loss `name` must be a string, got {other}"
                )));
            }
            None => {
                return Err(ConfigError::InvalidSpec(
                    "loss config has no `name`; expected e.g. {\"name\": \"dice\"}".into(),
                ));
            }
        };
        let registration = self.get(name)?;
        let mut options = config.clone();
        options.remove("name");
        tracing::debug!(
            target: "losskit::registry",
            "building loss `{}` (asked as `{name}`) with options {}",
            registration.name,
            serde_json::Value::Object(options.clone())
        );
        (registration.build)(registration.name, &options)
    }

    /// Builds a loss from a JSON value (which must be an object, or a string naming the loss).
    pub fn build_value(&self, config: &Value) -> Result<Box<dyn Loss>, ConfigError> {
        match config {
            Value::Object(object) => self.build(object),
            Value::String(name) => {
                let mut object = Map::new();
                object.insert("name".into(), Value::String(name.clone()));
                self.build(&object)
            }
            other => Err(ConfigError::InvalidSpec(format!(
                "a loss config must be a name or an object, got {other}"
            ))),
        }
    }

    /// Builds a loss from a spec string: a name, a JSON object or a `.json`/`.toml` path.
    pub fn build_spec(&self, spec: &str) -> Result<Box<dyn Loss>, ConfigError> {
        self.build(&parse_spec(spec)?)
    }
}

/// Builds a loss from a spec string with the global registry.
pub fn build_spec(spec: &str) -> Result<Box<dyn Loss>, ConfigError> {
    Registry::global()?.build_spec(spec)
}
