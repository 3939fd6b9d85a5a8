#!/usr/bin/env bash
# The GPU measurements (eval_speed, classify_speed, train_speed and one short sweep run) for an offline GPU
# machine: one that reaches no hub and no package index. Everything they need travels with the repository in
# .kit/ (about 30 MB, git ignores it): the data, a tokenizer, and the wheels its Python lacks.
#
#   DATA_ROOT=/path/to/local/copies bash bench/gpu.sh pack   # once, with internet access: fills .kit/
#   bash bench/gpu.sh inference    # on the GPU machine, from a copy of the repository with .kit/: eval_speed, then
#                                  # classify_speed
#   bash bench/gpu.sh training     # on the GPU machine: train_speed, then one short sweep run of each head, timed
#   SMOKE=1 bash bench/gpu.sh inference    # the same steps, tiny and on the CPU: checks the kit on any machine
#
# DATA_ROOT is a folder with local copies of the data and a tokenizer, in the layout the benchmarks read:
#   data/mmlu/test/<subject>_test.csv               MMLU's original CSV files
#   data/20newsgroups/train.jsonl, test.jsonl        20 Newsgroups, `text` and `label_text` per line
#   data/ag_news/test.csv, classes.txt               AG News' original files
#   tokenizers/modernbert-standin/                   a ModernBERT tokenizer folder (ModernBERT-Large-Instruct's,
#                                                    saved with save_pretrained, or a stand-in of its size)
# The wheels are transformers and datasets at the versions the tests run on (the GPU machine's Python may have an
# older transformers and no datasets), downloaded for Python $PYTHON_VERSION (default 3.12): pack for the GPU
# machine's. Logs go to $OUT (default: a new temporary folder), each written as it grows, and each step has a time
# limit (a part takes under 10 minutes), so a step stopped at its limit still leaves its figures.
set -euo pipefail
for name in DATA_ROOT OUT; do  # paths given relative to where the script was started
    if [[ -n "${!name:-}" ]]; then printf -v "$name" %s "$(realpath -m "${!name}")"; fi
done
cd "$(dirname "$0")/.."

KIT=.kit
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
WHEELS=(transformers==5.23.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19)  # datasets needs dill, multiprocess
DATA_FILES=(data/mmlu/test data/20newsgroups/train.jsonl data/20newsgroups/test.jsonl data/ag_news
            tokenizers/modernbert-standin)

