// Shared by every package whose binaries or tests link libtorch (included from
// their build.rs). cargo:rustc-link-arg applies only to the package that emits
// it, so each such package repeats it.
//
// - rpath to libtorch, so no LD_LIBRARY_PATH is needed at run time;
//   FOREWARN_TORCH_RPATH replaces this machine's libtorch folder with another
//   machine's (scripts/gpu-bundle.sh: the lent GPU image's torch/lib);
// - libtorch_cuda linked with --no-as-needed when it can actually load:
//   nothing references it directly, so without this the linker drops it and a
//   GPU machine silently runs on CPU. The CPU install (torch wheel with
//   --no-deps) ships libtorch_cuda.so without cuBLAS/cuDNN/NCCL, so forcing
//   it there would make every binary fail at start; we link it only when the
//   CUDA libraries it needs are installed beside it (the full torch wheel).
//   FOREWARN_LINK_CUDA=0/1 overrides the detection.
// - FOREWARN_LINK_CUDA=1 without those libraries (the GPU bundle, built on a
//   CPU machine for a machine that has them): ld by default refuses an
//   executable whose shared libraries leave symbols undefined, and
//   libtorch_cuda's cuDNN/cuBLAS/NCCL symbols are undefined here.
//   --allow-shlib-undefined defers them to the loader on the machine that
//   runs it; the binary's own symbols are still all checked.
fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=FOREWARN_LINK_CUDA");
    println!("cargo:rerun-if-env-changed=FOREWARN_TORCH_RPATH");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    let rpath = std::env::var("FOREWARN_TORCH_RPATH").unwrap_or_else(|_| lib.clone());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{rpath}");
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
        if !cuda_loadable {
            println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
        }
    }
}
