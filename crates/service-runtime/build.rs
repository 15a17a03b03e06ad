// `sqlx::migrate!` embeds the workspace's migrations at compile time; without this, cargo would
// not notice a new or changed migration and the binaries would keep the old schema.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
