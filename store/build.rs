//! `embed_migrations!` reads `../migrations` at compile time, but Cargo only tracks the files it
//! included: without this, adding a migration directory would not rebuild the crate.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
