//! Layers: read-only root filesystem layers stacked between a container's base and its own
//! upper layer, built from recipes in `overlays/`.
//!
//! - [`LayerRecipe`] (`recipe.rs`): the TOML recipe, validated field by field, with a cache
//!   key that also covers what the layer is built over.
//! - [`build_layer`] (`build.rs`): runs the recipe in a chroot of a throwaway overlay and
//!   keeps the upper, cleaned of apt caches and logs; cached like bases.

pub mod build;
pub mod recipe;

pub use build::{build_layer, BuildDirs};
pub use recipe::{AptSource, LayerFile, LayerRecipe, SigningKey};
