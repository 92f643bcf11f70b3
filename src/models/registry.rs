//! The model registry: every model kind, its configuration section, and the one dispatch point
//! from a configuration to the model's type ([`ModelConfig::visit`]). The list that names every
//! model is the `registry!` invocation at the bottom of `models/mod.rs`: one line per model,
//! which also declares the model's module.

use serde::Serialize;

use super::{Model, ModelConfig, ModelKind, ModelSettings};
use crate::{Error, Result};

/// Something done with a model whose type is known only from a configuration: the training
/// loop, an evaluator, a sampler of a run. `visit` runs with the model's type.
pub trait ModelVisitor {
    type Output;
    fn visit<M: Model>(self, cfg: &M::Config) -> Self::Output;
}

macro_rules! registry {
    ($( $(#[doc = $doc:literal])* $variant:ident($module:ident :: $ty:ident) = $name:literal, )*) => {
        $( pub mod $module; )*
        /// Which model (the default: the VDM).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum ModelKind {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl crate::choice::Choice for ModelKind {
            const ALL: &'static [ModelKind] = &[$(ModelKind::$variant),*];
            fn name(self) -> &'static str {
                ModelKind::name(self)
            }
            fn help(self) -> &'static str {
                match self {
                    $(ModelKind::$variant => concat!($($doc),*).trim_ascii(),)*
                }
            }
        }

        impl ModelKind {
            /// Every kind, in registry order.
            pub const ALL: &'static [ModelKind] = &[$(ModelKind::$variant),*];

            /// The kind's name: its value of `model` and its section's key.
            pub fn name(self) -> &'static str {
                match self {
                    $(ModelKind::$variant => $name,)*
                }
            }
        }

        /// A model kind with its settings: the `model` key of a run and its section.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ModelConfig {
            $( $variant(<$module::$ty as $crate::models::Model>::Config), )*
        }

        impl ModelConfig {
            pub fn kind(&self) -> ModelKind {
                match self {
                    $(ModelConfig::$variant(_) => ModelKind::$variant,)*
                }
            }

            /// The default settings of a kind.
            pub fn default_for(kind: ModelKind) -> ModelConfig {
                match kind {
                    $(ModelKind::$variant => ModelConfig::$variant(Default::default()),)*
                }
            }

            /// Run `v` with the model's type and its settings.
            pub fn visit<V: $crate::models::ModelVisitor>(&self, v: V) -> V::Output {
                match self {
                    $(ModelConfig::$variant(c) => v.visit::<$module::$ty>(c),)*
                }
            }

            /// The section as JSON.
            pub fn section(&self) -> $crate::Result<serde_json::Value> {
                match self {
                    $(ModelConfig::$variant(c) => $crate::models::registry::to_value(c),)*
                }
            }

            /// Settings of `kind` from its section (defaults where absent).
            pub fn from_section(kind: ModelKind, v: Option<serde_json::Value>) -> $crate::Result<ModelConfig> {
                Ok(match kind {
                    $(ModelKind::$variant => ModelConfig::$variant($crate::models::registry::from_value(kind, v)?),)*
                })
            }

            pub fn validate(&self) -> $crate::Result<()> {
                match self {
                    $(ModelConfig::$variant(c) => $crate::models::ModelSettings::validate(c),)*
                }
            }

            /// Steps and batch size of a default run on data of a kind.
            pub fn defaults_for(&self, data: $crate::data::DataKind) -> (u64, usize) {
                match self {
                    $(ModelConfig::$variant(_) => {
                        <<$module::$ty as $crate::models::Model>::Config as $crate::models::ModelSettings>::defaults_for(data)
                    })*
                }
            }

            /// Settings left to the data, resolved for data of this kind.
            pub fn resolve_for_data(&mut self, data: $crate::data::DataKind) {
                match self {
                    $(ModelConfig::$variant(c) => $crate::models::ModelSettings::resolve_for_data(c, data),)*
                }
            }

            /// Whether the model has an importance-weighted bound L_K (M4).
            pub fn has_importance_weighted(&self) -> bool {
                match self {
                    $(ModelConfig::$variant(_) => {
                        <<$module::$ty as $crate::models::Model>::Config as $crate::models::ModelSettings>::IMPORTANCE_WEIGHTED
                    })*
                }
            }

            /// Whether the settings score 8-bit images binarised (see
            /// [`ModelSettings::binary_images`]).
            pub fn binary_images(&self) -> bool {
                match self {
                    $(ModelConfig::$variant(c) => $crate::models::ModelSettings::binary_images(c),)*
                }
            }

            /// Score 8-bit images binarised or as their levels, where the model can.
            pub fn set_binary_images(&mut self, binary: bool) -> bool {
                match self {
                    $(ModelConfig::$variant(c) => $crate::models::ModelSettings::set_binary_images(c, binary),)*
                }
            }

            /// Whether the model has a probability-flow ODE likelihood (`eval --method ode`).
            pub fn has_ode(&self) -> bool {
                match self {
                    $(ModelConfig::$variant(_) => {
                        <<$module::$ty as $crate::models::Model>::Config as $crate::models::ModelSettings>::ODE
                    })*
                }
            }

            /// Whether the model is a diffusion model (samplers, the ODE likelihood, guidance).
            pub fn is_diffusion(&self) -> bool {
                match self {
                    $(ModelConfig::$variant(_) => {
                        <<$module::$ty as $crate::models::Model>::Config as $crate::models::ModelSettings>::DIFFUSION
                    })*
                }
            }

            /// Keys of the section that a resumed run may change.
            pub fn changeable_on_resume(&self) -> &'static [&'static str] {
                match self {
                    $(ModelConfig::$variant(_) => {
                        <<$module::$ty as $crate::models::Model>::Config as $crate::models::ModelSettings>::CHANGEABLE_ON_RESUME
                    })*
                }
            }
        }
    };
}

/// The registry macro, for `models/mod.rs`.
pub(crate) use registry;

pub(crate) fn to_value<T: Serialize>(c: &T) -> Result<serde_json::Value> {
    serde_json::to_value(c).map_err(|e| Error::Config(e.to_string()))
}

pub(crate) fn from_value<T: ModelSettings>(
    kind: ModelKind,
    v: Option<serde_json::Value>,
) -> Result<T> {
    match v {
        None => Ok(T::default()),
        Some(v) => serde_json::from_value(v)
            .map_err(|e| Error::Config(format!("[{}] section: {e}", kind.name()))),
    }
}

// Not derivable: the variants are written by the registry macro, the default is chosen here.
#[allow(clippy::derivable_impls)]
impl Default for ModelKind {
    fn default() -> Self {
        ModelKind::Vdm
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::default_for(ModelKind::default())
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind of a model type (the registry's entry whose type is `M`).
pub fn kind_of<M: Model>() -> ModelKind {
    struct Probe(std::any::TypeId);
    impl ModelVisitor for Probe {
        type Output = bool;
        fn visit<N: Model>(self, _: &N::Config) -> bool {
            std::any::TypeId::of::<N>() == self.0
        }
    }
    ModelKind::ALL
        .iter()
        .copied()
        .find(|k| ModelConfig::default_for(*k).visit(Probe(std::any::TypeId::of::<M>())))
        .unwrap_or_default()
}

impl ModelKind {
    /// The kind whose name (and section key) is `name`.
    pub fn from_name(name: &str) -> Option<ModelKind> {
        ModelKind::ALL.iter().copied().find(|k| k.name() == name)
    }
}
