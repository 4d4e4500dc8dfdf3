// Shared by every package whose binaries or tests link libtorch (included from
// their build.rs). cargo:rustc-link-arg applies only to the package that emits
// it, so each such package repeats it.
//
// - rpath to libtorch, so no LD_LIBRARY_PATH is needed at run time;
// - libtorch_cuda linked with --no-as-needed when it can actually load:
//   nothing references it directly, so without this the linker drops it and a
//   GPU machine silently runs on CPU. The CPU install (torch wheel with
//   --no-deps) ships libtorch_cuda.so without cuBLAS/cuDNN/NCCL, so forcing
//   it there would make every binary fail at start; we link it only when the
//   CUDA libraries it needs are installed beside it (the full torch wheel).
//   FOREWARN_LINK_CUDA=0/1 overrides the detection.
fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=FOREWARN_LINK_CUDA");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let lib = std::path::Path::new(&lib);
    let cuda_loadable = lib.join("libtorch_cuda.so").exists()
        && ["cudnn", "nccl"]
            .iter()
            .all(|d| lib.join("../../nvidia").join(d).join("lib").is_dir());
    let link_cuda = match std::env::var("FOREWARN_LINK_CUDA").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => cuda_loadable,
    };
    if link_cuda {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
