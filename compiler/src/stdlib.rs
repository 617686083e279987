//! The standard library: `import "std/NAME.kdl"` reads these files, which
//! are shipped inside the binary (the sources are in `stdlib/`).

/// (name under `std/`, text)
pub const FILES: &[(&str, &str)] = &[
    ("git.kdl", include_str!("../../stdlib/git.kdl")),
    ("rust.kdl", include_str!("../../stdlib/rust.kdl")),
    ("make.kdl", include_str!("../../stdlib/make.kdl")),
    ("node.kdl", include_str!("../../stdlib/node.kdl")),
    ("python.kdl", include_str!("../../stdlib/python.kdl")),
    ("go.kdl", include_str!("../../stdlib/go.kdl")),
    ("notify.kdl", include_str!("../../stdlib/notify.kdl")),
];

pub fn get(name: &str) -> Option<&'static str> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}
