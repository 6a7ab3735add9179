//! The one errno type of every crate in the workspace: a Linux errno value.
//!
//! The engine answers with the values the kernel's type1 backend returns, the real-kernel backend
//! reports whatever the kernel said (which may be a value the engine never returns), and the trace
//! language names them. So `Errno` is a value (any `i32`), with the names the uAPI uses as
//! constants; an unnamed value prints as `E<code>` (for example `E95`).

use std::fmt;

/// A Linux errno value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(i32);

macro_rules! errnos {
    ($($name:ident = $code:expr),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "` (", stringify!($code), ").")]
                pub const $name: Errno = Errno($code);
            )*
            /// Every errno this crate names, in ascending value.
            pub const ALL: &'static [Errno] = &[$(Errno::$name),*];

            /// The symbolic name, if the value is one of the named ones.
            pub fn known_name(self) -> Option<&'static str> {
                match self.0 {
                    $($code => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    EPERM = 1,
    ENOENT = 2,
    ESRCH = 3,
    EINTR = 4,
    E2BIG = 7,
    ENOMEM = 12,
    EACCES = 13,
    EFAULT = 14,
    EBUSY = 16,
    EEXIST = 17,
    ENODEV = 19,
    EINVAL = 22,
    ENOTTY = 25,
    ENOSPC = 28,
    ERANGE = 34,
    EOVERFLOW = 75,
}

impl Errno {
    /// The errno with this Linux value (named or not).
    pub const fn from_raw(code: i32) -> Errno {
        Errno(code)
    }

    /// The Linux value.
    pub const fn code(self) -> i32 {
        self.0
    }

    /// The named errno with this value, or `None` for a value this crate does not name.
    pub fn from_code(code: i32) -> Option<Errno> {
        Errno(code).known_name().map(|_| Errno(code))
    }

    /// The errno with this symbolic name (`"EINVAL"`), or `None`.
    pub fn from_name(name: &str) -> Option<Errno> {
        Errno::ALL
            .iter()
            .copied()
            .find(|e| e.known_name() == Some(name))
    }

    /// The symbolic name, or `E<code>` for a value this crate does not name.
    pub fn name(self) -> String {
        match self.known_name() {
            Some(n) => n.to_string(),
            None => format!("E{}", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known_name() {
            Some(n) => f.write_str(n),
            None => write!(f, "E{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Errno;

    #[test]
    fn names_and_values_round_trip() {
        assert_eq!(Errno::EOVERFLOW.code(), 75);
        assert_eq!(Errno::from_name("EEXIST"), Some(Errno::EEXIST));
        assert_eq!(Errno::from_code(22), Some(Errno::EINVAL));
        assert_eq!(Errno::from_code(95), None);
        assert_eq!(Errno::from_raw(95).name(), "E95");
        assert_eq!(Errno::ENOTTY.to_string(), "ENOTTY");
        for e in Errno::ALL {
            assert_eq!(Errno::from_name(&e.name()), Some(*e));
        }
    }

    #[test]
    fn constants_match_in_patterns() {
        let f = |e: Errno| match e {
            Errno::EINVAL => 1,
            Errno::EEXIST => 2,
            _ => 0,
        };
        assert_eq!(f(Errno::from_raw(22)), 1);
        assert_eq!(f(Errno::from_raw(17)), 2);
        assert_eq!(f(Errno::from_raw(95)), 0);
    }
}
