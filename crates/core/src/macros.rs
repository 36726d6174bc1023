//! The registration and documentation macros.

/// Registers a loss with the global registry. One line, at item level, in the loss's file.
///
/// ```text
/// losskit_core::register_loss!(DiceLoss {
///     name: "dice",
///     aliases: [],
///     category: Segmentation,
///     summary: "Soft Dice loss over softmax or sigmoid probabilities.",
///     config: DiceLossConfig,
/// });
/// ```
///
/// The loss type must carry its documentation (see [`documented!`](crate::documented)) and the
/// config type must implement [`LossConfig`](crate::LossConfig).
#[macro_export]
macro_rules! register_loss {
    ($loss:ty {
        name: $name:literal,
        aliases: [$($alias:literal),* $(,)?],
        category: $category:ident,
        summary: $summary:literal,
        config: $config:ty $(,)?
    }) => {
        $crate::inventory::submit! {
            $crate::registry::LossRegistration {
                name: $name,
                aliases: &[$($alias),*],
                category: $crate::registry::Category::$category,
                summary: $summary,
                docs: <$loss>::DOCS,
                build: $crate::config::build_from_options::<$config>,
                example: $crate::config::example_options::<$config>,
                required: <$config as $crate::config::LossConfig>::REQUIRED,
                crate_name: ::core::env!("CARGO_PKG_NAME"),
            }
        }
    };
}

/// Defines a struct and keeps its doc comment as `Type::DOCS`, so that the documentation
/// `losskit info` prints is the doc comment itself.
///
/// ```
/// losskit_core::documented! {
///     /// # What it does
///     /// Nothing at all.
///     #[derive(Debug)]
///     pub struct NothingLoss;
/// }
/// assert!(NothingLoss::DOCS.contains("What it does"));
/// ```
#[macro_export]
macro_rules! documented {
    ($(#[$($attr:tt)*])* $vis:vis struct $name:ident $($body:tt)*) => {
        $(#[$($attr)*])*
        $vis struct $name $($body)*

        impl $name {
            /// This type's documentation, as written in its doc comment.
            pub const DOCS: &'static str = $crate::__collect_docs!([] $(#[$($attr)*])*);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __collect_docs {
    ([$($doc:literal)*]) => { ::core::concat!($($doc, "\n"),*) };
    ([$($doc:literal)*] #[doc = $line:literal] $($rest:tt)*) => {
        $crate::__collect_docs!([$($doc)* $line] $($rest)*)
    };
    ([$($doc:literal)*] #[$($other:tt)*] $($rest:tt)*) => {
        $crate::__collect_docs!([$($doc)*] $($rest)*)
    };
}
