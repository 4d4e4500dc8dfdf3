// Shared by every package whose binaries or tests link libtorch (included from
// their build.rs). cargo:rustc-link-arg applies only to the package that emits
// it, so each such package repeats it.
//
// - rpath to libtorch, so no LD_LIBRARY_PATH is needed at run time;
// - libtorch_cuda linked with --no-as-needed when present: nothing references
//   it directly, so without this the linker drops it and a GPU machine
//   silently runs on CPU.
fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch_cuda");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
    }
}
