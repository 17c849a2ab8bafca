#!/usr/bin/env bash
# Build llama.cpp (CPU, Release, this CPU's instruction sets) from the llama-cpp-python source distribution, for
# bench/engines.py: its llama-batched-bench times a GGUF file, its convert_hf_to_gguf.py converts our HF export.
# Never run in CI (about 10 minutes on 2 cores).
#
#   bash bench/build_llama_cpp.sh [DIR] [VERSION]     # DIR defaults to ../llamacpp, VERSION to 0.3.36
#
# Prints the llama.cpp directory to pass as `bench/engines.py --llama-cpp`.
set -euo pipefail
dir=$(realpath -m "${1:-../llamacpp}")
version=${2:-0.3.36}
src="$dir/llama_cpp_python-$version/vendor/llama.cpp"
mkdir -p "$dir"
if [ ! -d "$src" ]; then
  python3 -m pip download "llama-cpp-python==$version" --no-binary :all: --no-deps -d "$dir" >&2
  tar xzf "$dir/llama_cpp_python-$version.tar.gz" -C "$dir"
fi
cmake -S "$src" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build "$src/build" -j "$(nproc)" --target llama-batched-bench llama-quantize llama-completion >&2
echo "$src"
