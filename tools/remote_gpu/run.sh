#!/usr/bin/env bash
# One remote GPU run, one command: a profile of the deep net's training steps and its epoch benchmark,
# then one training fitted to the time left, on Training with selection on PublicTest (the payload
# holds no PrivateTest).
#
# Here, before the call (the working tree that travels is capped at 64 MiB):
#   python tools/remote_gpu/payload.py pack ../shared/fer2013/fer2013.csv.gz .gpu \
#       --ferplus ../shared/fer2013/fer2013new.csv
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d .whl hydra-core==1.3.8 omegaconf==2.3.1
#   python -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
#   mkdir -p /tmp/shipped && mv fer_lightning/pretrained/*.pt /tmp/shipped/   # back after the call
# The call: command `bash tools/remote_gpu/run.sh`, carry [".gpu", ".whl"], timeout 600 s.
# Env: DEADLINE (s after start when training stops, default 540), BENCHES (the deep-net epoch
# benchmark's variants), TRAIN (the run's overrides), NAME (its name), MIN_TRAIN (s that must be
# left to train at all, default 180), SMOKE=1 (a few CPU batches, to try this script here).
# Back in $OUT: steps.log, profile_deep.md and trace_deep.json.gz (20 profiled steps of the deep
# net), bench_deep.md, logs.tgz (metrics.csv, configs, logs) and the best
# checkpoint's weights as $NAME.pt.partNN (fp32, 15 MB parts: cat them back together).
set -u
start=$(date +%s)
DEADLINE=${DEADLINE:-540}
NAME=${NAME:-vgg_wide}
TRAIN=${TRAIN:-experiment=vgg_fer2013 model.net.widths=[64,128,256,512]}
# '|'-separated override sets for the deep-net epoch benchmark, one run each ('' = as configured)
BENCHES=${BENCHES-"|trainer.benchmark=true|trainer.benchmark=true model.compile_mode=reduce-overhead|\
trainer.benchmark=true data.batch_size=256"}
OUT=${OUT:-/tmp/remote_gpu_out}
WORK=/tmp/remote_gpu_work
rm -rf "$WORK" && mkdir -p "$WORK" "$OUT"
elapsed() { echo $(($(date +%s) - start)); }
log() { echo "[$(elapsed)s] $*" | tee -a "$OUT/steps.log"; }

if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', \
pl.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" |
  tee -a "$OUT/steps.log"
python3 tools/remote_gpu/payload.py unpack .gpu /tmp/fer || exit 1
CSV=/tmp/fer/fer2013.csv
COMMON=(data.cache_dir="$WORK/cache")
VOTES=()  # FER+ runs read the carried votes
case "$TRAIN" in *ferplus*) VOTES=(data.ferplus_csv=/tmp/fer/fer2013new.csv) ;; esac
if [ "${SMOKE:-0}" = 1 ]; then
  COMMON+=(trainer=default trainer.limit_train_batches=3 trainer.limit_val_batches=2)
  EPOCHS=(2 2)
  PROFILE=(--skip 1 --steps 2)
else
  COMMON+=(trainer=gpu)
  EPOCHS=(4 3)
  PROFILE=()
fi

log "deep-net step profile"
python3 benchmarks/profile_steps.py --csv "$CSV" "${PROFILE[@]}" --trace "$WORK/trace_deep.json" \
  -- "${COMMON[@]}" > "$OUT/profile_deep.md" 2> "$WORK/profile_deep.err"
gzip -c "$WORK/trace_deep.json" > "$OUT/trace_deep.json.gz"
head -12 "$OUT/profile_deep.md"

IFS='|' read -r -a VARIANTS <<< "$BENCHES"
: > "$OUT/bench_deep.md"
for index in "${!VARIANTS[@]}"; do
  read -r -a variant <<< "${VARIANTS[$index]}"
  log "deep-net epoch benchmark: ${variant[*]:-as configured}"
  python3 benchmarks/bench_epoch.py --csv "$CSV" --epochs "${EPOCHS[0]}" -- "${COMMON[@]}" \
    "${variant[@]}" >> "$OUT/bench_deep.md" 2> "$WORK/bench_deep_$index.err"
  echo >> "$OUT/bench_deep.md"
done
cat "$OUT/bench_deep.md"

# the training: its epoch time measured on a short run, then as many epochs as the time left allows
train_fitted() {
  log "calibration: $TRAIN"
  read -r -a RUN <<< "$TRAIN"
  experiment=$(printf '%s\n' "${RUN[@]}" | sed -n 's/^experiment=//p')
  python3 benchmarks/bench_epoch.py --csv "$CSV" --experiment "$experiment" --epochs "${EPOCHS[1]}" \
    -- "${COMMON[@]}" "${VOTES[@]}" $(printf '%s\n' "${RUN[@]}" | grep -v '^experiment=') \
    > "$WORK/calibration.md" 2> "$WORK/calibration.err"
  cat "$WORK/calibration.md" | tee -a "$OUT/steps.log"
  epoch_s=$(grep -o 'median of epochs[^|]*| \*\*[0-9.]*' "$WORK/calibration.md" | grep -o '[0-9.]*$')
  left=$((DEADLINE - $(elapsed) - 30))
  epochs=$(python3 -c "import sys; print(max(1, min(100, int($left / (float(sys.argv[1]) * 1.1)))))" \
    "${epoch_s:-1e9}")
  [ "${SMOKE:-0}" = 1 ] && epochs=2
  log "epoch ${epoch_s}s, ${left}s left: $epochs epochs"

  args=("${RUN[@]}" trainer.max_epochs="$epochs" "${COMMON[@]}" "${VOTES[@]}" data.csv_path="$CSV" test=false
    ~callbacks.step_checkpoint ~callbacks.last_checkpoint hydra.run.dir="$WORK/$NAME")
  remaining=$((DEADLINE - $(elapsed)))
  # `timeout 0` would mean no limit at all, and a negative one fails: the calibration can overrun
  if [ "$remaining" -lt 30 ]; then
    log "calibration left ${remaining}s: no training"
    return
  fi
  log "python train.py ${args[*]}"
  timeout "$remaining" python3 train.py "${args[@]}" > "$WORK/$NAME.log" 2>&1
  log "train.py exit status $?"

  python3 -m fer_lightning.pretrained "$WORK/$NAME/checkpoints/best.ckpt" "$NAME" --tta none \
    --out "$WORK" | tee -a "$OUT/steps.log"
  [ -f "$WORK/$NAME.pt" ] && split -b 15000000 -d "$WORK/$NAME.pt" "$OUT/$NAME.pt.part"
}
if [ $((DEADLINE - $(elapsed))) -ge "${MIN_TRAIN:-180}" ]; then
  train_fitted
else
  log "under ${MIN_TRAIN:-180}s left: no training"
fi
(cd "$WORK" && tar czf "$OUT/logs.tgz" --exclude='*.ckpt' --exclude='*.pt' --exclude=cache .)
log "done"
