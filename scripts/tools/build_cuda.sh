#!/usr/bin/env bash
# Builds `moodmirror` and the GStreamer plugin with the `cuda` feature on a machine without a CUDA toolkit, from NVIDIA's
# Python wheels (CUDA 13.0: nvcc, cicc, headers, cuBLAS, cuRAND, NVRTC, the runtime). The driver
# library is only needed at run time, so the link uses a stub with the symbols cudarc declares.
# The binary needs the CUDA 13 libraries (LD_LIBRARY_PATH) and an NVIDIA driver where it runs.
#
# usage: scripts/tools/build_cuda.sh [TOOLKIT_DIR] [TARGET_DIR]   (defaults: ~/.cache/moodmirror-cuda13, target-cuda)
set -euo pipefail
cd "$(dirname "$0")/../.."
top=${1:-$HOME/.cache/moodmirror-cuda13}
target=${2:-target-cuda}
cuda=$top/nvidia/cu13
if [ ! -x "$cuda/bin/nvcc" ]; then
  mkdir -p "$top/wheels"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$top/wheels" \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*" \
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-nvrtc==13.0.*" "nvidia-cublas==13.0.*" "nvidia-curand==10.4.*"
  for w in "$top"/wheels/*.whl; do (cd "$top" && python3 -m zipfile -e "$w" .); done
  chmod +x "$cuda"/bin/* "$cuda"/nvvm/bin/*
fi
lib=$cuda/lib
for l in cublas cublasLt nvrtc cudart; do ln -sf "lib$l.so.13" "$lib/lib$l.so"; done
ln -sf libcurand.so.10 "$lib/libcurand.so"
# Link-time stand-in for the driver (libcuda.so.1 comes with the NVIDIA driver at run time).
version=$(grep -A1 '^name = "cudarc"' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
cargo fetch --locked
cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$version" | head -1)
grep -ohE "fn (cu[A-Z][A-Za-z0-9_]+)" "$cudarc"/src/driver/sys/mod.rs | awk '{print "void "$2"(void){}"}' | sort -u > "$top/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$lib/libcuda.so" "$top/cuda_stub.c"
export CUDA_HOME=$cuda CUDA_PATH=$cuda PATH=$cuda/bin:$PATH LIBRARY_PATH=$lib
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# The binary and the plugin, one build (the core and candle are compiled once, with CUDA).
cargo build --release --locked -p moodmirror-cli -p gst-plugin-moodmirror \
  --features moodmirror-cli/cuda,gst-plugin-moodmirror/cuda --target-dir "$target"
echo "built $target/release/moodmirror and $target/release/libgstmoodmirror.so (compute capability $CUDA_COMPUTE_CAP)"
