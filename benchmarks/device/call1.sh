#!/bin/bash
# Device call 1 (carry .gpu/a): wheels to /tmp/site, first part of the GGUF kept in /tmp/stage,
# then the GPU rows that need no bundled model.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TUNEWISE_CACHE=/tmp/twcache HF_HOME=/tmp/hf PYTHONPATH=/tmp/site:$PWD/src
t() { echo "== $(date +%T) $*"; }
mkdir -p /tmp/stage && cp .gpu/a/gguf.part1 /tmp/stage/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/a/*.whl || exit 3
python3 -c "import torch, tunewise.train.loop, trl, datasets; print(torch.__version__, torch.cuda.get_device_name())" || exit 4
t matmul; timeout 60 python3 benchmarks/matmul_peak.py > $OUT/matmul_peak.txt 2>&1; cat $OUT/matmul_peak.txt
t attention; timeout 60 python3 benchmarks/attention_paths.py > $OUT/attention.txt 2>&1; cat $OUT/attention.txt
t memory; timeout 330 python3 benchmarks/calibrate_memory.py --gpu > $OUT/calibrate_gpu.txt 2>$OUT/calibrate_gpu.err
cat $OUT/calibrate_gpu.txt; t done