pack() {
    : "${DATA_ROOT:?set DATA_ROOT to a folder with local copies of the data and a tokenizer (see the top of $0)}"
    local missing=() path
    for path in "${DATA_FILES[@]}"; do [[ -e "$DATA_ROOT/$path" ]] || missing+=("$path"); done
    if (( ${#missing[@]} )); then echo "error: DATA_ROOT $DATA_ROOT has no ${missing[*]}"; exit 1; fi
    rm -rf "$KIT" && mkdir -p "$KIT/whl"
    tar czf "$KIT/data.tar.gz" -C "$DATA_ROOT" "${DATA_FILES[@]}"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$KIT/whl" "${WHEELS[@]}"
    echo "$PYTHON_VERSION" > "$KIT/python_version"
    du -sh "$KIT"
}

setup() {
    OUT=${OUT:-$(mktemp -d)}
    mkdir -p "$OUT"
    echo "logs in $OUT"
    [[ -f "$KIT/data.tar.gz" ]] || { echo "error: $KIT/data.tar.gz is missing: run 'bash bench/gpu.sh pack' with" \
        "internet access, and bring $KIT/ along with the repository"; exit 1; }
    local wanted
    wanted=$(cat "$KIT/python_version")
    python3 -c "import sys; sys.exit(f'{sys.version_info[0]}.{sys.version_info[1]}' != '$wanted')" || {
        echo "error: the kit's wheels were downloaded for Python $wanted, and python3 here is" \
            "$(python3 -c 'import platform; print(platform.python_version())'); put a Python $wanted with torch first" \
            "on PATH, or pack again with PYTHON_VERSION set to this one's"; exit 1; }
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT  # the unpacked kit; the logs stay in $OUT
    tar xzf "$KIT/data.tar.gz" -C "$WORK"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
        "$KIT"/whl/*.whl
    export PYTHONPATH="$WORK/site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    DATA=$WORK/data
    TOKENIZER=$WORK/tokenizers/modernbert-standin
    environment 2>&1 | tee "$OUT/environment.txt"
}

environment() {  # what the figures were taken on, and which faster attention paths are available
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
    python3 - <<'PY'
import importlib.util, inspect, os, torch, transformers
print(f"torch {torch.__version__}, transformers {transformers.__version__}, {os.cpu_count()} CPUs")
print("flash_attn importable:", importlib.util.find_spec("flash_attn") is not None)
try:
    from torch.nn.attention.varlen import varlen_attn
    print("torch varlen_attn:", "window_size" in inspect.signature(varlen_attn).parameters and "with" or "without",
          "window_size")
except ImportError:
    print("torch varlen_attn: absent")
PY
}

step() {  # step NAME SECONDS COMMAND...: one measurement, its log $OUT/NAME.log kept even if it runs out of time
    local name=$1 limit=$2 start=$SECONDS status=0
    shift 2
    echo "== $name: $*" | tee "$OUT/$name.log"
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log" || status=$?
    echo "== $name: exit status $status after $((SECONDS - start)) s" | tee -a "$OUT/$name.log"
}

inference() {
    setup
    local eval_flags=() classify_flags=()
    if [[ -n "${SMOKE:-}" ]]; then
        eval_flags=(--device cpu --shape tiny --limit 300 --baseline_sample 50)
        classify_flags=(--device cpu --tiny --texts 100 --baseline_texts 10)
    fi
    # All 14,042 MMLU questions; the published loop timed on 1,000 of them (about 30 s at 32-50 questions/s).
    step eval_speed 240 python3 bench/eval_speed.py --data_dir "$DATA/mmlu" --tokenizer "$TOKENIZER" "${eval_flags[@]}"
    step classify_speed 300 python3 bench/classify_speed.py --data_dir "$DATA" --tokenizer "$TOKENIZER" \
        "${classify_flags[@]}"
}

training() {
    setup
    local train_flags=() shape=large sweep_flags=(--max_train_samples 2000 --max_eval_samples 1000)
    if [[ -n "${SMOKE:-}" ]]; then
        train_flags=(--device cpu --tiny --rows 200)
        shape=tiny
        sweep_flags=(--max_train_samples 40 --max_eval_samples 20 --max_length 512)
    fi
    step train_speed 240 python3 bench/train_speed.py --data_dir "$DATA" --tokenizer "$TOKENIZER" "${train_flags[@]}"
    # One run of each head, 1 epoch, on the 20 Newsgroups shape (texts up to 4,096 tokens), from a ModernBERT-Large
    # shaped folder with random weights; the log ends with each run's minutes and training seconds (its metrics.json).
    python3 bench/random_model.py --shape "$shape" --tokenizer "$TOKENIZER" --output_dir "$WORK/model"
    step sweep 330 python3 sweep_20newsgroups.py --model "$WORK/model" --cls_model "$WORK/model" \
        --data_dir "$DATA/20newsgroups" --output_dir "$WORK/sweep" --learning_rates 3e-5 --cls_learning_rates 5e-5 \
        --epochs 1 --logging_steps 1000 "${sweep_flags[@]}"
    python3 - "$WORK/sweep" <<'PY' 2>&1 | tee -a "$OUT/sweep.log"
import glob, json, sys
for path in sorted(glob.glob(f"{sys.argv[1]}/*/metrics.json")):
    m = json.load(open(path))
    print(f"{m['name']}: {m['minutes']:.2f} min in all, training {m['train_runtime']:.0f} s "
          f"({m['global_step']} steps of {m['effective_batch_size']} examples)")
PY
}

case "${1:-}" in
    pack | inference | training) "$1" ;;
    *) echo "usage: [DATA_ROOT=DIR] bash bench/gpu.sh pack | inference | training" >&2; exit 1 ;;
esac
