//! Closed sets of named values (a model kind, a schedule, a split …), read by name from the
//! command line or a settings file. The command line builds its parsers and help from
//! [`Choice::ALL`]; the library knows nothing of the command line's framework.

/// A value of a closed set, with its name and a line of help.
pub trait Choice: Sized + Copy + PartialEq + Send + Sync + 'static {
    /// Every value that can be chosen, in the order help lists them.
    const ALL: &'static [Self];

    /// Its name, as typed.
    fn name(self) -> &'static str;

    /// One line saying what it is.
    fn help(self) -> &'static str {
        ""
    }

    /// The value named `name`.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }
}

/// Implement [`Choice`] for an enum: `choice!(Type { Variant = "name": "help", … })`.
#[macro_export]
macro_rules! choice {
    ($ty:ty { $($variant:ident = $name:literal : $help:literal),* $(,)? }) => {
        impl $crate::choice::Choice for $ty {
            const ALL: &'static [Self] = &[$(<$ty>::$variant),*];
            fn name(self) -> &'static str {
                match self {
                    $(<$ty>::$variant => $name,)*
                    #[allow(unreachable_patterns)]
                    _ => "",
                }
            }
            fn help(self) -> &'static str {
                match self {
                    $(<$ty>::$variant => $help,)*
                    #[allow(unreachable_patterns)]
                    _ => "",
                }
            }
        }
    };
}
