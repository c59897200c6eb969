#!/bin/bash
# Stage issue 14's one device call (benchmarks/device/issue14.sh) in the ignored folder .gpu14/:
#   whl/base  packages both stacks use, one version each (the device has torch 2.11, triton, accelerate,
#             numpy, pandas, pyarrow, ... but not these)
#   whl/tw    tunewise's versions (the ones its CPU tests run on): transformers, TRL, datasets
#   whl/u     Unsloth's: it pins transformers <= 5.17.0 (the device's own, so none is carried), TRL <= 1.15.0
#             and datasets < 5, so (d) runs in its own process on its own PYTHONPATH
#   tokenizer the SmolLM2 tokenizer files (3.5 MB), instead of the 94 MiB GGUF: the random 1B model and the
#             tests need only the tokenizer, so one call carries everything (64 MiB at most)
# Wheels are for the device's python3 (CPython 3.12, x86-64); nothing here is installed on this machine.
set -euo pipefail  # PY=path/to/python to use another interpreter than .venv's
cd "$(git rev-parse --show-toplevel)"
S=.gpu14
rm -rf $S && mkdir -p $S/whl/base $S/whl/tw $S/whl/u $S/tokenizer $S/tmp
get() {  # get DIR NAME==VERSION...: binary wheels for CPython 3.12 on manylinux x86-64, no dependencies
  local dir=$1; shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dir" "$@" > $S/pip.log 2>&1 || { cat $S/pip.log; exit 1; }
}
get $S/whl/base peft==0.21.2 pydantic==2.14.4 pydantic_core==2.50.5 typing-inspection==0.4.5 \
  annotated-types==0.8.0 typing_extensions==4.16.0 gguf==0.19.0 dill==0.4.0 multiprocess==0.70.18 \
  liger-kernel==0.8.5 tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 cut_cross_entropy==25.1.1 msgspec==0.23.0
get $S/whl/tw transformers==5.24.0 trl==1.16.0 datasets==5.2.0
get $S/whl/u trl==1.15.0 datasets==4.8.5 unsloth_zoo==2026.10.9 torchao==0.18.0  # torchao: unsloth_zoo requires it
get $S/tmp bitsandbytes==0.50.2 unsloth==2026.10.9

# repack(WHEEL, DEST, PATTERN): the wheel without the files matching PATTERN (and their RECORD lines)
repack() {
  local whl=$1 dest=$2 pattern=$3 dir
  dir=$(mktemp -d) && (cd "$dir" && unzip -q "$OLDPWD/$whl")
  (cd "$dir" && find . -type f -print0 | grep -zE "$pattern" | xargs -0 rm -f && find . -type d -empty -delete &&
   R=$(ls -d *.dist-info)/RECORD && grep -v -E "$pattern" "$R" > "$R.new" && mv "$R.new" "$R" &&
   zip -q -r "$OLDPWD/$dest/$(basename "$whl")" .)
  rm -rf "$dir"
}
# bitsandbytes ships a library per CUDA/ROCm version (43 MB): keep CUDA 13 (the device's) and the CPU one
repack "$(ls $S/tmp/bitsandbytes-*.whl)" $S/whl/base "libbitsandbytes_(cuda1[12]|rocm|xpu)"
# Unsloth's wheel is 28.6 MB, 26 MB of it the Studio web app (studio/) that training never imports
repack "$(ls $S/tmp/unsloth-*.whl)" $S/whl/u "^(\./)?studio/"
rm -rf $S/tmp $S/pip.log

T=$(PYTHONPATH=$PWD/src ${PY:-.venv/bin/python} -c \
  "from tunewise.model.load import resolve_model; print(resolve_model('smollm2-135m-instruct'))")
cp "$T"/tokenizer.json "$T"/tokenizer_config.json "$T"/chat_template.jinja $S/tokenizer/
du -shc $S/whl/base $S/whl/tw $S/whl/u $S/tokenizer  # the call carries all of it: 64 MiB at most
ls $S/whl/*/
